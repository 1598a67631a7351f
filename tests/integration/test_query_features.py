"""SearchRuns filters, CompareRuns, downsampled history, FollowRun, listings, auth, deadlines.

Real embedded ClickHouse, in-process gRPC server, real Client; rows are inserted straight
into the consumer's tables (see test_query_service.py).
"""

# ruff: noqa: F811 - pytest fixtures imported from test_query_service are parameters here
from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from runstream.proto import tables
from runstream.proto.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
)
from runstream.query.client import Client
from runstream.query.models import PointsUpdate, StatusUpdate
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService
from tests.integration.test_query_service import (  # noqa: F401 - fixtures
    T0,
    ch,
    client,
    insert,
    server,
    set_status,
    start_rank,
)


def seed_runs(ch: Any, n: int = 12) -> None:
    """Runs r00..r(n-1): lr = 0.001*(i+1), batch 32/64, val_acc = i/n, loss series."""
    for i in range(n):
        run_id = f"r{i:02d}"
        start_rank(ch, run_id, 0, 1, T0 + i * 1000, experiment="exp" if i < 10 else "other",
                   name=f"run{i}")
        if i % 3 == 0:
            set_status(ch, run_id, 0, "FINISHED", T0 + i * 1000 + 500, seq=9)
        insert(ch, tables.PARAMS, [
            {"run_id": run_id, "key": "lr", "value": str(0.001 * (i + 1)), "type": "FLOAT",
             "rank": 0, "producer_id": "p0", "seq": 2, "ts_ms": T0},
            {"run_id": run_id, "key": "batch", "value": "32" if i % 2 else "64",
             "type": "INT", "rank": 0, "producer_id": "p0", "seq": 2, "ts_ms": T0},
        ])
        insert(ch, tables.TAGS, [{"run_id": run_id, "key": "model",
                                   "value": "bert-base" if i % 2 else "gpt2", "rank": 0,
                                   "producer_id": "p0", "seq": 3, "ts_ms": T0}])
        insert(ch, tables.INPUTS, [{"run_id": run_id, "name": "train", "uri": "s3://d/train",
                                     "digest": f"sha{i % 2}", "role": "train", "rank": 0,
                                     "producer_id": "p0", "seq": 4, "ts_ms": T0}])
        rows = [{"run_id": run_id, "key": "val_acc", "rank": 0, "step": s,
                 "value": i / n * s / 10, "ts_ms": T0 + s, "producer_id": "p0", "seq": 5,
                 "idx": s} for s in range(11)]
        rows += [{"run_id": run_id, "key": "loss", "rank": 0, "step": s,
                  "value": 10.0 - s + i, "ts_ms": T0 + s, "producer_id": "p0", "seq": 6,
                  "idx": s} for s in range(11)]
        insert(ch, tables.METRICS, rows)


def ids(runs: list[Any]) -> list[str]:
    return [r.run_id for r in runs]


def test_search_filters_mlflow_grammar(ch: Any, client: Client) -> None:
    seed_runs(ch)

    def search(f: str, **kw: Any) -> list[str]:
        return ids(client.search_runs(filter=f, page_size=100, **kw)[0])

    assert search("params.lr = '0.002'") == ["r01"]
    assert sorted(search("params.lr > 0.0095")) == ["r09", "r10", "r11"]  # numeric, not text
    assert sorted(search("metrics.val_acc >= 0.75 and tags.model LIKE 'bert%'")) == [
        "r09", "r11"]
    assert sorted(search("attributes.status = 'FINISHED' and params.batch IN (64)")) == [
        "r00", "r06"]
    assert sorted(search("min(metrics.loss) < 1")) == ["r00"]
    assert sorted(search("max(metrics.loss) >= 21")) == ["r11"]
    assert sorted(search("datasets.digest = 'sha1' AND metrics.val_acc > 0.7")) == [
        "r09", "r11"]
    assert search("tags.model ILIKE 'GPT%' and attributes.run_name = 'run4'") == ["r04"]
    assert search("params.lr = '0.002'", experiment="other") == []
    assert search("", experiments=["other"]) == ["r11", "r10"]
    assert search("tags.missing = 'x'") == []


def test_search_order_by_and_stable_pages(ch: Any, client: Client) -> None:
    seed_runs(ch)
    for order in (["metrics.val_acc DESC"], ["params.batch", "metrics.loss"],
                  ["tags.model DESC", "attributes.start_time"], ["min(metrics.loss) ASC"]):
        whole = ids(client.search_runs(page_size=100, order_by=order)[0])
        paged: list[str] = []
        token = ""
        while True:
            runs, token = client.search_runs(page_size=5, page_token=token, order_by=order)
            paged += ids(runs)
            if not token:
                break
        assert paged == whole and len(whole) == 12, order
    assert ids(client.search_runs(order_by=["metrics.val_acc DESC"])[0])[:2] == ["r11", "r10"]
    # Runs without the field sort last either way.
    start_rank(ch, "zz", 0, 1, T0 + 99_000)
    assert ids(client.search_runs(order_by=["metrics.val_acc DESC"])[0])[-1] == "zz"
    assert ids(client.search_runs(order_by=["metrics.val_acc ASC"])[0])[-1] == "zz"


@pytest.mark.parametrize(("text", "position"), [
    ("metrics.acc > 'high'", 14),
    ("params.lr = '0.1' OR params.lr = '0.2'", 18),
    ("foo.bar = 1", 0),
    ("metrics.acc > 1; DROP TABLE runs", 15),
    ("attributes.colour = 'red'", 11),
    ("metrics.acc >", 13),
])
def test_bad_filters_name_the_position(ch: Any, client: Client, text: str, position: int) -> None:
    with pytest.raises(InvalidArgumentError, match=f"at position {position}"):
        client.search_runs(filter=text)


def test_token_of_another_filter_or_order_is_rejected(ch: Any, client: Client) -> None:
    seed_runs(ch)
    _, token = client.search_runs(page_size=2, filter="metrics.val_acc > 0")
    with pytest.raises(InvalidArgumentError):
        client.search_runs(page_size=2, filter="metrics.val_acc > 0.1", page_token=token)
    with pytest.raises(InvalidArgumentError):
        client.search_runs(page_size=2, filter="metrics.val_acc > 0", page_token=token,
                           order_by=["metrics.loss"])


def test_compare_runs_puts_differences_first(ch: Any, client: Client) -> None:
    seed_runs(ch, 3)
    insert(ch, tables.RUNS, [{
        "run_id": "r01", "rank": 0, "experiment": "exp", "name": "run1", "world_size": 1,
        "git_commit": "def", "in_git_repo": True, "git_dirty": True, "git_diff_sha256": "d1",
        "packages": {"torch": "2.4.0", "numpy": "2.0"}, "gpus": ["H100", "H100"],
        "gpu_memory_bytes": [80 << 30, 80 << 30], "cuda_version": "12.4",
        "producer_id": "p0", "seq": 1, "ts_ms": T0 + 1000 + 1}])
    insert(ch, tables.RUNS, [{
        "run_id": "r00", "rank": 0, "experiment": "exp", "name": "run0", "world_size": 1,
        "git_commit": "abc", "in_git_repo": True, "packages": {"torch": "2.3.1", "numpy": "2.0"},
        "gpus": ["A100"], "gpu_memory_bytes": [40 << 30], "cuda_version": "12.1",
        "producer_id": "p0", "seq": 1, "ts_ms": T0 + 1}])
    c = client.compare_runs(["r00", "r01"], goals={"val_acc": "maximize"})
    assert [r.run_id for r in c.runs] == ["r00", "r01"]
    differing = [(f.section, f.key) for f in c.fields if f.differs]
    assert differing[0] == ("param", "batch") and ("param", "lr") in differing
    assert ("code", "git_commit") in differing and ("input", "train:train") in differing
    assert ("package", "torch") in differing and ("package", "numpy") not in differing
    assert ("hardware", "gpus") in differing and ("hardware", "cuda_version") in differing
    first_same = next(i for i, f in enumerate(c.fields) if not f.differs)
    assert all(f.differs for f in c.fields[:first_same])
    loss = next(m for m in c.metrics if m.key == "loss")
    assert loss.goal == "minimize" and loss.best_run == 0
    assert loss.stats[0].best == 0.0 and loss.stats[0].best_step == 10
    acc = next(m for m in c.metrics if m.key == "val_acc")
    assert acc.goal == "maximize" and acc.best_run == 1 and acc.stats[1].best_step == 10
    assert client.get_run("r01").env.packages[1].version == "2.4.0"
    assert client.get_run("r01").env.gpus[0].memory_bytes == 80 << 30
    with pytest.raises(NotFoundError, match="nope"):
        client.compare_runs(["r00", "nope"])
    with pytest.raises(InvalidArgumentError):
        client.compare_runs(["r00"])


def test_downsampled_history_keeps_spikes_and_aggregates_ranks(ch: Any, client: Client) -> None:
    start_rank(ch, "big", 0, 2, T0)
    n = 20_000
    for rank in (0, 1):
        insert(ch, tables.METRICS, [
            {"run_id": "big", "key": "loss", "rank": rank, "step": s,
             "value": (1000.0 if (rank == 1 and s == 12_345) else 1.0 + rank),
             "ts_ms": T0 + s, "producer_id": f"p{rank}", "seq": 7, "idx": s}
            for s in range(n)])
    h = client.metric_history("big", "loss", max_points=100)
    assert h.downsampled and h.total_points == 2 * n
    assert len(h) == 200 and sorted(set(h.ranks)) == [0, 1]
    assert max(h.max_values) == 1000.0 and sum(h.bucket_counts) == 2 * n
    assert 1000.0 in h.values  # LTTB picks the spike's side in its bucket
    mean = client.metric_history("big", "loss", max_points=50, aggregate="mean")
    assert mean.ranks == [] and len(mean) == 50 and max(mean.max_values) == 500.5
    assert min(mean.min_values) == 1.5
    full_mean = client.metric_history("big", "loss", aggregate="max", page_size=7_000)
    assert full_mean.steps == list(range(n)) and full_mean.values[12_345] == 1000.0
    small = client.metric_history("big", "loss", ranks=[0], max_points=10_000)
    assert len(small) == n // 2 or len(small) <= 10_000
    with pytest.raises(InvalidArgumentError):
        client.metric_history("big", "loss", max_points=1)
    with pytest.raises(NotFoundError):
        client.metric_history("ghost", "loss", max_points=10)


def test_follow_backfills_then_streams_live_until_the_run_ends(ch: Any, client: Client) -> None:
    start_rank(ch, "live", 0, 1, T0)
    insert(ch, tables.METRICS, [
        {"run_id": "live", "key": "loss", "rank": 0, "step": s, "value": float(s),
         "ts_ms": T0 + s, "producer_id": "p0", "seq": 2, "idx": s} for s in range(5)])
    steps: list[int] = []
    statuses: list[str] = []
    went_live = threading.Event()

    def consume() -> None:
        for update in client.follow("live", ["loss"], from_step=2, timeout_s=60):
            if isinstance(update, StatusUpdate):
                statuses.append(update.status)
            elif isinstance(update, PointsUpdate):
                steps.extend(update.steps)
                if update.live and not update.steps:
                    went_live.set()

    reader = threading.Thread(target=consume, name="test-follow")
    reader.start()
    assert went_live.wait(30)
    insert(ch, tables.METRICS, [
        {"run_id": "live", "key": "loss", "rank": 0, "step": s, "value": float(s),
         "ts_ms": T0 + s, "producer_id": "p0", "seq": 3, "idx": s - 5} for s in range(5, 8)])
    set_status(ch, "live", 0, "FINISHED", T0 + 100, seq=4)
    reader.join(30)
    assert not reader.is_alive()
    assert steps == [2, 3, 4, 5, 6, 7]
    assert statuses == ["RUNNING", "FINISHED"]


def test_follow_stops_when_the_client_cancels(ch: Any, client: Client) -> None:
    start_rank(ch, "forever", 0, 1, T0)
    stop_event = threading.Event()
    seen = []
    for update in client.follow("forever", from_step=-1, stop=stop_event, timeout_s=60):
        seen.append(update)
        if isinstance(update, PointsUpdate) and update.live:
            stop_event.set()
    assert seen and isinstance(seen[0], StatusUpdate)


def test_listings_and_ingest_status_without_its_table(ch: Any, client: Client) -> None:
    seed_runs(ch, 12)
    exps = {e.experiment: e.run_count for e in client.list_experiments()}
    assert exps == {"exp": 10, "other": 2}
    assert [m.key for m in client.list_metric_keys("r03")] == ["loss", "val_acc"]
    with pytest.raises(NotFoundError):
        client.list_metric_keys("ghost")
    ch.command("DROP TABLE IF EXISTS ingest_progress")
    assert client.ingest_status() == []


def test_ingest_status_reads_the_latest_row_per_partition(ch: Any, client: Client) -> None:
    ch.command(
        "CREATE TABLE IF NOT EXISTS ingest_progress (consumer_id String, source String,"
        " topic String,"
        " partition Int32, committed_offset Int64, end_offset Int64, lag Int64,"
        " points_total UInt64, points_per_s Float64, batch_latency_ms Float64, ts_ms Int64)"
        " ENGINE = ReplacingMergeTree(ts_ms) ORDER BY (consumer_id, source, topic, partition)")
    import time
    now = int(time.time() * 1000)
    cols = ["consumer_id", "source", "topic", "partition", "committed_offset", "end_offset",
            "lag", "points_total", "points_per_s", "batch_latency_ms", "ts_ms"]
    ch.insert("ingest_progress", [
        ["c1", "kafka", "t", 0, 10, 20, 10, 100, 5.0, 3.0, now - 5000],
        ["c1", "kafka", "t", 0, 15, 20, 5, 150, 6.0, 2.0, now - 100],
        ["c2", "spool", "", 0, 1, 1, 0, 7, 0.0, 1.0, now - 600_000],  # stale
    ], column_names=cols)
    (p,) = client.ingest_status()
    assert (p.consumer_id, p.committed_offset, p.lag, p.points_total) == ("c1", 15, 5, 150)


def test_token_auth_guards_every_rpc_but_health(ch: Any, chdb_dsn: str, ch_database: str) -> None:
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    grpc_server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4,
                                     token="s3cret")
    grpc_server.start()
    try:
        target = f"127.0.0.1:{port}"
        with Client(target, token="") as anonymous, Client(target, token="wrong") as wrong:
            assert anonymous.healthy()
            for c in (anonymous, wrong):
                with pytest.raises(UnauthenticatedError):
                    c.search_runs()
                with pytest.raises(UnauthenticatedError):
                    c.list_experiments()
                with pytest.raises(UnauthenticatedError):
                    list(c.follow("x", timeout_s=10))
        with Client(target, token="s3cret") as good:
            assert good.search_runs()[0] == []
    finally:
        stop(grpc_server, 1.0)
        repository.close()


def test_deadlines_are_honoured(ch: Any, server: tuple[grpc.Server, int]) -> None:
    seed_runs(ch, 3)
    from runstream.proto.errors import DeadlineExceededError

    with Client(f"127.0.0.1:{server[1]}", timeout_s=0.001) as hurried, \
            pytest.raises(DeadlineExceededError):
        hurried.search_runs(filter="metrics.val_acc > 0")


def test_bucket_extremes_take_the_lowest_step_among_ties(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    # (step, value): in each 5-step bucket the min and the max are tied; -0.0 ties 0.0.
    series = [(-5, 2.0), (-4, -1.0), (-3, 5.0), (-2, -1.0), (-1, 5.0),
              (0, 0.0), (1, -0.0), (2, 3.0), (3, float("-inf")), (4, float("-inf")),
              (5, 7.0), (6, 0.0), (7, 7.0), (8, float("nan")), (9, -0.0)]
    insert(ch, tables.METRICS, [
        {"run_id": "ties", "key": "loss", "rank": 0, "step": s, "value": v, "ts_ms": T0 + i,
         "producer_id": "p", "seq": 1, "idx": i} for i, (s, v) in enumerate(series)])
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        assert repository.series_range("ties", "loss", (), "") == (-5, 9, 14)
        got = repository.buckets("ties", "loss", (), "", -5, 5)
    finally:
        repository.close()
    ts = {s: T0 + i for i, (s, _) in enumerate(series)}
    assert [(b.bucket, b.count) for b in got] == [(0, 5), (1, 5), (2, 4)]
    assert [(b.at_min[0], b.at_max[0]) for b in got] == [(-4, -3), (3, 2), (6, 5)]
    assert [b.at_min[2] for b in got] == [ts[-4], ts[3], ts[6]]
    assert [(b.first[0], b.last[0]) for b in got] == [(-5, -1), (0, 4), (5, 9)]
    assert [(b.min_value, b.max_value) for b in got] == [(-1.0, 5.0), (float("-inf"), 3.0),
                                                         (0.0, 7.0)]
