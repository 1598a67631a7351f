"""Downsampling read from metric_blocks (pre-aggregated blocks of steps) on the real engine:
the same buckets as the points give, the block table read instead of the points, and an
older store's points aggregated at consumer start."""

# ruff: noqa: B023
# (every lambda here runs within its loop iteration: _reference calls it at once)

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from runstream.consumer.sink import ClickHouseSink
from runstream.proto import tables
from runstream.query import repository
from runstream.query.downsample import Bucket, bucket_grid
from runstream.query.repository import ClickHouseRepository
from runstream.query.service import QueryService
from tests.factories import T0, insert, start_rank, store_of

BLOCK = tables.BLOCK_STEPS


@contextmanager
def from_points() -> Iterator[None]:
    """Reads inside are answered from the points, as before the blocks (the reference)."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(repository, "_blocks_serve", lambda *_: False)
        yield


def _series(run_id: str, rank: int, steps: range, seq: int) -> list[dict[str, Any]]:
    """Noisy points with a spike per rank, a NaN every 997 steps, an inf, two values whose
    sum overflows, and timestamps that do not follow the steps."""
    rows = []
    for i, s in enumerate(steps):
        value = math.sin(s * 0.37) + rank + (s % 13) * 1e-3
        if s == 23_457 + rank:
            value = 100.0 if rank == 0 else -50.0
        elif s % 997 == 0:
            value = math.nan
        elif s == 40_011:
            value = math.inf
        elif s in (50_003, 50_004) and rank == 1:
            value = 1.7e308
        rows.append({"run_id": run_id, "key": "loss", "rank": rank, "step": s, "value": value,
                     "ts_ms": T0 + (s * 7919) % 100_003, "producer_id": f"p{rank}", "seq": seq,
                     "idx": i})
    return rows


def _seed(ch: Any, run_id: str = "long") -> None:
    start_rank(ch, run_id, 0, 2, T0)
    for rank in (0, 1):
        # Several inserts per rank, cut inside blocks: a block's states come from several
        # parts and are merged by the read.
        for cut in (range(1_500, 20_001), range(20_001, 38_777), range(38_777, 61_500)):
            insert(ch, tables.METRICS, _series(run_id, rank, cut, seq=10 + cut.start))
    # Steps logged again (a resumed attempt): more points in those buckets, away from the
    # buckets' first and last steps (ties there pick either point, on both paths).
    insert(ch, tables.METRICS, _series(run_id, 0, range(30_100, 30_200), seq=99))


@pytest.fixture
def repo(ch: Any, chdb_dsn: str, ch_database: str) -> Iterator[ClickHouseRepository]:
    r = ClickHouseRepository(chdb_dsn, ch_database)
    yield r
    r.close()


def _reads(repo: ClickHouseRepository) -> list[str]:
    """Records the SQL of every query the repository sends from now on."""
    sent: list[str] = []
    query = repo._query

    def spy(sql: str, parameters: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(sql)
        return query(sql, parameters, *args, **kwargs)

    repo._query = spy  # type: ignore[method-assign]
    return sent


def _reference(read: Callable[[], Any]) -> Any:
    with from_points():
        return read()


def _same(blocks: list[Bucket], points: list[Bucket]) -> None:
    assert len(blocks) == len(points) and blocks
    for b, p in zip(blocks, points, strict=True):
        exact = (b.rank, b.bucket, b.count, b.min_value, b.max_value, b.at_min, b.at_max,
                 b.first, b.last)
        assert exact == (p.rank, p.bucket, p.count, p.min_value, p.max_value, p.at_min,
                         p.at_max, p.first, p.last)
        assert b.avg_step == pytest.approx(p.avg_step, rel=1e-12)
        assert b.avg_value == pytest.approx(p.avg_value, rel=1e-9)


def test_buckets_of_whole_blocks_are_read_from_the_blocks_and_equal_the_points(
    ch: Any, repo: ClickHouseRepository
) -> None:
    _seed(ch)
    sent = _reads(repo)
    lo, hi, count = repo.series_range("long", "loss", (), "")
    assert "FROM metric_blocks" in sent[-1] and "FROM metrics" not in sent[-1]
    assert (lo, hi, count) == _reference(lambda: repo.series_range("long", "loss", (), ""))
    assert (lo, hi) == (1_500, 61_499)
    first, width = bucket_grid(lo, hi, 10, BLOCK)
    assert (first, width) == (1_024, 6 * BLOCK)
    blocks = repo.buckets("long", "loss", (), "", first, width)
    assert "FROM metric_blocks" in sent[-1] and "FROM metrics" not in sent[-1]
    points = _reference(lambda: repo.buckets("long", "loss", (), "", first, width))
    assert "FROM metrics" in sent[-1]
    _same(blocks, points)
    by_rank = {r: [b for b in blocks if b.rank == r] for r in (0, 1)}
    assert max(b.max_value for b in by_rank[0]) == math.inf  # step 200,011
    assert min(b.min_value for b in by_rank[1]) == -50.0
    assert any(b.avg_value == pytest.approx(1.7e308 / b.count * 2, rel=1e-3) and
               b.max_value == 1.7e308 for b in by_rank[1])  # the overflowing sum's mean
    # One rank; and a grid that is not of whole blocks reads the points.
    _same(repo.buckets("long", "loss", (1,), "", first, width),
          _reference(lambda: repo.buckets("long", "loss", (1,), "", first, width)))
    repo.buckets("long", "loss", (), "", first + 1, width)
    assert "FROM metrics" in sent[-1]


def test_a_downsampled_history_keeps_its_spikes_and_several_series_mix_both_reads(
    ch: Any, repo: ClickHouseRepository
) -> None:
    _seed(ch)
    insert(ch, tables.METRICS, _series("short", 0, range(0, 3_000), seq=1))
    svc = QueryService(repo)
    sent = _reads(repo)
    history = svc.metric_history("long", "loss", max_points=10)
    assert any("FROM metric_blocks" in sql for sql in sent)
    assert not any("FROM metrics" in sql for sql in sent)
    assert history.downsampled and 8 <= len(history.steps) // 2 <= 10  # two ranks
    assert 100.0 in history.values and -50.0 in history.values
    # Per bucket its extremes: the spike's bucket says so whichever point LTTB kept.
    assert max(history.max_values) == math.inf and min(history.min_values) == -50.0

    del sent[:]
    both = svc.metric_histories(["long", "short"], ["loss"], max_points=10)
    assert [h.run_id for h in both] == ["long", "short"]
    reads = " ".join(sent)
    assert "FROM metric_blocks" in reads and "FROM metrics" in reads  # short: 300 steps/bucket
    assert both[0].steps == history.steps and both[0].values == history.values
    ranges = repo.series_ranges(["long", "short"], ["loss"], (), "")
    assert ranges == _reference(lambda: repo.series_ranges(["long", "short"], ["loss"], (), ""))
    bounds = {s: bucket_grid(lo, hi, 10, BLOCK) for s, (lo, hi, _) in ranges.items()}
    got = repo.series_buckets(bounds, (), "")
    want = _reference(lambda: repo.series_buckets(bounds, (), ""))
    for series in bounds:
        _same(got[series], want[series])


def test_a_step_range_reads_the_blocks_inside_it_and_the_points_of_the_blocks_it_cuts(
    ch: Any, repo: ClickHouseRepository
) -> None:
    _seed(ch)
    svc = QueryService(repo)
    for steps in ((5_000, 52_345), (1_024, 61_439), (0, 10**12), (20_000, 20_500)):
        rng = repo.series_range("long", "loss", (), "", steps=steps)
        assert rng == _reference(lambda: repo.series_range("long", "loss", (), "", steps=steps))
        first, width = bucket_grid(rng[0], rng[1], 8, BLOCK)
        _same(repo.buckets("long", "loss", (), "", first, width, steps=steps),
              _reference(lambda: repo.buckets("long", "loss", (), "", first, width,
                                              steps=steps)))
        bounds = {("long", "loss"): (first, width)}
        _same(repo.series_buckets(bounds, (), "", steps=steps)[("long", "loss")],
              _reference(lambda: repo.series_buckets(bounds, (), "", steps=steps)
                         )[("long", "loss")])
        zoomed = svc.metric_history("long", "loss", max_points=8, start_step=steps[0],
                                    end_step=steps[1])
        assert zoomed.steps and min(zoomed.steps) >= steps[0] and max(zoomed.steps) <= steps[1]
        assert zoomed.total_points == rng[2]
    # The zoom on the spike keeps it.
    spike = svc.metric_history("long", "loss", max_points=8, start_step=10_000, end_step=50_000)
    assert 100.0 in spike.values


def test_an_insert_dropped_by_its_token_is_not_counted_in_the_blocks(
    ch: Any, repo: ClickHouseRepository
) -> None:
    rows = _series("tok", 0, range(0, 5_000), seq=1)
    data = [[r[c] for c in tables.METRICS.column_names if c != "experiment"] for r in rows]
    names = [c for c in tables.METRICS.column_names if c != "experiment"]
    for _ in range(2):  # the consumer's retry of the same batch: same token
        ch.insert(tables.METRICS.name, data, column_names=names,
                  settings={"insert_deduplication_token": "batch-1"})
    *_, count = repo.series_range("tok", "loss", (), "")
    assert count == sum(1 for r in rows if not math.isnan(r["value"])) == 4_994


def test_an_older_store_gets_its_points_aggregated_into_blocks_at_start(
    chdb_dsn: str, ch_database: str
) -> None:
    database = f"{ch_database}_noblocks"
    older = [s for s in tables.all_ddl(database) if "metric_blocks" not in s]
    with store_of(chdb_dsn, database, older) as ch:
        _seed(ch)
        assert not ch.query("SELECT name FROM system.tables WHERE database = {db:String}"
                            " AND name = 'metric_blocks'", parameters={"db": database}
                            ).result_rows
        ClickHouseSink(ch, database).ensure_schema()
        # Filled once: a second start copies nothing again, and new points go through the
        # view.
        ClickHouseSink(ch, database).ensure_schema()
        insert(ch, tables.METRICS, _series("long", 1, range(61_500, 62_000), seq=7))
        repo = ClickHouseRepository(chdb_dsn, database)
        try:
            lo, hi, count = repo.series_range("long", "loss", (), "")
            assert (lo, hi, count) == _reference(
                lambda: repo.series_range("long", "loss", (), ""))
            first, width = bucket_grid(lo, hi, 10, BLOCK)
            _same(repo.buckets("long", "loss", (), "", first, width),
                  _reference(lambda: repo.buckets("long", "loss", (), "", first, width)))
        finally:
            repo.close()
