"""The SDK against real faults: the broker killed while records are in flight and the
process exits, Kafka unreachable while training logs fast, oversized and over-limit
bodies. Every point is checked stored exactly once (ClickHouse, deduplicated as the
consumer writes it), or accounted for as dropped by reason."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import runstream
from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.proto import spool, tables
from runstream.sync import sync
from tests.factories import make_config
from tests.helpers import REPO, free_port, points_of, read_spool, source_state, wait_for

pytestmark = pytest.mark.kafka

KAFKA_SH = str(REPO / "deploy" / "kafka.sh")


def kill_broker(kafka_env: dict[str, str]) -> None:
    """``kill -9`` the session's broker (no clean shutdown), then let kafka.sh tidy up."""
    pidfile = Path(kafka_env["KAFKA_DATA_DIR"]) / "broker.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip())
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(lambda: not _alive(pid), timeout_s=30, what="the broker process gone")
    subprocess.run([KAFKA_SH, "stop"], env=kafka_env, check=True, timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_broker(kafka_env: dict[str, str]) -> None:
    subprocess.run([KAFKA_SH, "start"], env=kafka_env, check=True, timeout=180,
                   capture_output=True)


def ingest(bootstrap: str, topic: str, dsn: str, database: str, tmp_path: Path) -> Any:
    """Everything in ``topic`` into ClickHouse through the real consumer pipeline."""
    config = make_config(bootstrap, topic, dsn, database, tmp_path)
    pipeline = build_kafka_pipeline(config)
    try:
        assert pipeline.drain(timeout_s=120), source_state(pipeline.source)
        assert pipeline.dead_lettered == 0
    finally:
        pipeline.close()
    return connect_clickhouse(dsn, database)


def stored_points(client: Any, run_id: str) -> tuple[int, int, int, int]:
    """(rows, distinct steps, min step, max step) of the run's metric points."""
    row = client.query(
        "SELECT count(), uniqExact(step), min(step), max(step) FROM metrics FINAL "
        "WHERE run_id = {r:String}", parameters={"r": run_id}).result_rows[0]
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def run_status(client: Any, run_id: str) -> str:
    rows = client.query(
        "SELECT argMax(status, seq) FROM run_status FINAL WHERE run_id = {r:String}",
        parameters={"r": run_id}).result_rows
    return str(rows[0][0]) if rows else ""


# --- 1. records in flight when the broker dies and the process exits ------------------

EXITING_PROCESS = r"""
import sys, runstream
mode, bootstrap, topic, spool_dir, run_id, n = sys.argv[1:7]
n = int(n)
run = runstream.init("exit-outage", run_id=run_id, kafka=bootstrap, topic=topic,
                     spool_dir=spool_dir)
for i in range(1000):
    run.log({"loss": float(i)}, step=i)
assert run.flush(timeout_s=60), "Kafka did not take the first points"
print("ready", flush=True)
sys.stdin.readline()  # the broker is dead now
for i in range(1000, n):
    run.log({"loss": float(i)}, step=i)
if mode == "finish":
    ok = run.finish(timeout_s=float(sys.argv[7]))
    d = run.delivery()
    print("finish", ok, d.points_logged, d.points_pending, d.points_dropped, flush=True)
else:
    print("exit", flush=True)  # falls off the end: the atexit hook finishes the run
"""


def test_in_flight_records_at_exit_reach_the_spool_within_the_deadline(
    kafka_bootstrap: str, kafka_env: dict[str, str], kafka_topic: str, chdb_dsn: str,
    ch_database: str, tmp_path: Path,
):
    n = 101_000
    flush_s = 3.0
    procs: dict[str, tuple[subprocess.Popen[str], str, Path]] = {}
    env = {**os.environ, "RUNSTREAM_HOME": str(tmp_path / "home"),
           "RUNSTREAM_SYSTEM_METRICS_S": "0", "RUNSTREAM_EXIT_FLUSH_S": str(flush_s),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    for mode in ("finish", "atexit"):
        run_id = f"exit-{mode}-{uuid.uuid4().hex[:8]}"
        spool_dir = tmp_path / f"spool-{mode}"
        proc = subprocess.Popen(
            [sys.executable, "-c", EXITING_PROCESS, mode, kafka_bootstrap, kafka_topic,
             str(spool_dir), run_id, str(n), str(flush_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        procs[mode] = (proc, run_id, spool_dir)
    try:
        for proc, _, _ in procs.values():
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        kill_broker(kafka_env)
        for proc, _, _ in procs.values():
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = {mode: proc.communicate(timeout=120)[0] for mode, (proc, _, _)
                   in procs.items()}
        for mode, (proc, _, _) in procs.items():
            assert proc.returncode == 0, outputs[mode]
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
        start_broker(kafka_env)
    # finish() says what Kafka did not acknowledge went to the spool: nothing lost.
    words = outputs["finish"].split()
    assert words[words.index("finish") + 1:] == ["True", str(n), "0", "0"], outputs["finish"]
    for _, _, spool_dir in procs.values():
        assert spool.ready_files(spool_dir), "nothing reached the spool"
        stats = sync(spool_dir, kafka_bootstrap, kafka_topic)
        assert stats.corrupt == [] and stats.undecodable == 0
    client = ingest(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    for mode, (_, run_id, _) in procs.items():
        assert stored_points(client, run_id) == (n, n, 0, n - 1), mode
        assert run_status(client, run_id) == "FINISHED", mode


# --- 10. log() while Kafka cannot be reached ------------------------------------------


class Trainer:
    """Logs one point per call at about ``rate`` calls/s on its own thread, keeping the
    steps it logged and the longest log() call."""

    def __init__(self, run: runstream.Run, rate: int) -> None:
        self.run = run
        self.rate = rate
        self.logged = 0
        self.slowest_s = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._train, name="test-trainer")

    def _train(self) -> None:
        step = 0
        per_tick = self.rate // 100
        next_tick = time.monotonic()
        while not self.stop.is_set():
            for _ in range(per_tick):
                t0 = time.perf_counter()
                self.run.log({"loss": step * 0.5}, step=step)
                self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)
                step += 1
            self.logged = step
            next_tick += 0.01
            pause = next_tick - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # the pace of training steps, not a wait for a result

    def __enter__(self) -> Trainer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def producer_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that construct the SDK's KafkaProducer from now on; each
    construction is also checked to bound ``send``'s wait for metadata (max_block_ms)."""
    import kafka

    names: list[str] = []
    real = kafka.KafkaProducer.__init__

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("client_id") == "runstream-producer":  # the SDK's, not the DLQ's
            names.append(threading.current_thread().name)
            assert kwargs["max_block_ms"] <= MAX_BLOCK_MS, kwargs["max_block_ms"]
        real(self, *args, **kwargs)

    monkeypatch.setattr(kafka.KafkaProducer, "__init__", recording)
    return names


RATE = 100_000  # log() calls (points) per second
# What the sender may wait in one producer.send for metadata. The slowest log() call
# is printed here and measured by deploy/bench/bench_reliability.py (it was 4.4-5.3 s
# before the fix: the sender blocked 5 s in each reconnect's bootstrap); a wall-clock
# bound in a test would only measure how busy this shared machine is.
MAX_BLOCK_MS = 250


def test_log_never_waits_on_reconnects_when_no_broker_listens(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    constructed = producer_threads(monkeypatch)
    spool_dir = tmp_path / "spool"
    run = runstream.init("unreachable", kafka=f"127.0.0.1:{free_port()}",
                         spool_dir=spool_dir, environ=env)
    with Trainer(run, RATE) as trainer:
        # Several reconnect attempts (KAFKA_RETRY_S apart, each 5 s in the bootstrap).
        wait_for(lambda: len(constructed), lambda n: n >= 3, timeout_s=60,
                 what="reconnect attempts")
    assert run.finish(timeout_s=30) is True  # all of it safely in the spool
    delivery = run.delivery()
    print(f"\n{trainer.logged} points with no broker; slowest log() "
          f"{trainer.slowest_s * 1e3:.1f} ms; {len(constructed)} connect attempts")
    assert "runstream-producer-sender" not in constructed
    assert delivery.points_logged == trainer.logged == delivery.points_spooled
    assert delivery.points_dropped == 0 and delivery.points_pending == 0
    steps = [s for k, s, _ in points_of(read_spool(spool_dir)) if k == "loss"]
    assert steps == list(range(trainer.logged))


def test_log_never_waits_while_a_stopped_broker_is_down(
    kafka_bootstrap: str, kafka_env: dict[str, str], kafka_topic: str, chdb_dsn: str,
    ch_database: str, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
):
    constructed = producer_threads(monkeypatch)
    run = runstream.init("stopped", kafka=kafka_bootstrap, topic=kafka_topic,
                         spool_dir=tmp_path / "spool", environ=env)
    transport: Any = run._ensure_sender().transport
    try:
        with Trainer(run, RATE) as trainer:
            wait_for(lambda: trainer.logged, lambda n: n > RATE, what="logging under way")
            kill_broker(kafka_env)
            wait_for(lambda: transport.spooling, timeout_s=60, what="spooling")
            down_at = trainer.logged
            wait_for(lambda: trainer.logged, lambda n: n > down_at + 3 * RATE,
                     timeout_s=120, what="logging through the outage")
            start_broker(kafka_env)
            wait_for(lambda: not transport.spooling, timeout_s=120,
                     what="the spool handed back to Kafka")
            back_at = trainer.logged
            wait_for(lambda: trainer.logged, lambda n: n > back_at + RATE,
                     what="direct sends again")
    finally:
        start_broker(kafka_env)
    assert run.finish(timeout_s=60) is True
    delivery = run.delivery()
    print(f"\n{trainer.logged} points across a killed broker; slowest log() "
          f"{trainer.slowest_s * 1e3:.1f} ms; {len(constructed)} producers constructed")
    assert "runstream-producer-sender" not in constructed
    assert delivery.points_logged == trainer.logged
    assert delivery.points_dropped == 0 and delivery.points_pending == 0
    client = ingest(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    n = trainer.logged
    assert stored_points(client, run.id) == (n, n, 0, n - 1)


# --- 4 and 5. bodies over the broker's size and the consumer's count limits -----------


def test_oversized_and_over_limit_bodies_are_split_and_all_stored(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str,
    tmp_path: Path, env: dict[str, str],
):
    spool_dir = tmp_path / "spool"
    run = runstream.init("big", kafka=kafka_bootstrap, topic=kafka_topic,
                         spool_dir=spool_dir, environ=env)
    transport: Any = run._ensure_sender().transport
    assert run.flush(timeout_s=60)  # connected (events wait in memory until then)
    big = {f"p{i:04d}": "v" * 6000 for i in range(3000)}  # ~18 MB in one call
    many = {f"k{i}": i for i in range(100_001)}  # over MAX_ITEMS_PER_EVENT
    run.log_params(big)
    run.log_params(many)
    run.set_tags({f"t{i}": "x" * 5000 for i in range(4000)})  # ~20 MB of tags
    for i in range(50_000):
        run.log({"loss": float(i)}, step=i)
    assert run.finish(timeout_s=60) is True
    delivery = run.delivery()
    assert transport.spooled == 0 and spool.ready_files(spool_dir) == []
    assert delivery.points_sent == delivery.points_logged == 50_000
    assert delivery.dropped == {}
    client = ingest(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    params = client.query(f"SELECT count(), sum(length(value)) FROM {tables.PARAMS.name} "
                          "FINAL WHERE run_id = {r:String}",
                          parameters={"r": run.id}).result_rows
    assert params[0][0] == 3000 + 100_001
    assert params[0][1] == 3000 * 6000 + sum(len(str(i)) for i in range(100_001))
    tags = client.query(f"SELECT count() FROM {tables.TAGS.name} FINAL "
                        "WHERE run_id = {r:String}", parameters={"r": run.id}).result_rows
    assert tags[0][0] == 4000
    assert stored_points(client, run.id) == (50_000, 50_000, 0, 49_999)


def test_a_spooled_record_kafka_never_takes_is_set_aside_not_retried_forever(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
):
    """A spool file holding a record over the producer's max_request_size (an older SDK
    wrote it; today's cuts events to EVENT_BYTES) between two good ones: the good
    frames go to Kafka, the file is kept whole as ``.unsendable``, sends go direct again
    and later files are drained, instead of every file going back each KAFKA_RETRY_S."""
    from kafka import KafkaConsumer

    from runstream.transport import KafkaTransport, SpoolTransport

    directory = tmp_path / "spool"
    spooler = SpoolTransport(directory, "p" * 32, "protobuf", roll_s=0.0)
    transport = KafkaTransport(kafka_bootstrap, kafka_topic, "protobuf", spooler)
    key = b"run/0"
    transport._enter_spooling("a test outage")
    for payload in (b"good-1", b"x" * (17 << 20), b"good-2"):
        transport.send(key, payload)
    spooler.publish()
    transport.send(key, b"good-3")  # a later file
    spooler.publish()
    assert len(spooler.own_ready_files()) >= 2
    wait_for(lambda: (transport.maintain(), not transport.spooling
                      and not transport._draining)[1], timeout_s=60,
             what="the spool drained back to Kafka")
    transport.send(key, b"direct")
    assert transport.close(10.0) is True
    kept = sorted(p.name for p in directory.iterdir())
    assert len(kept) == 1 and kept[0].endswith(".unsendable"), kept
    assert (directory / kept[0]).stat().st_size > 17 << 20

    consumer = KafkaConsumer(kafka_topic, bootstrap_servers=kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    try:
        values = sorted(r.value for r in consumer)
    finally:
        consumer.close()
    assert values == [b"direct", b"good-1", b"good-2", b"good-3"]
