"""The query service end to end: real embedded ClickHouse, in-process gRPC server, real Client.

Rows are inserted straight into the consumer's tables (column names from
runstream.proto.tables), with replayed duplicates in separate inserts, so these
tests pin down what the service reads, independent of the consumer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import clickhouse_connect
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.client import Client
from runstream.query.config import SERVICE_NAME
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService

T0 = 1_700_000_000_000
DEFAULTS: dict[str, Any] = {
    "String": "", "LowCardinality(String)": "", "UInt32": 0, "UInt64": 0, "Int64": 0,
    "Bool": False, "Float64": 0.0,
}


def zero(ctype: str) -> Any:
    if ctype.startswith("Map("):
        return {}
    if ctype.startswith("Array("):
        return []
    return DEFAULTS[ctype]


def insert(ch: Any, table: tables.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows given as dicts; missing columns get their type's zero value."""
    types = {name: ctype.split(" CODEC")[0] for name, ctype in table.columns}
    data = [[row.get(c, zero(types[c])) for c in table.column_names] for row in rows]
    ch.insert(table.name, data, column_names=list(table.column_names))


@pytest.fixture
def ch(chdb_dsn: str, ch_database: str) -> Iterator[Any]:
    bootstrap = clickhouse_connect.get_client(dsn=chdb_dsn)
    for statement in tables.all_ddl(ch_database):
        bootstrap.command(statement)
    bootstrap.close()
    client = clickhouse_connect.get_client(dsn=chdb_dsn, database=ch_database)
    yield client
    client.close()


@pytest.fixture
def server(ch: Any, chdb_dsn: str, ch_database: str) -> Iterator[tuple[grpc.Server, int]]:
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    grpc_server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4)
    grpc_server.start()
    yield grpc_server, port
    stop(grpc_server, 1.0)
    repository.close()


@pytest.fixture
def client(server: tuple[grpc.Server, int]) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server[1]}", timeout_s=60) as c:
        yield c


def start_rank(ch: Any, run_id: str, rank: int, world_size: int, ts_ms: int, *,
               experiment: str = "exp", name: str = "", producer: str = "p") -> None:
    """What the consumer writes for a RunStarted: a runs row and a RUNNING status row."""
    insert(ch, tables.RUNS, [{
        "run_id": run_id, "rank": rank, "experiment": experiment, "name": name,
        "world_size": world_size, "local_rank": rank % 8, "node": f"node{rank // 8}",
        "git_commit": f"abc{rank}", "git_branch": "main", "git_remote": "git@x:y.git",
        "git_dirty": True, "in_git_repo": True, "python_version": "3.11.9", "os": "Linux",
        "command": f"train.py --rank {rank}", "cpu_count": 16,
        "producer_id": f"{producer}{rank}", "seq": 1, "ts_ms": ts_ms,
    }])
    set_status(ch, run_id, rank, "RUNNING", ts_ms, seq=1, experiment=experiment,
               producer=producer)


def set_status(ch: Any, run_id: str, rank: int, status: str, ts_ms: int, *, seq: int,
               error: str = "", experiment: str = "exp", producer: str = "p") -> None:
    insert(ch, tables.RUN_STATUS, [{
        "run_id": run_id, "rank": rank, "experiment": experiment, "status": status,
        "error": error, "producer_id": f"{producer}{rank}", "seq": seq, "ts_ms": ts_ms,
    }])


def points(run_id: str, key: str, rank: int, steps: range, *, seq: int = 10,
           ts0: int = T0) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "key": key, "rank": rank, "step": s, "value": rank * 1000 + s * 0.5,
         "ts_ms": ts0 + s, "producer_id": f"p{rank}", "seq": seq, "idx": i}
        for i, s in enumerate(steps)
    ]


# --- GetRun --------------------------------------------------------------------------


def seed_full_run(ch: Any, run_id: str = "run-full") -> None:
    for rank in range(3):
        start_rank(ch, run_id, rank, 3, T0 + 10 * rank, name="resnet" if rank == 0 else "r")
    # Rank 0's RunStarted replayed (same row, separate insert) must not double anything.
    start_rank(ch, run_id, 0, 3, T0, name="resnet")
    insert(ch, tables.PARAMS, [
        {"run_id": run_id, "key": "lr", "value": "0.01", "type": "FLOAT", "rank": 0,
         "producer_id": "p0", "seq": 2, "ts_ms": T0 + 1},
        {"run_id": run_id, "key": "lr", "value": "0.02", "type": "FLOAT", "rank": 1,
         "producer_id": "p1", "seq": 2, "ts_ms": T0 + 1},
        {"run_id": run_id, "key": "batch", "value": "64", "type": "INT", "rank": 1,
         "producer_id": "p1", "seq": 3, "ts_ms": T0 + 1},
    ])
    insert(ch, tables.PARAMS, [  # replay
        {"run_id": run_id, "key": "lr", "value": "0.01", "type": "FLOAT", "rank": 0,
         "producer_id": "p0", "seq": 2, "ts_ms": T0 + 1},
    ])
    insert(ch, tables.TAGS, [
        {"run_id": run_id, "key": "team", "value": "vision", "rank": 0, "producer_id": "p0",
         "seq": 3, "ts_ms": T0 + 2},
        {"run_id": run_id, "key": "stage", "value": "dev", "rank": 0, "producer_id": "p0",
         "seq": 3, "ts_ms": T0 + 2},
    ])
    insert(ch, tables.TAGS, [  # a later value of the same tag wins
        {"run_id": run_id, "key": "stage", "value": "prod", "rank": 0, "producer_id": "p0",
         "seq": 4, "ts_ms": T0 + 3},
    ])
    sha = "ab" * 32
    artifact = {"run_id": run_id, "name": "model.npz", "uri": f"file:///store/{sha}",
                "size_bytes": 1234, "sha256": sha, "producer_id": "p0", "seq": 5,
                "ts_ms": T0 + 4}
    insert(ch, tables.ARTIFACTS, [{**artifact, "rank": 0}, {**artifact, "rank": 1}])
    insert(ch, tables.ARTIFACTS, [{**artifact, "rank": 0}])
    insert(ch, tables.INPUTS, [{
        "run_id": run_id, "name": "cifar", "rank": 0, "uri": "s3://data/cifar",
        "digest": "d1", "role": "train", "producer_id": "p0", "seq": 6, "ts_ms": T0 + 5,
    }] * 1)
    insert(ch, tables.METRICS, points(run_id, "loss", 0, range(0, 10)))
    insert(ch, tables.METRICS, points(run_id, "loss", 1, range(0, 12)))
    insert(ch, tables.METRICS, points(run_id, "loss", 1, range(5, 12)[:0]))  # no-op
    insert(ch, tables.METRICS, points(run_id, "acc", 0, range(0, 3)))
    # Rank 1 fails; rank 0 finishes later: rank 0 owns the run's status.
    set_status(ch, run_id, 1, "FAILED", T0 + 500, seq=50, error="Traceback...\nOOM")
    set_status(ch, run_id, 0, "FINISHED", T0 + 900, seq=60)
    set_status(ch, run_id, 0, "FINISHED", T0 + 900, seq=60)  # replay


def test_get_run_returns_every_section(ch: Any, client: Client) -> None:
    seed_full_run(ch)
    run = client.get_run("run-full")

    info = run.info
    assert (info.run_id, info.experiment, info.name) == ("run-full", "exp", "resnet")
    assert info.status == "FINISHED"
    assert (info.start_ms, info.end_ms, info.world_size) == (T0, T0 + 900, 3)

    assert [(p.key, p.value, p.type) for p in run.params] == [
        ("batch", "64", "INT"), ("lr", "0.01", "FLOAT"),  # rank 0's lr preferred
    ]
    assert [(t.key, t.value) for t in run.tags] == [("stage", "prod"), ("team", "vision")]
    assert len(run.artifacts) == 1  # same content from two ranks, and a replay: once
    assert run.artifacts[0].name == "model.npz" and run.artifacts[0].size_bytes == 1234
    assert [(i.name, i.uri, i.role) for i in run.inputs] == [("cifar", "s3://data/cifar", "train")]

    metrics = {m.key: m for m in run.metrics}
    assert set(metrics) == {"acc", "loss"}
    loss = metrics["loss"]
    assert loss.last_step == 11 and loss.last == 1000 + 11 * 0.5  # highest step over all ranks
    assert (loss.min, loss.max) == (0.0, 1000 + 11 * 0.5)

    assert [(r.rank, r.status) for r in run.ranks] == [
        (0, "FINISHED"), (1, "FAILED"), (2, "RUNNING"),
    ]
    assert run.ranks[1].error.endswith("OOM") and run.ranks[1].end_ms == T0 + 500
    assert run.ranks[2].end_ms == 0 and run.ranks[2].start_ms == T0 + 20
    assert (run.ranks[1].node, run.ranks[1].local_rank) == ("node0", 1)
    assert run.code.git_commit == "abc0" and run.code.git_dirty and run.code.in_git_repo
    assert run.env.command == "train.py --rank 0" and run.env.cpu_count == 16


def test_run_status_is_rank_zeros_while_other_ranks_end(ch: Any, client: Client) -> None:
    start_rank(ch, "run-live", 0, 2, T0)
    start_rank(ch, "run-live", 1, 2, T0 + 5)
    set_status(ch, "run-live", 1, "FINISHED", T0 + 100, seq=9)
    info = client.get_run("run-live").info
    assert (info.status, info.end_ms) == ("RUNNING", 0)
    runs, _ = client.search_runs("exp")
    assert [(r.run_id, r.status, r.end_ms) for r in runs] == [("run-live", "RUNNING", 0)]


def test_unknown_run_is_not_found(ch: Any, client: Client) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        client.get_run("nope")
    with pytest.raises(NotFoundError):
        client.metric_history("nope", "loss")


@pytest.mark.parametrize("run_id", ["", "has space", "x" * 65, "semi;colon", "quote'"])
def test_bad_run_ids_are_invalid_argument(client: Client, run_id: str) -> None:
    with pytest.raises(InvalidArgumentError, match="run_id"):
        client.get_run(run_id)
    with pytest.raises(InvalidArgumentError, match="run_id"):
        client.metric_history(run_id, "loss")


def test_bad_page_sizes_and_tokens_are_invalid_argument(ch: Any, client: Client) -> None:
    start_rank(ch, "run-a", 0, 1, T0)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        client.search_runs(page_size=1001)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        client.metric_history("run-a", "loss", page_size=1_000_001)
    with pytest.raises(InvalidArgumentError, match="page_token"):
        client.search_runs(page_token="not-a-token")
    with pytest.raises(InvalidArgumentError, match="page_token"):
        client.metric_history("run-a", "loss", page_token="eyJ2IjoxfQ==")
    with pytest.raises(InvalidArgumentError, match="key"):
        client.metric_history("run-a", "")


def test_user_text_never_becomes_sql(ch: Any, client: Client) -> None:
    start_rank(ch, "run-a", 0, 1, T0, experiment="exp")
    hostile = "x' OR 1=1 --"
    runs, token = client.search_runs(hostile)
    assert (runs, token) == ([], "")
    assert len(client.metric_history("run-a", hostile)) == 0
    assert [r.run_id for r in client.iter_runs()] == ["run-a"]


# --- SearchRuns ----------------------------------------------------------------------


def test_search_runs_pages_without_gaps_or_duplicates(ch: Any, client: Client) -> None:
    runs: list[dict[str, Any]] = []
    for i in range(250):
        # Start times collide in groups of 3 so the run_id tie-break is exercised.
        runs.append({
            "run_id": f"run-{i:04d}", "rank": 0, "experiment": "big" if i % 5 else "other",
            "name": f"n{i}", "world_size": 2, "producer_id": "p", "seq": 1,
            "ts_ms": T0 + (i // 3) * 1000,
        })
    insert(ch, tables.RUNS, runs)
    insert(ch, tables.RUNS, runs[100:180])  # replayed inserts
    insert(ch, tables.RUNS, [{**r, "rank": 1, "ts_ms": r["ts_ms"] + 7} for r in runs[:50]])

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page, token = client.search_runs(page_size=37, page_token=token)
        pages += 1
        assert len(page) <= 37
        seen.extend(r.run_id for r in page)
        if not token:
            break
    assert pages == math.ceil(250 / 37)
    assert len(seen) == len(set(seen)) == 250
    expected = sorted(runs, key=lambda r: (r["ts_ms"], r["run_id"]), reverse=True)
    assert seen == [r["run_id"] for r in expected]

    big = [r.run_id for r in client.iter_runs("big", page_size=40)]
    assert big == [r["run_id"] for r in expected if r["experiment"] == "big"]
    first, _ = client.search_runs("other", page_size=1)
    assert first[0].run_id == "run-0245" and first[0].world_size == 2
    assert first[0].status == "RUN_STATUS_UNSPECIFIED"  # no status row was written


def test_token_of_another_filter_is_rejected(ch: Any, client: Client) -> None:
    insert(ch, tables.RUNS, [
        {"run_id": f"r{i}", "experiment": "a", "ts_ms": T0 + i} for i in range(3)
    ])
    _, token = client.search_runs("a", page_size=1)
    assert token
    with pytest.raises(InvalidArgumentError, match="different request"):
        client.search_runs("b", page_size=1, page_token=token)


# --- GetMetricHistory ----------------------------------------------------------------


def test_metric_history_pages_losslessly_with_dedup_and_rank_filter(
    ch: Any, client: Client
) -> None:
    start_rank(ch, "run-m", 0, 4, T0)
    for rank in range(4):
        insert(ch, tables.METRICS, points("run-m", "loss", rank, range(6250)))
    # A replay of half of rank 1's points, in a different block: same identity.
    insert(ch, tables.METRICS, points("run-m", "loss", 1, range(6250))[1000:4000])
    # A second value logged at the same step is a different point (new seq) and is kept.
    extra = points("run-m", "loss", 2, range(5, 6), seq=99, ts0=T0 + 50)
    insert(ch, tables.METRICS, extra)
    insert(ch, tables.METRICS, points("run-m", "other", 0, range(10)))

    everything = client.metric_history("run-m", "loss", page_size=3000)
    assert len(everything) == 25_001 and everything.next_page_token == ""
    keys = list(zip(everything.ranks, everything.steps, everything.ts_ms, strict=True))
    assert keys == sorted(keys)
    assert everything.ranks.count(1) == 6250
    at_step_5 = [
        (t, v) for r, s, t, v in zip(everything.ranks, everything.steps, everything.ts_ms,
                                     everything.values, strict=True) if r == 2 and s == 5
    ]
    assert at_step_5 == [(T0 + 5, 2002.5), (T0 + 55, 2002.5)]

    one_page = client.metric_history("run-m", "loss", page_size=25_001)
    assert one_page.steps == everything.steps and one_page.values == everything.values

    # Manual paging with ranks filter: pages join up to exactly the filtered points.
    ranks_13: list[tuple[int, int]] = []
    token = ""
    while True:
        page = client.metric_history("run-m", "loss", ranks=[3, 1], page_size=999,
                                     page_token=token)
        assert len(page) <= 999
        ranks_13.extend(zip(page.ranks, page.steps, strict=True))
        token = page.next_page_token
        if not token:
            break
    assert ranks_13 == [(r, s) for r in (1, 3) for s in range(6250)]

    with pytest.raises(InvalidArgumentError, match="different request"):
        first = client.metric_history("run-m", "loss", ranks=[1], page_size=10, page_token="")
        client.metric_history("run-m", "loss", ranks=[2], page_token=first.next_page_token)


def test_known_run_without_the_key_gives_empty_history(ch: Any, client: Client) -> None:
    start_rank(ch, "run-e", 0, 1, T0)
    history = client.metric_history("run-e", "missing")
    assert (len(history), history.next_page_token) == (0, "")


def test_nan_and_inf_survive(ch: Any, client: Client) -> None:
    rows = points("run-n", "loss", 0, range(3))
    rows[1]["value"], rows[2]["value"] = math.nan, math.inf
    insert(ch, tables.METRICS, rows)
    history = client.metric_history("run-n", "loss")
    assert math.isnan(history.values[1]) and history.values[2] == math.inf


# --- health and reflection -----------------------------------------------------------


def test_health_is_serving_and_reflection_lists_the_service(
    server: tuple[grpc.Server, int],
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
        assert SERVICE_NAME == "runstream.v1.QueryService"
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


# --- server lifecycle and error mapping ----------------------------------------------


def test_start_server_without_tables_answers_unavailable(
    chdb_dsn: str, ch_database: str
) -> None:
    from runstream.proto.errors import UnavailableError
    from runstream.query.config import QueryConfig
    from runstream.query.server import start_server

    config = QueryConfig(addr="127.0.0.1:0", clickhouse_dsn=chdb_dsn, database=ch_database)
    with start_server(config) as running, Client(running.address, timeout_s=30) as c:
        assert running.address == f"127.0.0.1:{running.port}" and running.port > 0
        with pytest.raises(UnavailableError, match="not in ClickHouse"):
            c.get_run("r1")
    assert running.wait(0)
    running.stop()  # idempotent


class _BrokenService(QueryService):
    def get_run(self, run_id: str) -> Any:
        raise KeyError("secret internals")


def test_unexpected_errors_are_internal_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from runstream.proto.errors import RunstreamError

    grpc_server, port = build_server(_BrokenService(cast(Any, None)), "127.0.0.1:0")
    grpc_server.start()
    try:
        with Client(f"127.0.0.1:{port}") as c, pytest.raises(RunstreamError) as raised:
            c.get_run("r1")
        assert type(raised.value) is RunstreamError
        assert "secret" not in str(raised.value) and "GetRun" in str(raised.value)
        assert "secret internals" in caplog.text
    finally:
        stop(grpc_server, 0)


def test_unreachable_server_is_unavailable() -> None:
    from runstream.proto.errors import UnavailableError
    from tests.conftest import free_port

    with Client(f"127.0.0.1:{free_port()}", timeout_s=5) as c, pytest.raises(UnavailableError):
        c.get_run("r1")
