"""Query service benchmark (standalone; `make bench` runs it): medians through real gRPC.

Fills an embedded ClickHouse (chdb, temp dir) directly with the consumer's tables
(column-oriented inserts), starts the query server on port 0 and measures with the real
Client: a 1M-point series downsampled to 1,000; full lossless export (the default call,
one ExportMetricHistory stream, next to the paged GetMetricHistory baseline); SearchRuns with a
two-clause filter ordered by a metric over 100k runs (10 params, 5 metrics each);
CompareRuns of 10 runs. MLflow (MlflowClient, sqlite store, temp dir) side by side in the
same run on the same data, at sizes it loads in reasonable time: a 100k-point series (full
history) and 5,000 runs (10 params, 5 metrics x 2 steps, half FINISHED) in their own
experiment, which Runstream also gets (filtered search ordered by a metric, unfiltered
listing); the ratio column is MLflow / Runstream. MLflow runs when it is installed (the bench
extra); BENCH_QUICK=1 skips it, and either way a line says so.
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import clickhouse_connect

from runstream.proto import tables
from runstream.query.client import Client
from runstream.query.limits import DEFAULT_HISTORY_PAGE_SIZE, MAX_HISTORY_PAGE_SIZE
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService

T0 = 1_700_000_000_000
SIDE_RUNS = 5_000  # the side-by-side sizes (MLflow takes ~17 minutes to load 100k runs)
SIDE_POINTS = 100_000
SIDE_EXPERIMENT = "bench5k"
# MLflow compares params as strings (=, !=, LIKE, ILIKE only), so the side-by-side filter
# uses LIKE on the param; both sides take the latest value of a metric.
SIDE_FILTER = "params.p1 LIKE '0.5%' and metrics.m2 > 0.3"
ORDER_BY = ["metrics.m0 DESC"]


class Row(NamedTuple):
    name: str
    value: float
    unit: str
    target: str
    ratio: float | None = None  # MLflow / Runstream (time), on MLflow's rows


def median_s(fn: Callable[[], Any], repeat: int = 7) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def insert_columns(ch: Any, table: tables.Table, columns: dict[str, list[Any]]) -> None:
    n = len(next(iter(columns.values())))
    zero = {"String": "", "UInt32": 0, "UInt64": 0, "Int64": 0, "Bool": False, "Float64": 0.0}
    data = []
    for name, ctype in table.columns:
        if name in columns:
            data.append(columns[name])
            continue
        base = ctype.split(" CODEC")[0].removeprefix("LowCardinality(").rstrip(")")
        if ctype.startswith("Map("):
            data.append([{}] * n)
        elif ctype.startswith("Array("):
            data.append([[]] * n)
        else:
            data.append([zero.get(base, "")] * n)
    ch.insert(table.name, data, column_names=list(table.column_names), column_oriented=True)


def param_value(i: int, p: int) -> str:
    return str((i * (p + 3)) % 97 / 100)


def metric_value(i: int, m: int, step: int) -> float:
    return ((i * (m + 7)) % 1000) / 1000 + step


def series_value(s: int) -> float:
    return 1.0 / (1 + s) + (5.0 if s % 99_991 == 0 else 0.0)


def fill_runs(ch: Any, ids: list[str], experiment: str) -> None:
    runs = len(ids)
    insert_columns(ch, tables.RUNS, {
        "run_id": ids, "rank": [0] * runs, "experiment": [experiment] * runs,
        "name": ids, "world_size": [1] * runs, "producer_id": ["p"] * runs,
        "seq": [1] * runs, "ts_ms": [T0 + i for i in range(runs)],
    })
    insert_columns(ch, tables.RUN_STATUS, {
        "run_id": ids, "rank": [0] * runs, "experiment": [experiment] * runs,
        "status": ["FINISHED" if i % 2 else "RUNNING" for i in range(runs)],
        "producer_id": ["p"] * runs, "seq": [2] * runs, "ts_ms": [T0 + i + 1 for i in range(runs)],
    })
    pk, pv, pr = [], [], []
    for p in range(10):
        pk += [f"p{p}"] * runs
        pv += [param_value(i, p) for i in range(runs)]
        pr += ids
    insert_columns(ch, tables.PARAMS, {
        "run_id": pr, "key": pk, "value": pv, "type": ["FLOAT"] * len(pk), "rank": [0] * len(pk),
        "producer_id": ["p"] * len(pk), "seq": [3] * len(pk), "ts_ms": [T0] * len(pk)})
    mk, mv, mr, ms = [], [], [], []
    for m in range(5):  # 5 metrics x 2 steps per run: the summaries carry the rest
        for step in (0, 1):
            mk += [f"m{m}"] * runs
            mv += [metric_value(i, m, step) for i in range(runs)]
            mr += ids
            ms += [step] * runs
    insert_columns(ch, tables.METRICS, {
        "run_id": mr, "key": mk, "rank": [0] * len(mk), "step": ms, "value": mv,
        "ts_ms": [T0] * len(mk), "producer_id": ["p"] * len(mk), "seq": [4] * len(mk),
        "idx": list(range(len(mk)))})


def fill_series(ch: Any, run_id: str, n: int) -> None:
    insert_columns(ch, tables.METRICS, {
        "run_id": [run_id] * n, "key": ["loss"] * n, "rank": [0] * n, "step": list(range(n)),
        "value": [series_value(s) for s in range(n)],
        "ts_ms": [T0 + s for s in range(n)], "producer_id": ["p"] * n, "seq": [9] * n,
        "idx": list(range(n))})
    insert_columns(ch, tables.RUNS, {"run_id": [run_id], "rank": [0], "experiment": ["x"],
                                     "producer_id": ["p"], "seq": [1], "ts_ms": [T0]})


def fill(ch: Any, runs: int, series_points: int) -> None:
    fill_runs(ch, [f"run{i:06d}" for i in range(runs)], "bench")
    fill_runs(ch, [f"side{i:05d}" for i in range(SIDE_RUNS)], SIDE_EXPERIMENT)
    fill_series(ch, "long", series_points)
    fill_series(ch, "side-long", SIDE_POINTS)
    ch.command("OPTIMIZE TABLE metrics FINAL")


def mlflow_client(home: str) -> Any | None:
    """An MlflowClient on a fresh sqlite store, or None (and a line) when it is skipped."""
    if os.environ.get("BENCH_QUICK") == "1":
        print("MLflow side by side skipped (BENCH_QUICK=1)", flush=True)
        return None
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        print("MLflow side by side skipped (mlflow not importable; install the bench extra)",
              flush=True)
        return None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")


def fill_mlflow(ml: Any) -> tuple[str, str]:
    """The same side-by-side data in MLflow: 5,000 runs in one experiment, the 100k series in a
    run of its own (log_batch, 1,000 metrics a call). Returns (experiment id, series run id)."""
    from mlflow.entities import Metric, Param

    experiment_id: str = ml.create_experiment(SIDE_EXPERIMENT)
    for i in range(SIDE_RUNS):
        run_id = ml.create_run(experiment_id, start_time=T0 + i, run_name=f"side{i:05d}"
                               ).info.run_id
        ml.log_batch(run_id, synchronous=True,
                     params=[Param(f"p{p}", param_value(i, p)) for p in range(10)],
                     metrics=[Metric(f"m{m}", metric_value(i, m, step), T0, step)
                              for m in range(5) for step in (0, 1)])
        if i % 2:
            ml.set_terminated(run_id, "FINISHED", end_time=T0 + i + 1)
    series_run = ml.create_run(ml.create_experiment("x"), start_time=T0).info.run_id
    for start in range(0, SIDE_POINTS, 1000):
        ml.log_batch(series_run, synchronous=True, metrics=[
            Metric("loss", series_value(s), T0 + s, s)
            for s in range(start, min(start + 1000, SIDE_POINTS))])
    return experiment_id, series_run


def mlflow_all_runs(ml: Any, experiment_id: str) -> int:
    """Every run of the experiment, unfiltered, paging (5,000 a page) as MLflow needs."""
    n, token = 0, None
    while True:
        page = ml.search_runs([experiment_id], max_results=5000, page_token=token)
        n += len(page)
        token = page.token
        if not token:
            return n


def paged_export(c: Client, run_id: str, key: str, page_size: int) -> int:
    """Every point through GetMetricHistory pages and their tokens (the client's default
    before ExportMetricHistory); returns the point count."""
    n, token = 0, ""
    while True:
        page = c.metric_history(run_id, key, page_size=page_size, page_token=token)
        n += len(page)
        token = page.next_page_token
        if not token:
            return n


def runstream_all_runs(c: Client) -> int:
    return sum(1 for _ in c.iter_runs(SIDE_EXPERIMENT, page_size=1000))


def main() -> int:
    started = time.perf_counter()
    runs = int(os.environ.get("BENCH_RUNS", "100000"))
    points = int(os.environ.get("BENCH_POINTS", "1000000"))
    home = tempfile.mkdtemp(prefix="rs-bench-")
    dsn = f"chdb://{home}/chdb"
    setup = clickhouse_connect.get_client(dsn=dsn)
    for statement in tables.all_ddl("bench"):
        setup.command(statement)
    ch = clickhouse_connect.get_client(dsn=dsn, database="bench")
    t = time.perf_counter()
    fill(ch, runs, points)
    print(f"filled {runs:,} + {SIDE_RUNS:,} runs and {points:,}- and {SIDE_POINTS:,}-point "
          f"series in {time.perf_counter() - t:.1f}s", flush=True)
    ml = mlflow_client(home)
    ml_ids: tuple[str, str] | None = None
    if ml is not None:
        t = time.perf_counter()
        ml_ids = fill_mlflow(ml)
        print(f"filled MLflow (sqlite) with {SIDE_RUNS:,} runs and a {SIDE_POINTS:,}-point "
              f"series in {time.perf_counter() - t:.1f}s", flush=True)
    repo = ClickHouseRepository(dsn, "bench")
    server, port = build_server(QueryService(repo), "127.0.0.1:0", max_workers=8)
    server.start()
    rows: list[Row] = []
    try:
        with Client(f"127.0.0.1:{port}", timeout_s=120) as c:
            down = median_s(lambda: c.metric_history("long", "loss", max_points=1000))
            rows.append(Row(f"history {points:,} pts -> 1,000 (LTTB+envelope)", down * 1000,
                            "ms", "<= 100 ms"))
            # The default call (one ExportMetricHistory stream) next to the paged path it
            # replaced (pages of 100,000 through page tokens) and one maximal page.
            full = median_s(lambda: c.metric_history("long", "loss"), 5)
            rows.append(Row("lossless export, default client (stream)", points / full / 1e6,
                            "M pts/s", ">= 2 M/s"))
            old = median_s(lambda: paged_export(c, "long", "loss", DEFAULT_HISTORY_PAGE_SIZE), 5)
            rows.append(Row("  baseline: pages of 100,000 via page tokens", points / old / 1e6,
                            "M pts/s", ""))
            one = median_s(lambda: paged_export(c, "long", "loss", MAX_HISTORY_PAGE_SIZE), 5)
            rows.append(Row("  one page of 1,000,000", points / one / 1e6, "M pts/s", ""))
            flt = "params.p1 > 0.5 and metrics.m2 > 0.3"
            search = median_s(lambda: c.search_runs("bench", filter=flt, order_by=ORDER_BY,
                                                    page_size=100))
            rows.append(Row(f"SearchRuns 2 clauses + order by metric, {runs:,} runs",
                            search * 1000, "ms", "<= 200 ms"))
            ten = [f"run{i:06d}" for i in range(10)]
            cmp_s = median_s(lambda: c.compare_runs(ten))
            rows.append(Row("CompareRuns 10 runs", cmp_s * 1000, "ms", "<= 50 ms"))
            rows += side_by_side(c, ml, ml_ids)
    finally:
        stop(server, 1.0)
        repo.close()
    print(f"\n{'measurement (median)':58} {'value':>10}  unit      {'target':10} ratio MLflow/RS")
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.1f}x"
        print(f"{row.name:58} {row.value:>10.1f}  {row.unit:8}  {row.target:10} {ratio}".rstrip())
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    return 0


def side_by_side(c: Client, ml: Any | None, ml_ids: tuple[str, str] | None) -> list[Row]:
    """Runstream vs MLflow on the same 100k-point series and 5,000 runs (MLflow rows when
    it runs, each with the ratio of its time to Runstream's)."""
    pts = f"{SIDE_POINTS:,}"
    cases: list[tuple[str, str, Callable[[], Any], Callable[[], Any] | None, int]] = []
    hist_rs = lambda: c.metric_history("side-long", "loss", page_size=SIDE_POINTS)  # noqa: E731
    search_rs = lambda: c.search_runs(  # noqa: E731
        SIDE_EXPERIMENT, filter=SIDE_FILTER, order_by=ORDER_BY, page_size=100)
    list_rs = lambda: runstream_all_runs(c)  # noqa: E731
    hist_ml = search_ml = list_ml = None
    if ml is not None and ml_ids is not None:
        experiment_id, series_run = ml_ids
        hist_ml = lambda: ml.get_metric_history(series_run, "loss")  # noqa: E731
        search_ml = lambda: ml.search_runs(  # noqa: E731
            [experiment_id], SIDE_FILTER, order_by=ORDER_BY, max_results=100)
        list_ml = lambda: mlflow_all_runs(ml, experiment_id)  # noqa: E731
        matched = (len(search_rs()[0]), len(search_ml()))
        listed = (list_rs(), list_ml())
        history = (len(hist_rs().steps), len(hist_ml()))
        print(f"side by side, Runstream vs MLflow: history {history} points, filtered first "
              f"page {matched} runs, unfiltered {listed} runs", flush=True)
    cases.append((f"full history {pts} pts", "get_metric_history", hist_rs, hist_ml, 3))
    cases.append((f"SearchRuns 2 clauses + order by metric, {SIDE_RUNS:,} runs",
                  "search_runs same filter + order", search_rs, search_ml, 7))
    cases.append((f"SearchRuns unfiltered, all {SIDE_RUNS:,} runs", "search_runs all runs",
                  list_rs, list_ml, 3))
    rows = []
    for name, ml_name, rs_fn, ml_fn, repeat in cases:
        rs_s = median_s(rs_fn, repeat)
        rows.append(Row(name, rs_s * 1000, "ms", ""))
        if ml_fn is not None:
            ml_s = median_s(ml_fn, repeat)
            rows.append(Row(f"  MLflow {ml_name} (sqlite)", ml_s * 1000, "ms", "", ml_s / rs_s))
    return rows


if __name__ == "__main__":
    sys.exit(main())
