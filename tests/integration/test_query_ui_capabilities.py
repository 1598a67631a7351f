"""The web UI's query capabilities through the real engine and gRPC: step ranges on
GetMetricHistory, GetMetricHistories, GetRankEnvelope, GetRankLag, SearchRuns columns and
ListRunKeys."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import pytest

from runstream.proto import config as names
from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.client import Client
from runstream.query.models import RankDeparture
from tests.factories import (
    T0,
    insert,
    points,
    seed_runs,
    seed_through_consumer,
    start_rank,
    started_event,
)

N = 100_000


def series(run_id: str, key: str, rank: int, values: list[float], *, step0: int = 0,
           ts0: int = T0, seq: int = 10) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "key": key, "rank": rank, "step": step0 + i, "value": v,
             "ts_ms": ts0 + i, "producer_id": f"p{rank}", "seq": seq, "idx": i}
            for i, v in enumerate(values)]


def seed_long(ch: Any) -> None:
    """run "long": loss at steps 0..99,999 on ranks 0 and 1 (value = rank*1000 + step/2)."""
    start_rank(ch, "long", 0, 2, T0)
    for rank in (0, 1):
        insert(ch, tables.METRICS, points("long", "loss", rank, range(N)))


# --- step ranges ---------------------------------------------------------------------------


def test_a_range_of_a_long_series_is_downsampled_alone(ch: Any, client: Client) -> None:
    seed_long(ch)
    whole = client.metric_history("long", "loss", ranks=[0], max_points=1000)
    assert whole.total_points == N and len(whole) == 1000 and max(whole.bucket_counts) == 100

    # A zoom holding fewer points than max_points: its real points, each its own bucket.
    zoom = client.metric_history("long", "loss", ranks=[0], max_points=1000,
                                 start_step=40_000, end_step=40_499)
    assert zoom.steps == list(range(40_000, 40_500))
    assert zoom.values == [s * 0.5 for s in range(40_000, 40_500)]
    assert zoom.total_points == 500 and set(zoom.bucket_counts) == {1}

    # A wider range: downsampled, every step inside it, both ranks.
    wide = client.metric_history("long", "loss", max_points=500, start_step=10_000,
                                 end_step=59_999)
    assert wide.downsampled and wide.total_points == 2 * 50_000
    assert len(wide) == 1000 and sorted(set(wide.ranks)) == [0, 1]
    assert all(10_000 <= s <= 59_999 for s in wide.steps)
    assert sum(wide.bucket_counts) == 2 * 50_000
    assert min(wide.min_values) == 5000.0 and max(wide.max_values) == 1000 + 59_999 * 0.5

    # Aggregated over a range; open-ended ranges.
    mean = client.metric_history("long", "loss", max_points=1000, aggregate="mean",
                                 start_step=99_990)
    assert mean.steps == list(range(99_990, N)) and mean.ranks == []
    assert mean.values == [500 + s * 0.5 for s in range(99_990, N)]
    head = client.metric_history("long", "loss", ranks=[1], max_points=10, end_step=9)
    assert head.steps == list(range(10))

    # The lossless pages of a range, and the whole range without a token (paged by the client).
    got: list[int] = []
    token = ""
    while True:
        page = client.metric_history("long", "loss", ranks=[0], page_size=300,
                                     page_token=token, start_step=70_000, end_step=70_999)
        got += page.steps
        token = page.next_page_token
        if not token:
            break
    assert got == list(range(70_000, 71_000))
    everything = client.metric_history("long", "loss", page_size=700, start_step=5,
                                       end_step=1004)
    assert list(zip(everything.ranks, everything.steps, strict=True)) == [
        (r, s) for r in (0, 1) for s in range(5, 1005)]
    agg_page = client.metric_history("long", "loss", aggregate="max", page_size=100,
                                     page_token="", start_step=200, end_step=399)
    assert agg_page.steps == list(range(200, 300)) and agg_page.next_page_token


def test_a_page_token_belongs_to_its_step_range(ch: Any, client: Client) -> None:
    insert(ch, tables.METRICS, points("tok", "loss", 0, range(1000)))
    first = client.metric_history("tok", "loss", page_size=10, page_token="",
                                  start_step=100, end_step=500)
    assert first.steps == list(range(100, 110)) and first.next_page_token
    nxt = client.metric_history("tok", "loss", page_size=10, page_token=first.next_page_token,
                                start_step=100, end_step=500)
    assert nxt.steps == list(range(110, 120))
    for other in ({"start_step": 100, "end_step": 501}, {"start_step": 100}, {}):
        with pytest.raises(InvalidArgumentError, match="different request"):
            client.metric_history("tok", "loss", page_size=10,
                                  page_token=first.next_page_token, **other)
    unranged = client.metric_history("tok", "loss", page_size=10, page_token="")
    with pytest.raises(InvalidArgumentError, match="different request"):
        client.metric_history("tok", "loss", page_size=10, page_token=unranged.next_page_token,
                              start_step=0)
    agg = client.metric_history("tok", "loss", aggregate="mean", page_size=10, page_token="",
                                start_step=100)
    with pytest.raises(InvalidArgumentError, match="different request"):
        client.metric_history("tok", "loss", aggregate="mean", page_size=10,
                              page_token=agg.next_page_token, start_step=101)
    with pytest.raises(InvalidArgumentError, match="after end_step"):
        client.metric_history("tok", "loss", max_points=10, start_step=5, end_step=4)
    with pytest.raises(InvalidArgumentError, match="after end_step"):
        client.metric_history("tok", "loss", page_size=10, page_token="", start_step=5,
                              end_step=4)


def seed_fork(ch: Any) -> None:
    """parent: loss at 0..99 (rank 0); child forked at 49 logs 50..79 (negated)."""
    seed_through_consumer(ch, [started_event("parent", 0, 1, T0, producer="pa0")])
    seed_through_consumer(ch, [started_event("child", 0, 1, T0 + 10_000, producer="ch0",
                                             fork_run_id="parent", fork_step=49)])
    insert(ch, tables.METRICS, points("parent", "loss", 0, range(100)))
    child = points("child", "loss", 0, range(50, 80), ts0=T0 + 10_000)
    insert(ch, tables.METRICS, [{**p, "value": -p["value"]} for p in child])


def test_a_range_cuts_a_forks_inherited_segment_too(ch: Any, client: Client) -> None:
    seed_fork(ch)
    paged = client.metric_history("child", "loss", start_step=40, end_step=60)
    assert paged.steps == list(range(40, 61))
    assert paged.values == [s * 0.5 for s in range(40, 50)] + [-s * 0.5 for s in range(50, 61)]
    down = client.metric_history("child", "loss", max_points=100, start_step=45, end_step=55)
    assert down.steps == list(range(45, 56)) and down.values == paged.values[5:16]
    inherited = client.metric_history("child", "loss", max_points=100, end_step=10)
    assert inherited.steps == list(range(11))
    mean = client.metric_history("child", "loss", max_points=100, aggregate="mean",
                                 start_step=48, end_step=51)
    assert mean.values == [24.0, 24.5, -25.0, -25.5]


# --- GetMetricHistories ----------------------------------------------------------------------


def same_history(a: Any, b: Any) -> None:
    """Equal histories; a mean across ranks may differ in its last bits (ClickHouse sums
    in whatever order its threads meet the rows)."""
    for name in ("run_id", "key", "ranks", "steps", "ts_ms", "bucket_counts", "downsampled",
                 "total_points", "aggregate", "next_page_token"):
        assert getattr(a, name) == getattr(b, name), (a.run_id, a.key, name)
    for name in ("values", "min_values", "max_values"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-12, abs=1e-15)


def test_metric_histories_equal_the_single_calls(ch: Any, client: Client) -> None:
    rng = random.Random(3)
    for run_id, world in (("ha", 2), ("hb", 3), ("hc", 1)):
        for rank in range(world):
            start_rank(ch, run_id, rank, world, T0)
            insert(ch, tables.METRICS, series(run_id, "loss", rank,
                                              [rng.gauss(0, 1) for _ in range(5000)], seq=10))
            if run_id != "hc":  # hc lacks acc
                insert(ch, tables.METRICS, series(run_id, "acc", rank,
                                                  [rng.random() for _ in range(700)],
                                                  step0=100, seq=11))
    seed_fork(ch)
    runs, keys = ["ha", "hb", "hc", "child"], ["loss", "acc"]
    for kw in ({}, {"aggregate": "mean"}, {"start_step": 300, "end_step": 4000},
               {"ranks": [1], "aggregate": "max", "end_step": 450}, {"max_points": 5000}):
        many = client.metric_histories(runs, keys, **{"max_points": 200, **kw})
        assert [(h.run_id, h.key) for h in many] == [(r, k) for r in runs for k in keys]
        single_kw = {"max_points": 200, **kw}
        for h in many:
            one = client.metric_history(h.run_id, h.key, **single_kw)
            same_history(h, one)
    empty = client.metric_histories(["hc"], ["acc"])
    assert len(empty) == 1 and len(empty[0]) == 0 and empty[0].downsampled
    with pytest.raises(NotFoundError, match="ghost"):
        client.metric_histories(["ha", "ghost"], ["loss"])
    with pytest.raises(InvalidArgumentError):
        client.metric_histories([f"r{i}" for i in range(51)], ["loss"])
    with pytest.raises(InvalidArgumentError):
        client.metric_histories(["ha"], [f"k{i}" for i in range(21)])
    with pytest.raises(InvalidArgumentError, match="200"):
        client.metric_histories([f"r{i}" for i in range(11)], [f"k{i}" for i in range(20)])
    with pytest.raises(InvalidArgumentError):
        client.metric_histories(["ha"], ["loss"], max_points=1)
    with pytest.raises(InvalidArgumentError, match="1000000 points"):
        client.metric_histories([f"r{i}" for i in range(10)], [f"k{i}" for i in range(20)],
                                max_points=5001)
    with pytest.raises(InvalidArgumentError, match="after end_step"):
        client.metric_histories(["ha"], ["loss"], start_step=3, end_step=2)


# --- GetRankEnvelope ------------------------------------------------------------------------


def test_the_envelope_is_min_mean_max_over_ranks_per_step(ch: Any, client: Client) -> None:
    rng = random.Random(7)
    latest: dict[tuple[int, int], float] = {}
    for rank in range(4):
        start_rank(ch, "env", rank, 4, T0)
        values = [rng.uniform(-1, 1) for _ in range(300)]
        steps = [s for s in range(300) if not (rank == 3 and s % 7 == 0)]  # rank 3 skips some
        rows = [r for r in series("env", "loss", rank, values) if r["step"] in steps]
        insert(ch, tables.METRICS, rows)
        latest.update({(rank, r["step"]): r["value"] for r in rows})
    # A second value at step 10 of rank 1, logged later: the latest value counts.
    insert(ch, tables.METRICS, series("env", "loss", 1, [5.0], step0=10, ts0=T0 + 999, seq=99))
    latest[(1, 10)] = 5.0
    env = client.rank_envelope("env", "loss")
    assert env.ranks == (0, 1, 2, 3) and not env.downsampled and env.total_steps == 300
    assert env.steps == list(range(300))
    for i, step in enumerate(env.steps):
        at = {r: v for (r, s), v in latest.items() if s == step}
        lo_rank = min(at, key=lambda r: (at[r], r))
        hi_rank = min(at, key=lambda r: (-at[r], r))
        assert (env.min[i], env.min_rank[i]) == (at[lo_rank], lo_rank)
        assert (env.max[i], env.max_rank[i]) == (at[hi_rank], hi_rank)
        assert env.mean[i] == pytest.approx(statistics.fmean(at.values()), abs=1e-12)
        assert env.count[i] == len(at)
    assert env.max[10] == 5.0 and env.max_rank[10] == 1

    window = client.rank_envelope("env", "loss", start_step=100, end_step=149)
    assert window.steps == list(range(100, 150)) and window.min == env.min[100:150]


def test_a_one_rank_spike_shows_in_the_downsampled_envelope(ch: Any, client: Client) -> None:
    for rank in range(4):
        values = [1.0 + 0.001 * rank] * 5000
        if rank == 2:
            values[1234] = 900.0
        insert(ch, tables.METRICS, series("spike", "loss", rank, values))
    env = client.rank_envelope("spike", "loss", max_points=100)
    assert env.downsampled and env.total_steps == 5000 and len(env.steps) == 100
    assert env.steps[:3] == [0, 50, 100]
    i = env.max.index(max(env.max))
    assert env.max[i] == 900.0 and env.max_rank[i] == 2 and env.steps[i] == 1200
    assert all(m == 1.003 and r == 3 for j, (m, r) in enumerate(
        zip(env.max, env.max_rank, strict=True)) if j != i)
    assert set(env.min_rank) == {0} and set(env.count) == {4}


def test_a_departure_takes_three_steps_in_a_row(ch: Any, client: Client) -> None:
    for rank in range(4):
        values = [1.0 + 0.001 * rank] * 100
        if rank == 1:
            values[30] = values[31] = 50.0  # two steps: a blip, no departure
            values[60] = values[62] = values[64] = 50.0  # not in a row either
        if rank == 0:
            values[80:83] = [-50.0] * 3
        insert(ch, tables.METRICS, series("blips", "loss", rank, values))
    env = client.rank_envelope("blips", "loss")
    assert env.departures == (RankDeparture(rank=0, step=80, value=-50.0, median=1.0015),)
    assert env.max_rank[30] == 1 and env.min_rank[80] == 0
    assert env.outlier_rank == 0  # at the min at every step, and it departs


def test_a_diverging_rank_is_the_outlier_though_another_is_lowest_everywhere(
    ch: Any, client: Client
) -> None:
    # Rank 0 is the lowest at every step by a hair (never departing); rank 2 diverges.
    for rank in range(4):
        values = [1.0 + 0.001 * rank] * 100
        if rank == 2:
            values[40:] = [5.0 + s for s in range(60)]
        insert(ch, tables.METRICS, series("hair", "loss", rank, values))
    env = client.rank_envelope("hair", "loss")
    assert set(env.min_rank) == {0}
    assert [(d.rank, d.step) for d in env.departures] == [(2, 40)]
    assert env.outlier_rank == 2


def noisy_job(ch: Any, run_id: str, *, diverge_at: int | None) -> None:
    rng = random.Random(11)
    for rank in range(8):
        values = [2.0 / (1 + s / 100) + rng.gauss(0, 0.01) for s in range(1000)]
        if diverge_at is not None and rank == 5:
            values[diverge_at:] = [v + 0.3 for v in values[diverge_at:]]
        insert(ch, tables.METRICS, series(run_id, "loss", rank, values))


def test_the_envelope_names_a_diverging_rank(ch: Any, client: Client) -> None:
    noisy_job(ch, "diverge", diverge_at=500)
    nan = series("diverge", "loss", 3, [math.nan], step0=700, ts0=T0 + 5000, seq=77)
    insert(ch, tables.METRICS, nan)
    env = client.rank_envelope("diverge", "loss")
    assert env.outlier_rank == 5
    assert [(d.rank, d.step) for d in env.departures] == [(5, 500)]
    d = env.departures[0]
    assert d.value > d.median + 0.25
    assert [(f.rank, f.step) for f in env.first_non_finite] == [(3, 700)]
    assert math.isnan(env.first_non_finite[0].value)
    assert env.count[700] == 7  # rank 3's latest value at 700 is NaN
    assert env.max_rank[500:] == [5] * 500

    before = client.rank_envelope("diverge", "loss", end_step=499)
    assert before.departures == () and before.outlier_rank == -1


def test_identical_noise_on_eight_ranks_departs_nowhere(ch: Any, client: Client) -> None:
    noisy_job(ch, "calm", diverge_at=None)
    env = client.rank_envelope("calm", "loss", max_points=200)
    assert env.ranks == tuple(range(8)) and env.total_steps == 1000 and len(env.steps) == 200
    assert env.departures == () and env.outlier_rank == -1 and env.first_non_finite == ()


def test_envelope_and_lag_of_unknown_runs_and_bad_requests(ch: Any, client: Client) -> None:
    start_rank(ch, "known", 0, 1, T0)
    empty = client.rank_envelope("known", "nothing")
    assert (empty.steps, empty.ranks, empty.total_steps, empty.outlier_rank) == ([], (), 0, -1)
    with pytest.raises(NotFoundError):
        client.rank_envelope("ghost", "loss")
    with pytest.raises(InvalidArgumentError):
        client.rank_envelope("known", "loss", max_points=1)
    with pytest.raises(InvalidArgumentError):
        client.rank_envelope("known", "loss", start_step=9, end_step=1)
    with pytest.raises(NotFoundError):
        client.rank_lag("ghost")
    with pytest.raises(InvalidArgumentError):
        client.rank_lag("known", max_steps=1)
    with pytest.raises(InvalidArgumentError):
        client.rank_lag("known", max_steps=2001)
    assert client.rank_lag("known").key == ""


# --- GetRankLag --------------------------------------------------------------------------------


def test_the_lag_matrix_names_the_late_rank(ch: Any, client: Client) -> None:
    for rank in range(5):
        start_rank(ch, "lag", rank, 5, T0)
        steps = range(10) if rank == 4 else range(100)
        rows = [{"run_id": "lag", "key": names.TELEMETRY_STEP_TIME, "rank": rank, "step": s,
                 "value": 0.1, "ts_ms": T0 + s * 100 + (300 if rank == 2 else rank),
                 "producer_id": f"p{rank}", "seq": 5, "idx": i} for i, s in enumerate(steps)]
        insert(ch, tables.METRICS, rows)
        insert(ch, tables.METRICS, points("lag", "loss", rank, range(500)))  # busier key
    lag = client.rank_lag("lag", max_steps=10)
    assert lag.key == names.TELEMETRY_STEP_TIME  # rank_health's choice
    assert lag.key == client.rank_health("lag").lag_key
    assert lag.ranks == (0, 1, 2, 3, 4) and lag.steps == list(range(0, 100, 10))
    by_rank = dict(zip(lag.ranks, lag.lag_ms, strict=True))
    # Steps 0..9: five ranks (median offset 3); later: four (median (1 + 3) / 2 = 2).
    assert by_rank[2][0] == pytest.approx(297) and by_rank[2][1:] == [298.0] * 9
    assert by_rank[0][1:] == [-2.0] * 9
    assert by_rank[4][0] == pytest.approx(1) and all(math.isnan(x) for x in by_rank[4][1:])
    for j in range(10):
        assert max(lag.ranks, key=lambda r: by_rank[r][j] if by_rank[r][j] == by_rank[r][j]
                   else -math.inf) == 2
    on_loss = client.rank_lag("lag", "loss", max_steps=2000)
    assert on_loss.key == "loss" and len(on_loss.steps) == 500
    assert all(row == [0.0] * 500 for row in on_loss.lag_ms[:2])


# --- SearchRuns columns, ListRunKeys -------------------------------------------------------------


def test_search_runs_returns_the_asked_columns(ch: Any, client: Client) -> None:
    seed_runs(ch)
    runs, token = client.search_runs(
        "exp", page_size=4, order_by=["params.lr"],
        columns=["params.lr", "metrics.loss", "tags.model", "params.missing", "metrics.loss"])
    assert token and [r.run_id for r in runs] == ["r00", "r01", "r02", "r03"]
    assert len(runs.columns) == 4
    for i, (run, cols) in enumerate(zip(runs, runs.columns, strict=True)):
        assert run.run_id == f"r{i:02d}"
        assert cols == {"params.lr": str(0.001 * (i + 1)), "metrics.loss": float(i),
                        "tags.model": "bert-base" if i % 2 else "gpt2"}
    plain, _ = client.search_runs("exp", page_size=2)
    assert plain.columns == []
    for bad in (["foo.x"], ["params."], ["lr"], ["attributes.status"],
                [f"params.p{i}" for i in range(51)]):
        with pytest.raises(InvalidArgumentError):
            client.search_runs("exp", columns=bad)


def test_run_keys_lists_what_runs_use(ch: Any, client: Client) -> None:
    seed_runs(ch)
    start_rank(ch, "solo-run", 0, 1, T0, experiment="solo")
    insert(ch, tables.PARAMS, [{"run_id": "solo-run", "key": "only_here", "value": "1",
                                "type": "INT", "rank": 0, "producer_id": "p0", "seq": 2,
                                "ts_ms": T0}])
    insert(ch, tables.METRICS, points("solo-run", "solo/metric", 0, range(3)))
    every = client.run_keys()
    assert every.params == ("batch", "lr", "only_here")
    assert every.metrics == ("loss", "solo/metric", "val_acc")
    assert every.tags == ("model",) and not every.truncated
    solo = client.run_keys(["solo"])
    assert (solo.params, solo.metrics, solo.tags) == (("only_here",), ("solo/metric",), ())
    other = client.run_keys(["other", "nowhere"])
    assert (other.params, other.metrics, other.tags) == (
        ("batch", "lr"), ("loss", "val_acc"), ("model",))


def test_run_keys_says_when_it_cuts(ch: Any, client: Client) -> None:
    start_rank(ch, "wide", 0, 1, T0)
    insert(ch, tables.TAGS, [{"run_id": "wide", "key": f"t{i:04d}", "value": "v", "rank": 0,
                              "producer_id": "p0", "seq": 3, "ts_ms": T0} for i in range(1005)])
    keys = client.run_keys()
    assert keys.truncated and len(keys.tags) == 1000 and keys.tags[-1] == "t0999"

