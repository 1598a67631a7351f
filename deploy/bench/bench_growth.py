"""How every cost grows (standalone; ``make bench`` runs it, ``BENCH=growth``): medians.

One embedded ClickHouse (chdb, temp dir, removed at the end), one database per size so
each size's disk cost is read from ``system.parts``; data is generated inside ClickHouse
(``INSERT ... SELECT FROM numbers()``, columnar, straight into the real tables and their
materialized views), and every query goes through the real service layer
(:class:`QueryService` over :class:`ClickHouseRepository`). Run ids are 32 hex digits
spread over the key space as uuid4 hex ids are, so an experiment's runs are scattered
through every run_id-ordered table, as in a real store.

Dimensions (one table each):

* one series (one run, one key, one rank) downsampled to 1,000 points: 1M, 10M, 100M; the
  whole series and zoomed to its middle half (a step range), with what it reads (the points,
  or metric_blocks' pre-aggregated blocks) and one scan of its points as the baseline.
* SearchRuns, two clauses + order by a metric (10 params, 5 metrics x 2 steps a run):
  10k, 100k, 1M runs, all in the experiment searched; and where its time goes: each
  subquery of the compiled SQL alone, every column computed (the runs' head rows, their
  status, one pass per table the clauses name), and the whole less their sum (joining them
  on run_id, filtering, ordering).
* the same search inside a fixed 5,000-run experiment in stores that also hold 100k and
  1M other runs: the search scoped by the experiment column (its tables' by_experiment
  projections) and, measured in the same run, the scope before it, the experiment's run
  ids read from run_experiments (``run_id IN (...)``; the compiled SQL rewritten, this
  bench only). Both searches again once half of the big experiment's runs are archived
  (the default view leaves them out).
* cross-rank mean/min/max of one key (GetMetricHistory aggregate, every step): 64 and
  1,024 ranks x 10k steps.
* ingest from 1, 64, 1,024 producers at once: pre-encoded metric events (10 keys x 100
  steps each, one RunStarted per producer) interleaved as a consumer polls them, through
  the consumer's own chain (codec.decode -> validate -> RowBatch -> ClickHouseSink.write,
  batches of 200,000 rows as the pipeline seals them), without Kafka; points/s, process
  CPU per point, RSS after each size.
* CPU per point: the SDK (Run.log of 10 keys + the sender thread encoding and writing
  the spool; process CPU, measured before chdb is loaded) and the consumer chain above,
  split into its Python part and its inserts (the embedded engine runs in the consumer's
  process, so its insert CPU counts there); and what the views on metrics cost that chain
  (64 producers into a store with every view, one without metric_blocks_mv and one
  without any, alternated).

Environment: BENCH_GROWTH_MAX (largest size run, e.g. 10M; default 100M = every size),
BENCH_GROWTH_REPEAT (7), BENCH_GROWTH_INGEST_POINTS (2,000,000 per producer count),
BENCH_GROWTH_SDK_POINTS (1,000,000), BENCH_GROWTH_ONLY (a comma list of series, search,
ranks, ingest; default all).
"""

# ruff: noqa: S608, B023
# (SQL here is built from constants and generated names only; every lambda runs within its
# loop iteration.)
from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import clickhouse_connect
from bench_query import ORDER_BY, T0, median_s  # type: ignore[import-not-found]

from runstream.proto import tables
from runstream.query import search_sql
from runstream.query.downsample import MIN_BLOCKS, bucket_width

SEARCH_FILTER = "params.p1 > 0.5 and metrics.m2 > 0.3"
SCOPED_RUNS = 5_000
KEYS = [f"k{i}" for i in range(10)]


def parse_size(text: str) -> int:
    text = text.strip().upper().replace(",", "").replace("_", "")
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


MAX = parse_size(os.environ.get("BENCH_GROWTH_MAX", "100M"))
REPEAT = int(os.environ.get("BENCH_GROWTH_REPEAT", "7"))
INGEST_POINTS = int(os.environ.get("BENCH_GROWTH_INGEST_POINTS", "2000000"))
SDK_POINTS = int(os.environ.get("BENCH_GROWTH_SDK_POINTS", "1000000"))
ONLY = {d for d in os.environ.get("BENCH_GROWTH_ONLY", "").split(",") if d}


def wanted(dimension: str) -> bool:
    return not ONLY or dimension in ONLY


def fmt(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale:,}{unit}"
    return f"{n:,}"


def run_id_sql(prefix: str) -> str:
    """A run id per ``number``: 32 hex digits, spread like uuid4 hex (constants only)."""
    return f"lower(hex(MD5(concat('{prefix}', toString(number)))))"


def fill_runs_sql(ch: Any, db: str, n: int, experiment: str, prefix: str,
                  near: bool = False) -> None:
    """``n`` runs as bench_query.fill_runs makes them (10 params, 5 metrics x 2 steps, half
    FINISHED), generated by ClickHouse; ``near``: ids ``<prefix>00000``... (adjacent)."""
    rid = (f"concat('{prefix}', leftPad(toString(number), 6, '0'))" if near
           else run_id_sql(prefix))
    ch.command(f"INSERT INTO `{db}`.runs (run_id, rank, experiment, name, world_size,"
               f" producer_id, seq, ts_ms) SELECT {rid}, 0, '{experiment}', {rid}, 1, 'p', 1,"
               f" {T0} + number FROM numbers({n})")
    ch.command(f"INSERT INTO `{db}`.run_status (run_id, rank, experiment, status, producer_id,"
               f" seq, ts_ms) SELECT {rid}, 0, '{experiment}',"
               f" if(number % 2, 'FINISHED', 'RUNNING'), 'p', 2, {T0} + number + 1"
               f" FROM numbers({n})")
    ch.command(f"INSERT INTO `{db}`.{tables.PARAMS.name} (run_id, key, value, type, rank,"
               f" producer_id, seq, ts_ms, experiment) SELECT {rid}, concat('p', toString(p)),"
               f" toString(((number * (p + 3)) % 97) / 100), 'FLOAT', 0, 'p', 3, {T0},"
               f" '{experiment}' FROM numbers({n}) ARRAY JOIN range(10) AS p")
    ch.command(f"INSERT INTO `{db}`.metrics (run_id, key, rank, step, value, ts_ms,"
               f" producer_id, seq, idx, experiment) SELECT {rid}, concat('m', toString(m)), 0,"
               f" step, ((number * (m + 7)) % 1000) / 1000 + step, {T0}, 'p', 4, m * 2 + step,"
               f" '{experiment}'"
               f" FROM numbers({n}) ARRAY JOIN range(5) AS m ARRAY JOIN [0, 1] AS step")


def fill_series_sql(ch: Any, db: str, run_id: str, ranks: int, steps: int) -> None:
    """One key ``loss`` of one run: ``ranks`` x ``steps`` points (rank-major in time)."""
    ch.command(f"INSERT INTO `{db}`.runs (run_id, rank, experiment, world_size, producer_id,"
               f" seq, ts_ms) SELECT '{run_id}', number, 'x', {ranks}, 'p', 1, {T0}"
               f" FROM numbers({ranks})")
    ch.command(f"INSERT INTO `{db}`.metrics (run_id, key, rank, step, value, ts_ms,"
               f" producer_id, seq, idx) SELECT '{run_id}', 'loss', number % {ranks} AS r,"
               f" intDiv(number, {ranks}) AS s,"
               f" 1 / (1 + s) + r * 1e-3 + if(s % 99991 = 0, 5, 0), {T0} + s,"
               f" concat('p', toString(r)), 9, s FROM numbers({ranks * steps})"
               f" SETTINGS max_insert_threads = 2")
    ch.command(f"OPTIMIZE TABLE `{db}`.metrics FINAL")


def make_db(ch: Any, db: str) -> None:
    for statement in tables.all_ddl(db):
        ch.command(statement)


def disk_bytes(ch: Any) -> dict[str, int]:
    return {d: int(b) for d, b in ch.query(
        "SELECT database, sum(bytes_on_disk) FROM system.parts WHERE active"
        " GROUP BY database").result_rows}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return f"{n:,.1f} GiB"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Table:
    """One dimension's table: rows of (size, cells...)."""

    def __init__(self, title: str, header: list[str]) -> None:
        self.title, self.header = title, header
        self.rows: list[list[str]] = []

    def add(self, *cells: str) -> None:
        self.rows.append(list(cells))
        print("  " + " | ".join(cells), flush=True)

    def render(self) -> str:
        widths = [max(len(r[i]) for r in (self.header, *self.rows))
                  for i in range(len(self.header))]
        line = lambda r: "| " + " | ".join(  # noqa: E731
            c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        out = [f"\n{self.title}", line(self.header),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        return "\n".join([*out, *(line(r) for r in self.rows)])


#: The scope before the experiment column: the experiments' run ids from run_experiments.
RUN_ID_SCOPE = search_sql.EXPERIMENT_RUNS


@contextmanager
def run_id_scoped_search() -> Iterator[None]:
    """SearchRuns' SQL with the scope it had before the experiment column (RUN_ID_SCOPE
    where the search scopes, no filter where it does not), for the before/after rows of
    this bench only."""
    from dataclasses import replace

    from runstream.query import repository

    original = repository.compile_search

    def compile_run_id_scoped(*args: Any, **kwargs: Any) -> search_sql.CompiledSearch:
        c = original(*args, **kwargs)
        sql = c.sql.replace(search_sql.SCOPE, RUN_ID_SCOPE).replace(search_sql.PREFILTER, "1")
        if "experiment = ''" in sql:
            raise SystemExit("the run_id-scoped SQL still filters on the experiment column")
        return replace(c, sql=sql)

    repository.compile_search = compile_run_id_scoped
    try:
        yield
    finally:
        repository.compile_search = original


@contextmanager
def captured_searches() -> Iterator[list[Any]]:
    """Every CompiledSearch the repository runs meanwhile, in order (this bench only)."""
    from runstream.query import repository

    seen: list[Any] = []
    original = repository.compile_search

    def capture(*args: Any, **kwargs: Any) -> Any:
        seen.append(original(*args, **kwargs))
        return seen[-1]

    repository.compile_search = capture
    try:
        yield seen
    finally:
        repository.compile_search = original


#: A subquery of the compiled search: its body and alias (``FROM (`` / ``JOIN (`` at a line
#: end, ``) AS x`` at a line start: search_sql's layout).
SUBQUERY = re.compile(r"\(\n(.*?)\n\) AS (\w+)", re.S)
#: What each subquery of the search reads (search_sql's aliases).
PASSES = {"r": "runs (head row)", "s": "run_status", "m": "metric_summaries pass",
          "p": "param_values pass", "x": "annotations (archived)"}


def search_passes(dsn: str, db: str, compiled: Any) -> dict[str, float]:
    """Median seconds of each subquery of ``compiled`` alone, every column of it computed
    (a hash of its rows: a bare count() lets ClickHouse drop the aggregates nothing reads,
    which made the metric and param passes look a third of their cost), with the search's
    settings, in database ``db``, by alias."""
    ch = clickhouse_connect.get_client(dsn=dsn, database=db)
    settings = compiled.sql[compiled.sql.rindex("SETTINGS"):]
    out = {}
    for body, alias in SUBQUERY.findall(compiled.sql):
        out[alias] = median_s(lambda: ch.query(f"SELECT count(), sum(cityHash64(*))"
                                               f" FROM ({body}) {settings}",
                                               parameters=compiled.parameters).result_rows,
                              REPEAT)
    ch.close()
    return out


def service(dsn: str, db: str) -> Any:
    from runstream.query.repository import ClickHouseRepository
    from runstream.query.service import QueryService

    return QueryService(ClickHouseRepository(dsn, db))


def timed_fill(what: str, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    s = time.perf_counter() - t
    print(f"  filled {what} in {s:.1f} s", flush=True)
    return s


# --- dimensions ---------------------------------------------------------------------------


def bench_series(ch: Any, dsn: str, disk: dict[str, str]) -> Table:
    t = Table("One series downsampled to 1,000 points (GetMetricHistory max_points=1000)",
              ["points", "median", "reads", "zoomed to its middle half", "one scan of its"
               " points (same run)", "target", "disk (db)", "fill"])
    targets = {10_000_000: "<= 150 ms", 100_000_000: "<= 1 s"}
    for n in (1_000_000, 10_000_000, 100_000_000):
        if n > MAX:
            continue
        db = f"g_series_{fmt(n).lower()}"
        make_db(ch, db)
        fill_s = timed_fill(f"{fmt(n)}-point series", lambda: fill_series_sql(ch, db, "s", 1, n))
        svc = service(dsn, db)
        got = len(svc.metric_history("s", "loss", max_points=1000).steps)
        s = median_s(lambda: svc.metric_history("s", "loss", max_points=1000), REPEAT)
        zoom = median_s(lambda: svc.metric_history("s", "loss", max_points=1000,
                                                   start_step=n // 4 + 7,
                                                   end_step=3 * n // 4 + 11), REPEAT)
        # The baseline: the least a downsampling that reads the points pays, one pass
        # reading step and value of every point (min/max per 1,000 buckets, no LTTB). Above
        # 4 blocks a bucket, the service reads metric_blocks instead.
        reads = ("metric_blocks" if bucket_width(0, n - 1, 1000)
                 >= MIN_BLOCKS * tables.BLOCK_STEPS else "points")
        floor = median_s(lambda: ch.query(
            f"SELECT intDiv(step * 1000, {n}) AS b, min(value), max(value) FROM `{db}`.metrics"
            " WHERE run_id = 's' AND key = 'loss' AND rank = 0 GROUP BY b").result_rows, REPEAT)
        svc.close()
        disk[db] = f"{fmt(n)}-point series"
        t.add(fmt(n), f"{s * 1000:,.0f} ms ({got} pts)", reads, f"{zoom * 1000:,.0f} ms",
              f"{floor * 1000:,.0f} ms",
              targets.get(n, ""),
              human_bytes(disk_bytes(ch).get(db, 0)), f"{fill_s:.0f} s")
    return t


def bench_search(ch: Any, dsn: str, disk: dict[str, str]) -> tuple[Table, Table, Table]:
    t = Table("SearchRuns, 2 clauses + order by a metric, all runs in the experiment searched"
              f" (`{SEARCH_FILTER}`, order by {ORDER_BY[0]}, page 100)",
              ["runs", "now", "run_id scope (same run)", "half of them archived", "target",
               "disk (db)", "fill"])
    parts = Table("Where that search's time goes: each subquery alone (every column computed),"
                  " their sum, and the whole less that sum (joining them on run_id, the"
                  " filter, the order and the page; the query runs the subqueries two at a"
                  " time, so this can be below zero)",
                  ["runs", "whole", *(f"{a}: {what}" for a, what in PASSES.items()),
                   "sum of the subqueries", "whole less the sum"])
    scoped = Table(f"The same search inside a fixed {SCOPED_RUNS:,}-run experiment, in stores"
                   " of other runs (ids spread like uuid4 hex; ids adjacent in the key space)",
                   ["other runs in the store", "spread: now", "spread: run_id scope",
                    "adjacent: now", "adjacent: run_id scope", "spread: half the others"
                    " archived", "target", "matched"])
    for n in (10_000, 100_000, 1_000_000):
        if n > MAX:
            continue
        db = f"g_runs_{fmt(n).lower()}"
        make_db(ch, db)

        def fill() -> None:
            fill_runs_sql(ch, db, n, "bench", "b")
            fill_runs_sql(ch, db, SCOPED_RUNS, "exp5k", "e")
            # The same experiment with run ids next to each other in the key space (ids
            # sharing a long prefix, as bench_query's are), for comparison.
            fill_runs_sql(ch, db, SCOPED_RUNS, "near5k", "n", near=True)
            for table in ("metrics", "metric_summaries", tables.PARAMS.name):
                ch.command(f"OPTIMIZE TABLE `{db}`.{table} FINAL")

        fill_s = timed_fill(f"{fmt(n)} + {SCOPED_RUNS:,} runs", fill)
        disk[db] = f"{fmt(n)} + {SCOPED_RUNS:,} runs"
        svc = service(dsn, db)

        def search(experiment: str) -> Callable[[], Any]:
            return lambda: svc.search_runs(experiment, page_size=100,
                                           filter_text=SEARCH_FILTER, order_by=ORDER_BY)

        # Before and after alternate per size, so load on the machine hits both alike.
        with captured_searches() as compiled:
            now_all = median_s(search("bench"), REPEAT)
        passes = search_passes(dsn, db, compiled[-1])
        sum_s = sum(passes.values())
        parts.add(fmt(n), f"{now_all * 1000:,.0f} ms",
                  *(f"{passes[a] * 1000:,.0f} ms" if a in passes else "-" for a in PASSES),
                  f"{sum_s * 1000:,.0f} ms", f"{(now_all - sum_s) * 1000:,.0f} ms")
        now_5k = median_s(search("exp5k"), REPEAT)
        now_near = median_s(search("near5k"), REPEAT)
        page_now = [r.run_id for e in ("exp5k", "near5k") for r in search(e)().runs]
        with run_id_scoped_search():
            old_all = median_s(search("bench"), REPEAT)
            old_5k = median_s(search("exp5k"), REPEAT)
            old_near = median_s(search("near5k"), REPEAT)
            page_old = [r.run_id for e in ("exp5k", "near5k") for r in search(e)().runs]
        if page_now != page_old:
            raise SystemExit(f"scoped search differs from the old SQL at {n:,} runs")
        # Archive every other run of the big experiment (what `runstream archive` writes):
        # the default view leaves them out, and the fixed experiment's search should not
        # pay for them.
        ch.command(f"INSERT INTO `{db}`.annotations (run_id, experiment, archive, user, host,"
                   f" producer_id, seq, ts_ms) SELECT {run_id_sql('b')}, 'bench', 'ARCHIVE',"
                   f" 'bench', 'bench', 'cli', 1, {T0 + n} FROM numbers({n})"
                   " WHERE number % 2 = 0")
        archived_all = median_s(search("bench"), REPEAT)
        archived_5k = median_s(search("exp5k"), REPEAT)
        svc.close()
        t.add(fmt(n), f"{now_all * 1000:,.0f} ms", f"{old_all * 1000:,.0f} ms",
              f"{archived_all * 1000:,.0f} ms",
              "<= 300 ms" if n == 1_000_000 else "", human_bytes(disk_bytes(ch).get(db, 0)),
              f"{fill_s:.0f} s")
        scoped.add(fmt(n), f"{now_5k * 1000:,.0f} ms", f"{old_5k * 1000:,.0f} ms",
                   f"{now_near * 1000:,.0f} ms", f"{old_near * 1000:,.0f} ms",
                   f"{archived_5k * 1000:,.0f} ms",
                   "same time at every size", f"{len(page_now) // 2} (same page)")
    return t, parts, scoped


def bench_ranks(ch: Any, dsn: str, disk: dict[str, str]) -> Table:
    t = Table("Cross-rank aggregate of one key, every step (GetMetricHistory aggregate=...)",
              ["ranks x steps", "mean", "min", "max", "mean, a first request (nothing kept)",
               "floor: one GROUP BY step", "target", "disk (db)"])
    for ranks in (64, 1024):
        if ranks * 10_000 > MAX:
            continue
        db = f"g_ranks_{ranks}"
        make_db(ch, db)
        timed_fill(f"{ranks} ranks x 10k steps", lambda: fill_series_sql(ch, db, "r", ranks,
                                                                         10_000))
        disk[db] = f"{ranks} ranks x 10k steps"
        svc = service(dsn, db)
        cells = []
        for agg in ("mean", "min", "max"):
            got = len(svc.metric_history("r", "loss", aggregate=agg).steps)
            if got != 10_000:
                raise SystemExit(f"aggregate {agg} over {ranks} ranks gave {got} steps")
            s = median_s(lambda: svc.metric_history("r", "loss", aggregate=agg), REPEAT)
            cells.append(f"{s * 1000:,.0f} ms")
        # The columns above may reuse a check of suspect ranks' points (kept while the
        # series' parts are the same; this fill has no suspect, so each request reads the
        # summaries alone); a first request keeps nothing from before.
        repo = svc.repository

        def first_request() -> None:
            repo._repeated.clear()
            svc.metric_history("r", "loss", aggregate="mean")

        cells.append(f"{median_s(first_request, REPEAT) * 1000:,.0f} ms")
        # Where the time goes: one pass over every point, grouped by step (no dedup).
        floor = median_s(lambda: ch.query(
            f"SELECT step, avg(value) FROM `{db}`.metrics WHERE run_id = 'r' AND key = 'loss'"
            " GROUP BY step").result_rows, REPEAT)
        cells.append(f"{floor * 1000:,.0f} ms")
        svc.close()
        t.add(f"{ranks:,} x 10k", *cells, "<= 300 ms" if ranks == 1024 else "",
              human_bytes(disk_bytes(ch).get(db, 0)))
    return t


def encoded_events(producers: int, points: int) -> list[bytes]:
    """Every producer's RunStarted, then metric events of 10 keys x 100 steps, interleaved
    across producers as a consumer polling many partitions sees them."""
    from runstream.batch import fill_batch
    from runstream.proto import codec
    from runstream.proto.v1 import events_pb2 as pb

    per = max(1, points // producers)
    steps = max(1, per // len(KEYS))
    out: list[list[bytes]] = []
    for p in range(producers):
        run_id, rank = f"ingest{p // 8:05d}", p % 8  # 8 ranks a run
        env = dict(run_id=run_id, experiment="ingest", rank=rank, world_size=8,
                   producer_id=f"prod{p}", node="n")
        events = []
        e = pb.RunEvent(seq=1, ts_ms=T0, **env)  # type: ignore[arg-type]
        e.run_started.name = run_id
        events.append(codec.encode(e))
        for seq, s0 in enumerate(range(0, steps, 100), start=2):
            e = pb.RunEvent(seq=seq, ts_ms=T0 + s0, **env)  # type: ignore[arg-type]
            n = min(100, steps - s0)
            fill_batch(e.metrics, [k for _ in range(n) for k in KEYS],
                       [s for s in range(s0, s0 + n) for _ in KEYS],
                       [s * 1e-3 + i for s in range(s0, s0 + n) for i in range(len(KEYS))],
                       [T0 + s for s in range(s0, s0 + n) for _ in KEYS])
            events.append(codec.encode(e))
        out.append(events)
    longest = max(len(e) for e in out)
    return [events[i] for i in range(longest) for events in out if i < len(events)]


def consume(sink: Any, messages: list[bytes]) -> tuple[int, float]:
    """The consumer's chain on ``messages``: decode -> validate -> batch -> insert; returns
    (points, process CPU seconds spent inside the inserts). The inserts are synchronous,
    so that CPU is the embedded engine's (and the driver's) alone."""
    from runstream.consumer.rows import RowBatch
    from runstream.proto import codec

    batch, n, points, insert_cpu = RowBatch(), 0, 0, 0.0

    def write() -> None:
        nonlocal insert_cpu
        cpu = time.process_time()
        sink.write(batch, f"bench-{id(messages)}-{n}")
        insert_cpu += time.process_time() - cpu

    for data in messages:
        batch.add(codec.decode(data))
        if batch.rows >= 200_000:
            points += batch.points
            write()
            batch, n = RowBatch(), n + 1
    if batch.rows:
        points += batch.points
        write()
    return points, insert_cpu


def bench_ingest(ch: Any, dsn: str, disk: dict[str, str]) -> tuple[Table, float]:
    from runstream.consumer.factories import connect_clickhouse
    from runstream.consumer.sink import ClickHouseSink

    t = Table(f"Ingest, producers at once ({fmt(INGEST_POINTS)} points each size; consumer"
              " chain decode -> validate -> batch -> insert, one process, no Kafka)",
              ["producers", "points/s", "consumer CPU/point", "of which the inserts",
               "RSS after", "target"])
    cpu_per_point, insert_per_point = [], []
    for producers in (1, 64, 1024):
        db = f"g_ingest_{producers}"
        client = connect_clickhouse(dsn, db)
        sink = ClickHouseSink(client, db)
        sink.ensure_schema()
        messages = encoded_events(producers, INGEST_POINTS)
        consume(sink, encoded_events(producers, 50_000))  # warm-up: first inserts, imports
        rates, cpus, inserts = [], [], []
        for _ in range(3):
            ch.command(f"TRUNCATE TABLE `{db}`.metrics")
            wall, cpu = time.perf_counter(), time.process_time()
            points, insert_cpu = consume(sink, messages)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rates.append(points / wall)
            cpus.append(cpu / points)
            inserts.append(insert_cpu / points)
        del messages
        disk[db] = f"ingest, {producers} producers"
        cpu_per_point.append(statistics.median(cpus))
        insert_per_point.append(statistics.median(inserts))
        t.add(f"{producers:,}", f"{statistics.median(rates):,.0f}",
              f"{statistics.median(cpus) * 1e6:.2f} us",
              f"{statistics.median(inserts) * 1e6:.2f} us", human_bytes(rss_bytes()),
              ">= 1M points/s, RSS flat" if producers == 1024 else "")
        client.close()
    return t, statistics.median(cpu_per_point), statistics.median(insert_per_point)


#: The views fed by every insert into metrics (tables.VIEWS).
METRICS_VIEWS = tuple(v.name for v in tables.VIEWS if v.source == tables.METRICS.name)


def bench_blocks_cost(dsn: str) -> Table:
    """What the views on metrics cost an insert, metric_blocks_mv (the downsampling's
    pre-aggregated blocks) on its own: the consumer chain at 64 producers into a store with
    every view, one without metric_blocks_mv and one without any view on metrics (dropped),
    alternated, medians of 5."""
    from runstream.consumer.factories import connect_clickhouse
    from runstream.consumer.sink import ClickHouseSink

    t = Table("What the views on metrics cost at ingest (64 producers, consumer chain)",
              ["store", "consumer CPU/point", "of which the inserts", "points/s"])
    messages = encoded_events(64, INGEST_POINTS)
    stores = {"every view": (), "without metric_blocks_mv": (f"{tables.METRIC_BLOCKS.name}_mv",),
              f"without any view on metrics ({', '.join(METRICS_VIEWS)})": METRICS_VIEWS}
    runs: dict[str, tuple[Any, Any, list[float], list[float], list[float]]] = {}
    for i, (name, dropped) in enumerate(stores.items()):
        db = f"g_views_{i}"
        client = connect_clickhouse(dsn, db)
        sink = ClickHouseSink(client, db)
        sink.ensure_schema()
        for view in dropped:
            client.command(f"DROP VIEW `{db}`.`{view}`")
        consume(sink, encoded_events(64, 50_000))  # warm-up
        runs[name] = (client, sink, [], [], [])
    for _ in range(5):
        for client, sink, cpus, inserts, rates in runs.values():
            client.command("TRUNCATE TABLE metrics")
            wall, cpu = time.perf_counter(), time.process_time()
            points, insert_cpu = consume(sink, messages)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            cpus.append(cpu / points)
            inserts.append(insert_cpu / points)
            rates.append(points / wall)
    for name, (client, _, cpus, inserts, rates) in runs.items():
        t.add(name, f"{statistics.median(cpus) * 1e6:.2f} us",
              f"{statistics.median(inserts) * 1e6:.2f} us", f"{statistics.median(rates):,.0f}")
        client.command(f"DROP DATABASE `{client.database}`")
        client.close()
    return t


def sdk_cpu_per_point(tmp: Path) -> float:
    """Process CPU of Run.log (10 keys a call) + the sender thread (encode, spool write)
    per point, from init to finish; median of 3."""
    import runstream

    out = []
    for i in range(3):
        spool = tmp / f"sdk{i}" / "spool"
        spool.mkdir(parents=True)
        cpu = time.process_time()
        run = runstream.init("bench", spool_dir=spool, system_metrics_s=0,
                             environ={"RUNSTREAM_HOME": str(spool.parent)})
        log = run.log
        for step in range(SDK_POINTS // len(KEYS)):
            x = step * 1e-3
            log({k: x for k in KEYS}, step=step)
        run.finish(timeout_s=120)
        out.append((time.process_time() - cpu) / SDK_POINTS)
        shutil.rmtree(spool.parent)
    return statistics.median(out)


def main() -> int:
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="rs-growth-"))
    try:
        sdk = sdk_cpu_per_point(home) if wanted("ingest") else 0.0  # before chdb loads
        if sdk:
            print(f"SDK CPU per point (Run.log of 10 keys + sender -> spool): "
                  f"{sdk * 1e6:.2f} us", flush=True)
        dsn = f"chdb://{home}/chdb"
        ch = clickhouse_connect.get_client(dsn=dsn)
        disk: dict[str, str] = {}
        out: list[Table] = []
        if wanted("series"):
            out.append(bench_series(ch, dsn, disk))
        if wanted("search"):
            out.extend(bench_search(ch, dsn, disk))
        if wanted("ranks"):
            out.append(bench_ranks(ch, dsn, disk))
        if wanted("ingest"):
            ingest, consumer, inserts = bench_ingest(ch, dsn, disk)
            out.append(ingest)
            cpu = Table("CPU per point", ["part", "CPU/point", "target"])
            cpu.add("SDK: Run.log + sender (encode, spool)", f"{sdk * 1e6:.2f} us", "")
            cpu.add("consumer: decode + validate + batch + insert", f"{consumer * 1e6:.2f} us",
                    "")
            cpu.add("  of which decode + validate + batch (Python)",
                    f"{(consumer - inserts) * 1e6:.2f} us", "")
            cpu.add("  of which the inserts (the embedded engine: tables and their views)",
                    f"{inserts * 1e6:.2f} us", "")
            cpu.add("total (broker not included: no Kafka here)",
                    f"{(sdk + consumer) * 1e6:.2f} us", "<= 1 us")
            out.append(cpu)
            out.append(bench_blocks_cost(dsn))
        sizes = disk_bytes(ch)
        d = Table("Disk per size (system.parts bytes_on_disk, after OPTIMIZE FINAL where"
                  " noted in the fill)", ["database", "holds", "on disk"])
        for db, what in disk.items():
            d.add(db, what, human_bytes(sizes.get(db, 0)))
        ch.close()
        du = sum(f.stat().st_size for f in (home / "chdb").rglob("*") if f.is_file())
        d.add("(whole chdb dir, du)", "everything above", human_bytes(du))
        out.append(d)
        for table in out:
            print(table.render())
        print(f"\nBENCH_GROWTH_MAX={fmt(MAX)}, repeats {REPEAT}; total "
              f"{time.perf_counter() - started:.0f} s")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
