"""Producer SDK benchmark: the cost of ``Run.log`` on the training thread against a
``list.append`` floor measured in the same run, MLflow's ``log_metric`` side by side
(when MLflow is installed), and sustained points/s from one process into a real Kafka
broker (started here with deploy/kafka.sh on free ports and a temp data dir, consumer
off). Prints a table of medians over REPEATS runs.

    python deploy/bench/bench_producer.py            # or: make bench BENCH=producer
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import runstream

REPO = Path(__file__).resolve().parents[2]
REPEATS = 5
CALLS = int(os.environ.get("BENCH_CALLS", "200000"))
MLFLOW_CALLS = 300
KAFKA_POINTS = int(os.environ.get("BENCH_KAFKA_POINTS", "4000000"))
METRICS_20 = [f"metric_{i:02d}" for i in range(20)]


def median_of(measure: Callable[[], float], repeats: int = REPEATS) -> float:
    return statistics.median(measure() for _ in range(repeats))


def bench_append() -> float:
    out: list[tuple[float, int]] = []
    append = out.append
    t0 = time.perf_counter()
    for i in range(CALLS):
        append((i * 0.5, i))
    return (time.perf_counter() - t0) / CALLS


def bench_log(spool_dir: Path, n_metrics: int) -> float:
    run = runstream.init("bench", spool_dir=spool_dir, system_metrics_s=0,
                         environ={"RUNSTREAM_HOME": str(spool_dir.parent)})
    try:
        log = run.log
        if n_metrics == 1:
            t0 = time.perf_counter()
            for i in range(CALLS):
                log({"loss": i * 0.5}, step=i)
            elapsed = time.perf_counter() - t0
        else:
            keys = METRICS_20
            t0 = time.perf_counter()
            for i in range(CALLS // 10):
                x = i * 0.5
                log({k: x for k in keys}, step=i)
            elapsed = time.perf_counter() - t0
            return elapsed / (CALLS // 10)
        return elapsed / CALLS
    finally:
        run.finish(timeout_s=60)


def bench_mlflow(tmp: Path) -> float | None:
    try:
        import mlflow
    except ImportError:
        return None
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        t0 = time.perf_counter()
        for i in range(MLFLOW_CALLS):
            mlflow.log_metric("loss", i * 0.5, step=i)
        return (time.perf_counter() - t0) / MLFLOW_CALLS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_kafka(bootstrap: str, tmp: Path) -> float:
    """Points/s from the first log call until flush() returns (everything acked)."""
    topic = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    run = runstream.init("bench", kafka=bootstrap, topic=topic, spool_dir=tmp / "spool",
                         system_metrics_s=0, environ={"RUNSTREAM_HOME": str(tmp)})
    try:
        run.log({"warmup": 1.0})
        if not run.flush(timeout_s=60):  # topic auto-created, producer connected
            raise RuntimeError("Kafka did not take the warm-up event")
        keys = METRICS_20
        calls = KAFKA_POINTS // len(keys)
        log = run.log
        t0 = time.perf_counter()
        for i in range(calls):
            x = i * 0.5
            log({k: x for k in keys}, step=i)
        if not run.flush(timeout_s=300):
            raise RuntimeError("flush to Kafka timed out")
        return calls * len(keys) / (time.perf_counter() - t0)
    finally:
        run.finish(timeout_s=60)


def main() -> int:
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="rs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        floor = median_of(bench_append)
        rows.append(("list.append((x, i)) (floor)", f"{floor * 1e9:.0f} ns", "1.0x"))
        one = median_of(lambda: bench_log(tmp / "s1" / "spool", 1))
        rows.append(('run.log({"loss": x}, step=i)', f"{one * 1e9:.0f} ns/point",
                     f"{one / floor:.1f}x"))
        twenty = median_of(lambda: bench_log(tmp / "s20" / "spool", 20))
        rows.append(("run.log(20-metric dict) per call", f"{twenty * 1e9:.0f} ns", ""))
        rows.append(("run.log(20-metric dict) per point", f"{twenty / 20 * 1e9:.0f} ns/point",
                     f"{twenty / 20 / floor:.1f}x"))
        mlflow_s = bench_mlflow(tmp)
        if mlflow_s is None:
            rows.append(("mlflow.log_metric (sqlite)", "not installed", ""))
        else:
            rows.append(("mlflow.log_metric (sqlite)", f"{mlflow_s * 1e6:.0f} us/point",
                         f"{mlflow_s / floor:.0f}x"))
        env = {**os.environ, "KAFKA_PORT": str(free_port()),
               "KAFKA_CONTROLLER_PORT": str(free_port()), "KAFKA_DATA_DIR": str(tmp / "kafka")}
        script = str(REPO / "deploy" / "kafka.sh")
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
        if started.returncode != 0:
            print(started.stderr, file=sys.stderr)
            return 1
        try:
            bootstrap = started.stdout.strip().splitlines()[-1]
            rate = median_of(lambda: bench_kafka(bootstrap, tmp), repeats=3)
            rows.append(("sustained into Kafka (20-metric dicts)", f"{rate / 1e6:.2f} M points/s",
                         "target >= 2M"))
        finally:
            subprocess.run([script, "stop"], env=env, capture_output=True)
    width = max(len(r[0]) for r in rows)
    print(f"producer: medians of {REPEATS} runs ({CALLS} calls each; MLflow {MLFLOW_CALLS}; "
          f"Kafka {KAFKA_POINTS} points, 3 runs), Python {sys.version.split()[0]}")
    print(f"{'what':<{width}}  {'median':>18}  vs floor")
    for what, value, ratio in rows:
        print(f"{what:<{width}}  {value:>18}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
