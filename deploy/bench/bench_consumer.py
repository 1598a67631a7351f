"""Consumer benchmarks: end-to-end ingest, freshness, bytes per point, MLflow alongside.

Standalone (``make bench`` runs it; ``BENCH=consumer``). Starts a throw-away Apache Kafka
broker with deploy/kafka.sh (temporary data dir, free ports) and stops it at the end.
Everything runs on this machine: the SDK producer in its own process, the broker, the
consumer pipeline and the embedded ClickHouse (chdb) in this process.

* ingest: one SDK process logs N points (10 keys per ``Run.log``) to Kafka; one consumer
  pipeline writes them to chdb; points/s from the SDK's first send (the Kafka CreateTime of
  the run's first record) until the last row is queryable: a probe for the run's final
  point (a primary-key lookup) every 20 ms on its own chdb connection, then ``count()``
  must equal N. Also shown: the same from the producer's first ``Run.log`` call, which
  adds the SDK's start-up (connecting to Kafka, capturing the environment) while the
  training loop already runs. Median of REPEATS, after one untimed warm-up run.
* freshness: the SDK logs a steady RATE points/s with each point's value = its
  ``time.time()`` at ``Run.log``; this process asks the gRPC query service
  (``Client.list_metric_keys``, the latest value per key) every 50 ms and records
  ``now - latest value`` (age of the newest point the service returns). p50/p99.
* bytes/point: noisy realistic curves (loss, accuracy, lr schedule, grad norm, ...) into
  copies of ``metrics`` with different codecs, OPTIMIZE FINAL, ``system.columns``
  compressed bytes / rows.
* MLflow: ``MlflowClient.log_batch`` (1,000 metrics per call, sqlite store in a temp dir)
  on the same kind of points; points/s and sqlite bytes per point.

* replay plans (``RUNSTREAM_BENCH_AB=1``: only this and the reads below): the ingest above
  with the consumer recording replay plans (one extra offset commit per batch, before its
  insert) and without, alternating, REPEATS each; medians.
* FINAL on reads (also ``RUNSTREAM_BENCH_AB=1``): one key's history (the query service's
  metric_history read) over copies of the ingested run's points inserted in 200,000-row
  parts, merges stopped (as fresh ingest leaves them): without duplicates, and with every
  point twice (a replay that was not dropped at insert); with FINAL and without. Medians.

Environment: RUNSTREAM_BENCH_POINTS (2,000,000), RUNSTREAM_BENCH_REPEATS (5),
RUNSTREAM_BENCH_RATE (100,000), RUNSTREAM_BENCH_FRESH_S (10),
RUNSTREAM_BENCH_MLFLOW_POINTS (200,000), RUNSTREAM_BENCH_AB (unset).
"""

from __future__ import annotations

import math
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
POINTS = int(os.environ.get("RUNSTREAM_BENCH_POINTS", "2000000"))
REPEATS = int(os.environ.get("RUNSTREAM_BENCH_REPEATS", "5"))
RATE = int(os.environ.get("RUNSTREAM_BENCH_RATE", "100000"))
FRESH_S = float(os.environ.get("RUNSTREAM_BENCH_FRESH_S", "10"))
MLFLOW_POINTS = int(os.environ.get("RUNSTREAM_BENCH_MLFLOW_POINTS", "200000"))
AB = os.environ.get("RUNSTREAM_BENCH_AB", "") == "1"
KEYS = [f"k{i}" for i in range(10)]

PRODUCER = r"""
import sys, time, runstream
total, rate, run_id = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
keys = [f"k{i}" for i in range(10)]
run = runstream.init(experiment="bench", run_id=run_id)
print(f"start {time.time()!r}", flush=True)
steps = total // len(keys)
if rate <= 0:
    for step in range(steps):
        x = step * 1e-3
        run.log({k: x + i for i, k in enumerate(keys)}, step=step)
else:  # steady rate, in 10 ms slices; each value is the wall time it was logged at
    per_slice = max(1, int(rate / len(keys) / 100))
    t0 = time.monotonic()
    step = 0
    while step < steps:
        now = time.time()
        for _ in range(per_slice):
            run.log({k: now for k in keys}, step=step)
            step += 1
        delay = t0 + step * len(keys) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
run.finish()
print(f"done {time.time()!r}", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """deploy/kafka.sh on free ports with a temporary data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {**os.environ, "KAFKA_PORT": str(free_port()),
                    "KAFKA_CONTROLLER_PORT": str(free_port()), "KAFKA_DATA_DIR": str(data_dir)}
        out = subprocess.run([str(REPO / "deploy" / "kafka.sh"), "start"], env=self.env,
                             capture_output=True, text=True, timeout=600, check=True)
        self.bootstrap = out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        subprocess.run([str(REPO / "deploy" / "kafka.sh"), "stop"], env=self.env,
                       capture_output=True, timeout=120)


def make_topic(bootstrap: str) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="runstream-bench")
    try:
        admin.create_topics([NewTopic(name, 4, 1), NewTopic(name + ".dlq", 1, 1)])
    finally:
        admin.close()
    return name


def start_producer(bootstrap: str, topic: str, points: int, rate: float,
                   run_id: str, home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update({"RUNSTREAM_KAFKA": bootstrap, "RUNSTREAM_TOPIC": topic,
                "RUNSTREAM_HOME": str(home)})
    return subprocess.Popen([sys.executable, "-c", PRODUCER, str(points), str(rate), run_id],
                            env=env, stdout=subprocess.PIPE, text=True)


def start_consumer(bootstrap: str, topic: str, client: Any, database: str,
                   tmp: Path, replay_plans: bool = True,
                   ) -> tuple[Any, threading.Event, threading.Thread]:
    from runstream.consumer.config import ConsumerConfig
    from runstream.consumer.factories import build_kafka_pipeline
    from runstream.consumer.pipeline import Pipeline

    config = ConsumerConfig(kafka_bootstrap=(bootstrap,), topic=topic,
                            group_id=f"bench-{uuid.uuid4().hex[:8]}",
                            clickhouse_dsn="chdb://" + str(tmp / "chdb"), database=database,
                            spool_dir=tmp / "spool", max_batch_rows=200_000,
                            max_batch_age_s=0.2)
    pipeline = build_kafka_pipeline(config, client=client)
    if not replay_plans:  # the same parts, without recording plans
        pipeline = Pipeline(pipeline.source, pipeline.sink, pipeline.dead_letters, config,
                            name=pipeline.name, replay_plans=False)
    stop = threading.Event()
    return pipeline, stop, pipeline.start(stop)


def count(client: Any, run_id: str) -> int:
    return int(client.query("SELECT count() FROM metrics WHERE run_id = {r:String}",
                            parameters={"r": run_id}).result_rows[0][0])


def cpu_s(who: int) -> float:
    """User + system CPU seconds of this process or of its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def has_final_point(client: Any, run_id: str, points: int) -> bool:
    """True once the last point the ingest producer logs (key k9 at the last step) is
    stored: a primary-key lookup, cheap enough to poll every 20 ms."""
    last_step = points // len(KEYS) - 1
    return bool(client.query(
        "SELECT count() FROM metrics WHERE run_id = {r:String} AND key = 'k9'"
        " AND rank = 0 AND step = {s:Int64}",
        parameters={"r": run_id, "s": last_step}).result_rows[0][0])


def first_send(bootstrap: str, topic: str) -> float:
    """Epoch seconds of the earliest record in ``topic`` (its producer CreateTime)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             client_id="runstream-bench")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        firsts: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not firsts:
            for tp, records in consumer.poll(timeout_ms=500, max_records=100).items():
                firsts[tp.partition] = min(r.timestamp for r in records)
        return min(firsts.values()) / 1000
    finally:
        consumer.close()


def ingest_once(bootstrap: str, client: Any, probe: Any, database: str, tmp: Path,
                points: int, replay_plans: bool = True) -> tuple[float, float, str]:
    """One producer process -> Kafka -> one consumer pipeline -> chdb. Returns seconds
    from the first send and from the first Run.log to the last row queryable, and the
    run id."""
    topic = make_topic(bootstrap)
    pipeline, stop, thread = start_consumer(bootstrap, topic, client, database, tmp,
                                            replay_plans)
    run_id = f"ingest-{uuid.uuid4().hex[:8]}"
    cpu_self, cpu_children = cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
    proc = start_producer(bootstrap, topic, points, 0, run_id, tmp / "home")
    assert proc.stdout is not None
    started = float(proc.stdout.readline().split()[1])
    while not has_final_point(probe, run_id, points):
        time.sleep(0.02)
    finished = time.time()
    while count(probe, run_id) < points:  # in order per partition: normally at once
        time.sleep(0.02)
        finished = time.time()
    consumer_cpu = cpu_s(resource.RUSAGE_SELF) - cpu_self  # this process: consumer + probe
    done = float(proc.stdout.readline().split()[1])
    proc.wait(timeout=120)
    producer_cpu = cpu_s(resource.RUSAGE_CHILDREN) - cpu_children
    stop.set()
    thread.join(timeout=60)
    sent = first_send(bootstrap, topic)
    elapsed = finished - sent
    print(f"  ingest: {points:,} points in {elapsed:.2f} s from the first send = "
          f"{points / elapsed:,.0f}/s ({finished - started:.2f} s from the first Run.log,"
          f" which came {sent - started:.2f} s before the first send; the producer "
          f"finished sending after {done - sent:.2f} s; ClickHouse writes "
          f"{pipeline.write_s:.2f} s summed over {pipeline.batches} batches; CPU: SDK process "
          f"{producer_cpu:.2f} s, consumer process {consumer_cpu:.2f} s)", flush=True)
    return elapsed, finished - started, run_id


def bench_ingest(bootstrap: str, client: Any, database: str,
                 tmp: Path) -> tuple[list[float], list[float], str]:
    from runstream.consumer.factories import connect_clickhouse

    # Its own chdb connection: the pipeline's client serialises calls on its handle, so
    # probing through it would hold up the inserts being timed.
    probe = connect_clickhouse("chdb://" + str(tmp / "chdb"), database)
    # Untimed warm-up: a long-running consumer has its lazy imports and first inserts
    # into every table behind it.
    print("  warm-up:", end="")
    ingest_once(bootstrap, client, probe, database, tmp, min(POINTS, 200_000))
    rates, from_log = [], []
    for _ in range(REPEATS):
        from_send_s, from_log_s, run_id = ingest_once(bootstrap, client, probe, database,
                                                      tmp, POINTS)
        rates.append(POINTS / from_send_s)
        from_log.append(POINTS / from_log_s)
    probe.close()
    return rates, from_log, run_id


def bench_replay_plans(bootstrap: str, client: Any, database: str,
                       tmp: Path) -> tuple[dict[bool, list[float]], str]:
    """Ingest points/s with replay plans off and on, alternating (REPEATS each)."""
    from runstream.consumer.factories import connect_clickhouse

    probe = connect_clickhouse("chdb://" + str(tmp / "chdb"), database)
    print("  warm-up:", end="")
    ingest_once(bootstrap, client, probe, database, tmp, min(POINTS, 200_000))
    rates: dict[bool, list[float]] = {False: [], True: []}
    run_id = ""
    for i in range(REPEATS):
        for plans in ((False, True) if i % 2 == 0 else (True, False)):
            print(f"  replay plans {'on' if plans else 'off'}:", end="")
            from_send_s, _, run_id = ingest_once(bootstrap, client, probe, database, tmp,
                                                 POINTS, replay_plans=plans)
            rates[plans].append(POINTS / from_send_s)
    probe.close()
    return rates, run_id


HISTORY = ("SELECT rank, step, value, ts_ms, producer_id, seq, idx FROM {table}{final}"
           " WHERE run_id = {{r:String}} AND key = 'k0'"
           " ORDER BY rank, step, ts_ms, producer_id, seq, idx LIMIT 10000000")


def bench_final_reads(client: Any, run_id: str) -> list[tuple[str, float, int]]:
    """(label, median ms, rows returned) of one key's history read, FINAL or not, over
    copies of ``run_id``'s points without and with a duplicate of every point."""
    from runstream.proto import tables

    cols = ", ".join(tables.METRICS.column_names)
    steps = POINTS // len(KEYS)
    chunk = 200_000 // len(KEYS)  # steps per part: 200,000 points, a consumer batch
    out = []
    for label, copies in (("no duplicates", 1), ("every point twice", 2)):
        table = f"reads_{uuid.uuid4().hex[:8]}"
        client.command(f"CREATE TABLE {table} AS metrics")
        client.command(f"SYSTEM STOP MERGES {table}")
        for _ in range(copies):
            for first in range(0, steps, chunk):
                client.command(
                    f"INSERT INTO {table} SELECT {cols} FROM metrics"  # noqa: S608
                    " WHERE run_id = {r:String} AND step >= {a:Int64} AND step < {b:Int64}"
                    " SETTINGS insert_deduplicate = 0",
                    parameters={"r": run_id, "a": first, "b": first + chunk})
        for final in ("", " FINAL"):
            sql = HISTORY.format(table=table, final=final)
            times, rows = [], 0
            for _ in range(7):
                started = time.perf_counter()
                rows = len(client.query(sql, parameters={"r": run_id}).result_rows)
                times.append((time.perf_counter() - started) * 1000)
            out.append((f"{label}, {'FINAL' if final else 'no FINAL'}",
                        statistics.median(times), rows))
        client.command(f"DROP TABLE {table}")
    return out


def main_ab() -> int:
    """RUNSTREAM_BENCH_AB=1: replay plans off/on, and FINAL on reads (see the docstring)."""
    from runstream.consumer.factories import connect_clickhouse
    from runstream.consumer.sink import ClickHouseSink

    results: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as raw:
        tmp = Path(raw)
        database = "bench"
        client = connect_clickhouse("chdb://" + str(tmp / "chdb"), database)
        ClickHouseSink(client, database).ensure_schema()
        broker = Broker(tmp / "kafka")
        try:
            rates, run_id = bench_replay_plans(broker.bootstrap, client, database, tmp)
        finally:
            broker.stop()
        for plans in (False, True):
            each = ", ".join(f"{r:,.0f}" for r in rates[plans])
            results.append((f"ingest {POINTS:,} points, replay plans "
                            f"{'on' if plans else 'off'} (median of {len(rates[plans])})",
                            f"{statistics.median(rates[plans]):,.0f} points/s ({each})"))
        for label, ms, rows in bench_final_reads(client, run_id):
            results.append((f"history of one key ({POINTS // len(KEYS):,} points): {label}",
                            f"{ms:,.1f} ms ({rows:,} rows)"))
    width = max(len(a) for a, _ in results)
    print(f"\n{'measurement'.ljust(width)} | result")
    print(f"{'-' * width}-|-------")
    for a, b in results:
        print(f"{a.ljust(width)} | {b}")
    return 0


def bench_freshness(bootstrap: str, client: Any, database: str, tmp: Path) -> list[float]:
    from runstream.proto.errors import RunstreamError
    from runstream.query import Client
    from runstream.query.config import QueryConfig
    from runstream.query.server import start_server

    server = start_server(QueryConfig(addr="127.0.0.1:0", clickhouse_dsn="chdb://"
                                      + str(tmp / "chdb"), database=database))
    query = Client(server.address)
    topic = make_topic(bootstrap)
    _pipeline, stop, thread = start_consumer(bootstrap, topic, client, database, tmp)
    run_id = f"fresh-{uuid.uuid4().hex[:8]}"
    proc = start_producer(bootstrap, topic, int(RATE * FRESH_S), RATE, run_id, tmp / "home")
    assert proc.stdout is not None
    proc.stdout.readline()
    ages = []
    warmup_until = time.time() + 1.0
    try:
        while proc.poll() is None:
            try:
                newest = max((m.last for m in query.list_metric_keys(run_id)), default=None)
            except RunstreamError:  # NOT_FOUND until the run's first rows are stored
                newest = None
            now = time.time()
            if newest and now > warmup_until:
                ages.append(now - newest)
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=60)
        query.close()
        server.stop(grace_s=1.0)
    return ages


CURVE_KEYS = ("loss", "val_loss", "accuracy", "lr", "grad_norm", "tokens_per_s",
              "gpu_mem", "weight_norm")


def noisy_curves(points: int) -> dict[str, list[Any]]:
    """Training-like series: decaying losses with noise, saturating accuracy, a cosine lr
    schedule, heavy-tailed grad norms, throughput jitter; one point per key per step,
    timestamps ~120 ms apart with jitter."""
    rng = random.Random(7)
    steps = points // len(CURVE_KEYS)
    cols: dict[str, list[Any]] = {c: [] for c in
                                  ("run_id", "key", "rank", "step", "value", "ts_ms",
                                   "producer_id", "seq", "idx")}
    ts = 1_760_000_000_000
    for step in range(steps):
        ts += 100 + rng.randint(0, 40)
        p = step / steps
        values = (
            2.5 * math.exp(-4 * p) + 0.3 + rng.gauss(0, 0.05),
            2.6 * math.exp(-3.5 * p) + 0.4 + rng.gauss(0, 0.02),
            0.95 - 0.7 * math.exp(-5 * p) + rng.gauss(0, 0.01),
            3e-4 * 0.5 * (1 + math.cos(math.pi * p)),
            abs(rng.lognormvariate(0, 0.5)),
            52000 + rng.gauss(0, 800),
            float(30_000_000_000 + rng.randint(0, 1 << 20)),
            100 + 10 * p + rng.gauss(0, 0.01),
        )
        for i, (key, value) in enumerate(zip(CURVE_KEYS, values, strict=True)):
            cols["run_id"].append("run-bytes")
            cols["key"].append(key)
            cols["rank"].append(0)
            cols["step"].append(step)
            cols["value"].append(value)
            cols["ts_ms"].append(ts)
            cols["producer_id"].append("0123456789abcdef")
            cols["seq"].append(step // 100 + 1)
            cols["idx"].append((step % 100) * len(CURVE_KEYS) + i)
    return cols


CODECS = {
    # name: (value, step, ts_ms)
    "ZSTD(1) value, Delta step/ts (walking skeleton)":
        ("CODEC(ZSTD(1))", "CODEC(Delta, ZSTD(1))", "CODEC(Delta, ZSTD(1))"),
    "Gorilla value, DoubleDelta step/ts":
        ("CODEC(Gorilla, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))"),
    "Gorilla value (no ZSTD), DoubleDelta step/ts":
        ("CODEC(Gorilla)", "CODEC(DoubleDelta)", "CODEC(DoubleDelta)"),
    "ZSTD(3) value, DoubleDelta step/ts":
        ("CODEC(ZSTD(3))", "CODEC(DoubleDelta, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))"),
    "FPC value, DoubleDelta step/ts (chosen: a little larger than Delta ts, faster to read)":
        ("CODEC(FPC, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))"),
    "Gorilla value, DoubleDelta step, Delta ts":
        ("CODEC(Gorilla, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))", "CODEC(Delta, ZSTD(1))"),
    "FPC value, DoubleDelta step, Delta ts":
        ("CODEC(FPC, ZSTD(1))", "CODEC(DoubleDelta, ZSTD(1))", "CODEC(Delta, ZSTD(1))"),
}

READS = {
    # Deduplicated reads of one metric's points: what runstream.query.repository does (FINAL),
    # the argMax alternative over the natural key, and the raw read as the floor.
    "raw (not deduplicated)":
        "SELECT rank, step, value FROM metrics WHERE run_id = {r:String} AND key = 'k3'"
        " ORDER BY rank, step",
    "FINAL":
        "SELECT rank, step, value FROM metrics FINAL WHERE run_id = {r:String} AND key = 'k3'"
        " ORDER BY rank, step",
    "argMax over the natural key":
        "SELECT rank, step, argMax(value, ts_ms) FROM metrics"
        " WHERE run_id = {r:String} AND key = 'k3'"
        " GROUP BY rank, step, producer_id, seq, idx ORDER BY rank, step",
    "summary from metric_summaries":
        "SELECT key, argMaxMerge(last), min(min), max(max) FROM metric_summaries"
        " WHERE run_id = {r:String} GROUP BY key",
    "summary by scanning metrics FINAL":
        "SELECT key, argMax(value, (step, ts_ms)), min(value), max(value) FROM metrics FINAL"
        " WHERE run_id = {r:String} GROUP BY key",
}


def bench_reads(client: Any, run_id: str) -> list[tuple[str, float]]:
    """Median ms of each read over the points of ``run_id`` as ingested (parts unmerged)."""
    out = []
    for label, sql in READS.items():
        times = []
        for _ in range(5):
            started = time.perf_counter()
            client.query(sql, parameters={"r": run_id})
            times.append((time.perf_counter() - started) * 1000)
        out.append((label, statistics.median(times)))
    return out


def bench_bytes(client: Any, database: str) -> list[tuple[str, float, dict[str, float]]]:
    from runstream.proto import tables

    cols = noisy_curves(1_000_000)
    names = list(cols)
    rows = len(cols["step"])
    out = []
    for label, (value_codec, step_codec, ts_codec) in CODECS.items():
        table = f"bytes_{uuid.uuid4().hex[:8]}"
        types = dict(tables.METRICS.columns)
        types = {c: t.split(" CODEC")[0] for c, t in types.items()}
        types["value"] += f" {value_codec}"
        types["step"] += f" {step_codec}"
        types["ts_ms"] += f" {ts_codec}"
        for c in ("seq", "idx"):
            types[c] += " CODEC(Delta, ZSTD(1))"
        ddl = ", ".join(f"`{c}` {types[c]}" for c in names)
        client.command(f"CREATE TABLE {table} ({ddl}) ENGINE = ReplacingMergeTree"
                       f" ORDER BY ({tables.METRICS.order_by})")
        chunk = 200_000
        for start in range(0, rows, chunk):
            client.insert(table, [c[start:start + chunk] for c in cols.values()],
                          column_names=names, column_oriented=True)
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        per_column = {
            name: int(b) / rows for name, b in client.query(
                "SELECT name, data_compressed_bytes FROM system.columns"
                " WHERE database = {d:String} AND table = {t:String}",
                parameters={"d": database, "t": table}).result_rows
        }
        out.append((label, sum(per_column.values()), per_column))
        client.command(f"DROP TABLE {table}")
    return out


def bench_mlflow(tmp: Path) -> tuple[float, float]:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    db = tmp / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("bench", artifact_location=str(tmp / "mlartifacts"))
    run = client.create_run(experiment)
    steps = MLFLOW_POINTS // len(KEYS)
    ts = int(time.time() * 1000)
    batch: list[Metric] = []
    started = time.perf_counter()
    for step in range(steps):
        x = step * 1e-3
        for i, k in enumerate(KEYS):
            batch.append(Metric(k, x + i, ts + step, step))
        if len(batch) >= 1000:
            client.log_batch(run.info.run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run.info.run_id, metrics=batch)
    elapsed = time.perf_counter() - started
    return MLFLOW_POINTS / elapsed, db.stat().st_size / MLFLOW_POINTS


def main() -> int:
    sys.path.insert(0, str(REPO))
    if AB:
        return main_ab()
    from runstream.consumer.factories import connect_clickhouse

    results: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="runstream-bench-") as raw:
        tmp = Path(raw)
        database = "bench"
        client = connect_clickhouse("chdb://" + str(tmp / "chdb"), database)
        from runstream.consumer.sink import ClickHouseSink

        ClickHouseSink(client, database).ensure_schema()
        broker = Broker(tmp / "kafka")
        try:
            rates, from_log, run_id = bench_ingest(broker.bootstrap, client, database, tmp)
            results.append(("end-to-end ingest, SDK -> Kafka -> consumer -> chdb, first send"
                            f" -> last row queryable ({POINTS:,} points, median of {len(rates)})",
                            f"{statistics.median(rates):,.0f} points/s"))
            results.append(("  the same from the first Run.log (adds the SDK's start-up)",
                            f"{statistics.median(from_log):,.0f} points/s"))
            for label, ms in bench_reads(client, run_id):
                results.append((f"read {POINTS // len(KEYS):,} points of one key: {label}",
                                f"{ms:,.1f} ms"))
            ages = sorted(bench_freshness(broker.bootstrap, client, database, tmp))
            if ages:
                p50 = ages[len(ages) // 2]
                p99 = ages[min(len(ages) - 1, int(len(ages) * 0.99))]
                results.append((f"freshness at {RATE:,} points/s, Run.log -> returned by the"
                                " gRPC query service (p50 / p99)", f"{p50:.2f} s / {p99:.2f} s"))
        finally:
            broker.stop()
        for label, total, per_column in bench_bytes(client, database):
            detail = ", ".join(f"{c} {b:.2f}" for c, b in sorted(per_column.items(),
                                                                  key=lambda kv: -kv[1]))
            results.append((f"bytes/point after OPTIMIZE FINAL: {label}",
                            f"{total:.2f} B ({detail})"))
        try:
            mlflow_rate, mlflow_bytes = bench_mlflow(tmp)
            results.append((f"MLflow log_batch, 1,000/call, sqlite ({MLFLOW_POINTS:,} points)",
                            f"{mlflow_rate:,.0f} points/s, {mlflow_bytes:.0f} B/point"))
        except ImportError:
            results.append(("MLflow log_batch", "skipped: pip install -e '.[bench]'"))
    width = max(len(a) for a, _ in results)
    print(f"\n{'measurement'.ljust(width)} | result")
    print(f"{'-' * width}-|-------")
    for a, b in results:
        print(f"{a.ljust(width)} | {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
