"""GetMetricHistory through the real engine and gRPC: lossless pages, downsampling with
its envelope, aggregates across ranks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest

from runstream.consumer.sink import ClickHouseSink
from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.client import Client
from runstream.query.repository import ClickHouseRepository
from runstream.query.service import QueryService
from tests.factories import T0, insert, points, start_rank, store_of


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


BIG = 1.797e308


def test_mean_across_ranks_does_not_overflow(ch: Any, client: Client, chdb_dsn: str,
                                             ch_database: str) -> None:
    """Step 0: both ranks at 1.797e308 (a plain avg summed them to inf); step 1: ordinary
    values; steps 2 and 3: a genuine inf, and inf with -inf (NaN); step 4: three ranks,
    huge values of both signs, which a running sum may overflow and a mean must not."""
    start_rank(ch, "huge", 0, 2, T0)
    by_rank = {0: [BIG, 0.1, math.inf, math.inf, BIG], 1: [BIG, 0.2, 1.0, -math.inf, -BIG]}
    insert(ch, tables.METRICS, [
        {"run_id": "huge", "key": "x", "rank": rank, "step": s, "value": v, "ts_ms": T0 + s,
         "producer_id": f"p{rank}", "seq": 3, "idx": s}
        for rank, values in by_rank.items() for s, v in enumerate(values)])
    insert(ch, tables.METRICS, [
        {"run_id": "huge", "key": "x", "rank": 2, "step": 4, "value": BIG, "ts_ms": T0,
         "producer_id": "p2", "seq": 3, "idx": 0}])
    mean = client.metric_history("huge", "x", aggregate="mean")
    assert mean.steps == [0, 1, 2, 3, 4]
    assert mean.values[:3] == [BIG, (0.1 + 0.2) / 2, math.inf] and mean.values[4] == BIG / 3
    assert math.isnan(mean.values[3])
    down = client.metric_history("huge", "x", aggregate="mean", max_points=10)
    assert down.steps == [0, 1, 2, 4]  # downsampling leaves NaN out
    assert down.values == [BIG, (0.1 + 0.2) / 2, math.inf, BIG / 3]
    # A bucket's centroid (LTTB's third corner) is a mean too.
    insert(ch, tables.METRICS, [
        {"run_id": "huge", "key": "y", "rank": 0, "step": s, "value": v, "ts_ms": T0 + s,
         "producer_id": "p0", "seq": 4, "idx": s}
        for s, v in enumerate([BIG, BIG, 1.0, 2.0])])
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        buckets = repository.buckets("huge", "y", [], "", 0, 2)
    finally:
        repository.close()
    assert [(b.avg_step, b.avg_value) for b in buckets] == [(0.5, BIG), (2.5, 1.5)]


class CheckCounting(ClickHouseRepository):
    """The repository, listing the repeated-rank checks it runs: ``checks`` their first
    read (SUSPECT_RANKS_SQL, on the summaries), ``point_checks`` the suspects of each read of
    the points that follows (REPEATED_RANKS_SQL) and ``found`` what each of those found."""

    def __init__(self, dsn: str, database: str) -> None:
        super().__init__(dsn, database)
        self.checks: list[str] = []
        self.point_checks: list[list[int]] = []
        self.found: list[list[int]] = []

    def _rows(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        rows = super()._rows(sql, parameters)
        if "groupBitmapMerge(steps)" in sql:  # SUSPECT_RANKS_SQL
            self.checks.append(sql)
        elif "HAVING count() !=" in sql:  # REPEATED_RANKS_SQL
            self.point_checks.append(sorted(parameters["suspects"]))
            self.found.append(sorted(int(k) for (k,) in rows))
        return rows


def _seed_repeats(ch: Any) -> None:
    """Run "rep": 4 ranks x 100 steps of "loss"; rank 1's steps 20..59 replayed, rank 2
    given a second value at steps 10..19."""
    start_rank(ch, "rep", 0, 4, T0)
    for rank in range(4):
        insert(ch, tables.METRICS, points("rep", "loss", rank, range(100)))
    insert(ch, tables.METRICS, points("rep", "loss", 1, range(100))[20:60])  # a replay
    relogged = [dict(p, value=-5.0 - p["step"], seq=99, ts_ms=p["ts_ms"] + 50)
                for p in points("rep", "loss", 2, range(10, 20))]
    insert(ch, tables.METRICS, relogged)


def test_a_kept_repeated_rank_check_follows_inserts_and_merges_of_the_series(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    """The check on the points of the suspect ranks is kept while the parts holding the
    series are the same: a rank that logs a step again (a new part), or a merge that
    collapses a replay (merged parts), changes the answer where it should; another run's
    points change nothing. A series without suspects reads no points twice at all."""
    ch.command("SYSTEM STOP MERGES metrics")  # the parts change only where the test says
    start_rank(ch, "kept", 0, 2, T0)
    for rank in range(2):
        insert(ch, tables.METRICS, points("kept", "loss", rank, range(50)))
    repository = CheckCounting(chdb_dsn, ch_database)
    checks, point_checks = repository.checks, repository.point_checks

    def mean(step: int) -> float:
        return svc.metric_history("kept", "loss", aggregate="mean").values[step]

    svc = QueryService(repository)
    try:
        assert mean(10) == pytest.approx((10 * 0.5 + 1000 + 10 * 0.5) / 2)
        assert mean(10) == pytest.approx((10 * 0.5 + 1000 + 10 * 0.5) / 2)
        assert len(checks) == 2 and point_checks == []  # no suspect: each rank clean
        # Rank 1 logs step 10 again, later: its latest value counts, not both.
        insert(ch, tables.METRICS, [dict(points("kept", "loss", 1, range(10, 11))[0],
                                         value=-7.0, seq=99, ts_ms=T0 + 500)])
        assert mean(10) == pytest.approx((10 * 0.5 - 7.0) / 2)
        assert mean(10) == pytest.approx((10 * 0.5 - 7.0) / 2)
        assert point_checks == [[1]]  # kept: the same parts hold the series
        insert(ch, tables.METRICS, points("other", "loss", 0, range(50)))
        assert mean(10) == pytest.approx((10 * 0.5 - 7.0) / 2)
        assert point_checks == [[1]]  # the other run's part holds none of this series
        # A replay of rank 0 (cut into another block: the same block again is dropped at
        # insert), then a merge that collapses it: the answers stay right.
        insert(ch, tables.METRICS, points("kept", "loss", 0, range(50))[5:40])
        assert mean(20) == pytest.approx((20 * 0.5 + 1000 + 20 * 0.5) / 2)
        assert point_checks == [[1], [0, 1]]
        ch.command("SYSTEM START MERGES metrics")
        ch.command("OPTIMIZE TABLE metrics FINAL")
        assert mean(20) == pytest.approx((20 * 0.5 + 1000 + 20 * 0.5) / 2)
        assert mean(10) == pytest.approx((10 * 0.5 - 7.0) / 2)
        assert point_checks == [[1], [0, 1], [0, 1]] and repository.found[-1] == [1]
        assert len(checks) == 8  # one read of the summaries a request
    finally:
        svc.repository.close()


def test_only_ranks_whose_summaries_count_a_step_twice_are_checked_on_their_points(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    """The check reads the points of the suspects alone: the ranks whose summaries hold more
    points than distinct steps (a replay, a value logged again, NaN included). A replay
    that a merge has collapsed keeps its rank a suspect, cleared by its points; a run whose
    ranks logged each step once is never read twice."""
    ch.command("SYSTEM STOP MERGES metrics")  # the replay stays until the test merges it
    start_rank(ch, "sus", 0, 4, T0)
    for rank in range(4):
        rows = points("sus", "loss", rank, range(100))
        if rank == 2:  # rank 2's first value at step 7 is NaN, logged again later
            rows[7] = dict(rows[7], value=math.nan)
        insert(ch, tables.METRICS, rows)
    insert(ch, tables.METRICS, points("sus", "loss", 1, range(100))[20:60])  # a replay
    insert(ch, tables.METRICS, [dict(points("sus", "loss", 2, range(7, 8))[0], value=-9.0,
                                     seq=50, ts_ms=T0 + 300)])
    start_rank(ch, "clean", 0, 4, T0)
    for rank in range(4):
        insert(ch, tables.METRICS, points("clean", "loss", rank, range(100)))
    repository = CheckCounting(chdb_dsn, ch_database)
    svc = QueryService(repository)

    def mean(run_id: str) -> list[float]:
        history = svc.metric_history(run_id, "loss", aggregate="mean")
        assert history.steps == list(range(100))
        return list(history.values)

    want = [(sum(r * 1000 + s * 0.5 for r in (0, 1, 3)) + (-9.0 if s == 7 else 2000 + s * 0.5))
            / 4 for s in range(100)]
    try:
        # Read as they are, rank 2's NaN at step 7 would make the step's mean NaN.
        assert mean("sus") == pytest.approx(want, rel=1e-12)
        assert (repository.point_checks, repository.found) == ([[1, 2]], [[1, 2]])
        ch.command("SYSTEM START MERGES metrics")
        ch.command("OPTIMIZE TABLE metrics FINAL")  # collapses rank 1's replay
        assert mean("sus") == pytest.approx(want, rel=1e-12)
        assert (repository.point_checks, repository.found[1]) == ([[1, 2]] * 2, [2])
        assert len(repository.checks) == 2
        assert mean("clean") == pytest.approx(
            [sum(r * 1000 + s * 0.5 for r in range(4)) / 4 for s in range(100)], rel=1e-12)
        assert len(repository.checks) == 3 and len(repository.point_checks) == 2
    finally:
        repository.close()


def test_the_points_of_an_older_stores_series_are_checked_until_its_summaries_count_them(
    chdb_dsn: str, ch_database: str
) -> None:
    """A store whose summaries predate the repeated-rank check's columns: the upgrade at
    start adds them and brings the view up to date; a rank with rows written before
    (counted 0) stays a suspect, so a step it logged twice then is still found."""
    database = f"{ch_database}_oldsummaries"
    summaries = next(t for t in tables.AGGREGATE_TABLES if t.name == tables.METRIC_SUMMARIES)
    older = replace(summaries, columns=tuple(
        c for c in summaries.columns if c[0] not in ("points", "steps", "counted")))
    view = next(v for v in tables.VIEWS if v.target == tables.METRIC_SUMMARIES)
    counted = (", count() AS points, groupBitmapState(toUInt64(step)) AS steps,"
               " toUInt8(1) AS counted")
    assert counted in view.select
    old_view = replace(view, select=view.select.replace(counted, ""))
    statements = [older.ddl(database) if s.startswith(f"CREATE TABLE IF NOT EXISTS `{database}`"
                                                      f".`{tables.METRIC_SUMMARIES}` ")
                  else old_view.ddl(database) if f".`{view.name}` " in s else s
                  for s in tables.all_ddl(database)]
    with store_of(chdb_dsn, database, statements) as ch:
        start_rank(ch, "old", 0, 2, T0)
        for rank in range(2):
            insert(ch, tables.METRICS, points("old", "loss", rank, range(50)))
        insert(ch, tables.METRICS, [dict(points("old", "loss", 1, range(10, 11))[0],
                                         value=-7.0, seq=99, ts_ms=T0 + 500)])
        ClickHouseSink(ch, database).ensure_schema()
        assert {"points", "steps", "counted"} <= {name for (name,) in ch.query(
            "SELECT name FROM system.columns WHERE database = {db:String}"
            " AND table = 'metric_summaries_mv'", parameters={"db": database}).result_rows}
        for rank in range(2):
            insert(ch, tables.METRICS, points("old", "loss", rank, range(50, 100), seq=11))
        start_rank(ch, "new", 0, 2, T0)
        for rank in range(2):
            insert(ch, tables.METRICS, points("new", "loss", rank, range(100)))
        repository = CheckCounting(chdb_dsn, database)
        svc = QueryService(repository)
        try:
            history = svc.metric_history("old", "loss", aggregate="mean")
            assert history.steps == list(range(100))
            assert history.values[10] == pytest.approx((10 * 0.5 - 7.0) / 2)
            assert history.values[60] == pytest.approx((60 * 0.5 + 1000 + 60 * 0.5) / 2)
            assert (repository.point_checks, repository.found) == ([[0, 1]], [[1]])
            svc.metric_history("new", "loss", aggregate="mean")  # counted from the start
            assert len(repository.point_checks) == 1
        finally:
            repository.close()


def test_one_request_looks_for_repeated_ranks_once(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    """A request that reads a cross-rank aggregate twice (a downsampled history's range and
    buckets, several histories' ranges and buckets, the envelope and the rank spread) runs
    the repeated-rank check once: one read of the summaries, one of the suspects' points.
    The next request reads the summaries again, and the points again only if a part
    holding the series' points changed (a replay inserted here)."""
    ch.command("SYSTEM STOP MERGES metrics")  # the parts change only where the test says
    _seed_repeats(ch)
    repository = CheckCounting(chdb_dsn, ch_database)
    checks, point_checks = repository.checks, repository.point_checks

    svc = QueryService(repository)
    try:
        for i, ask in enumerate((
            lambda: svc.metric_history("rep", "loss", max_points=10, aggregate="mean"),
            lambda: svc.metric_histories(["rep"], ["loss"], max_points=10, aggregate="max"),
            # A series without points ("rep", "absent") among them.
            lambda: svc.metric_histories(["rep"], ["loss", "absent"], max_points=10,
                                         aggregate="mean"),
            lambda: svc.rank_envelope("rep", "loss", max_points=10),
        )):
            checks.clear()
            point_checks.clear()
            got = ask()
            assert len(checks) == 1 and len(point_checks) == 1, got
            ask()
            # The same parts hold the series: the same answer, from the points' check kept.
            assert len(checks) == 2 and len(point_checks) == 1
            # (a block of its own each time: a block inserted again is dropped at insert)
            insert(ch, tables.METRICS, points("rep", "loss", 1, range(100))[30 + i:31 + i])
            ask()
            assert len(checks) == 3 and len(point_checks) == 2
        # What the shared check served is right: each downsampled point is the step's mean
        # as the raw aggregate (one read, its own check) gives it.
        raw = svc.metric_history("rep", "loss", aggregate="mean")
        exact = dict(zip(raw.steps, raw.values, strict=True))
        down = svc.metric_history("rep", "loss", max_points=10, aggregate="mean")
        assert down.steps and all(v == pytest.approx(exact[s], rel=1e-12)
                                  for s, v in zip(down.steps, down.values, strict=True))
        assert exact[15] == pytest.approx((15 * 0.5 + 1000 + 15 * 0.5 + (-20.0)
                                           + 3000 + 15 * 0.5) / 4)
    finally:
        svc.repository.close()


def test_aggregates_take_each_ranks_latest_point_when_only_some_ranks_repeat_a_step(
    ch: Any, client: Client
) -> None:
    """The aggregate reads clean ranks as they are and groups only ranks that logged a step
    twice: a replay of rank 1 (same points again) changes nothing, and rank 2's second value
    at steps 10..19 replaces its first, in every path (one series, several, the envelope)."""
    _seed_repeats(ch)

    def latest(rank: int, step: int) -> float:
        return -5.0 - step if rank == 2 and 10 <= step < 20 else rank * 1000 + step * 0.5

    want = {
        "mean": [sum(latest(r, s) for r in range(4)) / 4 for s in range(100)],
        "min": [min(latest(r, s) for r in range(4)) for s in range(100)],
        "max": [max(latest(r, s) for r in range(4)) for s in range(100)],
    }
    for aggregate, values in want.items():
        got = client.metric_history("rep", "loss", aggregate=aggregate)
        assert got.steps == list(range(100))
        assert got.values == pytest.approx(values, rel=1e-12), aggregate
        (multi,) = client.metric_histories(["rep"], ["loss"], aggregate=aggregate)
        assert multi.steps == list(range(100))
        assert multi.values == pytest.approx(values, rel=1e-12), aggregate
    envelope = client.rank_envelope("rep", "loss", max_points=100)
    assert envelope.mean == pytest.approx(want["mean"], rel=1e-12)
    assert envelope.min == want["min"] and envelope.max == want["max"]
    assert envelope.min_rank[10:20] == [2] * 10 and envelope.min_rank[:10] == [0] * 10
