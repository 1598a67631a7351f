"""Query service benchmark (standalone; `make bench` runs it): medians through real gRPC.

Fills an embedded ClickHouse (chdb, temp dir) directly with the consumer's tables
(column-oriented inserts), starts the query server on port 0 and measures with the real
Client: a 1M-point series downsampled to 1,000; full lossless export; SearchRuns with a
two-clause filter ordered by a metric over 100k runs (10 params, 5 metrics each);
CompareRuns of 10 runs. MLflow (sqlite store, temp dir) side by side on a 100k-point series
and 5,000 runs when it is installed (the bench extra); BENCH_QUICK=1 skips MLflow.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import clickhouse_connect

from runstream.consumer import schema
from runstream.query.client import Client
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService

T0 = 1_700_000_000_000


def median_s(fn: Callable[[], Any], repeat: int = 7) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def insert_columns(ch: Any, table: schema.Table, columns: dict[str, list[Any]]) -> None:
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


def fill(ch: Any, runs: int, series_points: int) -> None:
    ids = [f"run{i:06d}" for i in range(runs)]
    insert_columns(ch, schema.RUNS, {
        "run_id": ids, "rank": [0] * runs, "experiment": ["bench"] * runs,
        "name": ids, "world_size": [1] * runs, "producer_id": ["p"] * runs,
        "seq": [1] * runs, "ts_ms": [T0 + i for i in range(runs)],
    })
    insert_columns(ch, schema.RUN_STATUS, {
        "run_id": ids, "rank": [0] * runs, "experiment": ["bench"] * runs,
        "status": ["FINISHED" if i % 2 else "RUNNING" for i in range(runs)],
        "producer_id": ["p"] * runs, "seq": [2] * runs, "ts_ms": [T0 + i + 1 for i in range(runs)],
    })
    pk, pv, pr = [], [], []
    for p in range(10):
        pk += [f"p{p}"] * runs
        pv += [str((i * (p + 3)) % 97 / 100) for i in range(runs)]
        pr += ids
    insert_columns(ch, schema.PARAMS, {
        "run_id": pr, "key": pk, "value": pv, "type": ["FLOAT"] * len(pk), "rank": [0] * len(pk),
        "producer_id": ["p"] * len(pk), "seq": [3] * len(pk), "ts_ms": [T0] * len(pk)})
    mk, mv, mr, ms = [], [], [], []
    for m in range(5):  # 5 metrics x 2 steps per run: the summaries carry the rest
        for step in (0, 1):
            mk += [f"m{m}"] * runs
            mv += [((i * (m + 7)) % 1000) / 1000 + step for i in range(runs)]
            mr += ids
            ms += [step] * runs
    insert_columns(ch, schema.METRICS, {
        "run_id": mr, "key": mk, "rank": [0] * len(mk), "step": ms, "value": mv,
        "ts_ms": [T0] * len(mk), "producer_id": ["p"] * len(mk), "seq": [4] * len(mk),
        "idx": list(range(len(mk)))})
    n = series_points
    insert_columns(ch, schema.METRICS, {
        "run_id": ["long"] * n, "key": ["loss"] * n, "rank": [0] * n, "step": list(range(n)),
        "value": [1.0 / (1 + s) + (5.0 if s % 99_991 == 0 else 0.0) for s in range(n)],
        "ts_ms": [T0 + s for s in range(n)], "producer_id": ["p"] * n, "seq": [9] * n,
        "idx": list(range(n))})
    insert_columns(ch, schema.RUNS, {"run_id": ["long"], "rank": [0], "experiment": ["x"],
                                     "producer_id": ["p"], "seq": [1], "ts_ms": [T0]})
    ch.command("OPTIMIZE TABLE metrics FINAL")


def main() -> int:
    runs = int(os.environ.get("BENCH_RUNS", "100000"))
    points = int(os.environ.get("BENCH_POINTS", "1000000"))
    home = tempfile.mkdtemp(prefix="rs-bench-")
    dsn = f"chdb://{home}/chdb"
    setup = clickhouse_connect.get_client(dsn=dsn)
    for statement in schema.all_ddl("bench"):
        setup.command(statement)
    ch = clickhouse_connect.get_client(dsn=dsn, database="bench")
    t = time.perf_counter()
    fill(ch, runs, points)
    print(f"filled {runs:,} runs and a {points:,}-point series in {time.perf_counter() - t:.1f}s",
          flush=True)
    repo = ClickHouseRepository(dsn, "bench")
    server, port = build_server(QueryService(repo), "127.0.0.1:0", max_workers=8)
    server.start()
    rows = []
    try:
        with Client(f"127.0.0.1:{port}", timeout_s=120) as c:
            down = median_s(lambda: c.metric_history("long", "loss", max_points=1000))
            rows.append((f"history {points:,} pts -> 1,000 (LTTB+envelope)", down * 1000, "ms",
                         "<= 100 ms"))
            full = median_s(lambda: c.metric_history("long", "loss", page_size=1_000_000), 3)
            rows.append(("lossless export", points / full / 1e6, "M pts/s", ">= 2 M/s"))
            flt = "params.p1 > 0.5 and metrics.m2 > 0.3"
            search = median_s(lambda: c.search_runs(filter=flt, order_by=["metrics.m0 DESC"],
                                                    page_size=100))
            rows.append((f"SearchRuns 2 clauses + order by metric, {runs:,} runs",
                         search * 1000, "ms", "<= 200 ms"))
            ten = [f"run{i:06d}" for i in range(10)]
            cmp_s = median_s(lambda: c.compare_runs(ten))
            rows.append(("CompareRuns 10 runs", cmp_s * 1000, "ms", "<= 50 ms"))
    finally:
        stop(server, 1.0)
        repo.close()
    print(f"\n{'measurement (median)':58} {'value':>10}  unit      target")
    for name, value, unit, target in rows:
        print(f"{name:58} {value:>10.1f}  {unit:8}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
