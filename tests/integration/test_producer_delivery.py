"""The SDK against the real Kafka broker: a broker outage in the middle of a run, and
Avro events through Kafka."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

import runstream
from runstream.proto import codec, spool
from runstream.proto.v1 import events_pb2
from tests.helpers import REPO, wait_for

pytestmark = pytest.mark.kafka


KAFKA_SH = str(REPO / "deploy" / "kafka.sh")


OUTAGE_S = 20.0


def consume_run(bootstrap: str, topic: str, run_id: str
                ) -> list[tuple[bytes, str, events_pb2.RunEvent]]:
    """(key, content type, event) of the run's records in offset order, up to its
    run_finished event."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap,
                             group_id=f"test-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records: list[tuple[bytes, str, events_pb2.RunEvent]] = []

    def poll() -> bool:
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                ct = dict(r.headers)[codec.CONTENT_TYPE_HEADER].decode()
                event = codec.decode(r.value, ct)
                if event.run_id == run_id:
                    records.append((r.key, ct, event))
        return any(e.HasField("run_finished") for *_, e in records)

    try:
        wait_for(poll, timeout_s=60, what="the run's run_finished event")
    finally:
        consumer.close()
    return records


def test_broker_outage_loses_nothing_and_never_stalls_log(
    kafka_bootstrap: str, kafka_env: dict[str, str], kafka_topic: str, tmp_path: Path, env
):
    spool_dir = tmp_path / "spool"
    run = runstream.init("outage", kafka=kafka_bootstrap, topic=kafka_topic,
                         spool_dir=spool_dir, heartbeat_s=1.0, environ=env)
    stop_logging = threading.Event()
    logged: list[int] = []
    slowest = [0.0]

    def train() -> None:
        step = 0
        while not stop_logging.is_set():
            for _ in range(10):
                t0 = time.perf_counter()
                run.log({"loss": 1.0 / (step + 1), "acc": step * 0.5}, step=step)
                slowest[0] = max(slowest[0], time.perf_counter() - t0)
                logged.append(step)
                step += 1
            time.sleep(0.002)  # pacing of a training step, not a wait for a result

    trainer = threading.Thread(target=train, name="test-trainer")
    trainer.start()
    transport = run._ensure_sender().transport
    try:
        wait_for(lambda: len(logged), lambda n: n > 2000, what="logging under way")
        subprocess.run([KAFKA_SH, "stop"], env=kafka_env, check=True, timeout=60)
        stopped_at = time.monotonic()
        wait_for(lambda: getattr(transport, "spooling", False), timeout_s=OUTAGE_S,
                 what="the sender switching to the spool")
        wait_for(lambda: spool.ready_files(spool_dir), timeout_s=OUTAGE_S,
                 what="spool files")
        time.sleep(max(OUTAGE_S - (time.monotonic() - stopped_at), 0.0))  # the outage itself
    finally:
        subprocess.run([KAFKA_SH, "start"], env=kafka_env, check=True, timeout=120,
                       capture_output=True)
    try:
        wait_for(lambda: not transport.spooling, timeout_s=60,  # type: ignore[attr-defined]
                 what="the spool handed back to Kafka")
        n_before = len(logged)
        wait_for(lambda: len(logged), lambda n: n > n_before + 1000, what="direct sends")
    finally:
        stop_logging.set()
        trainer.join(30)
    assert run.finish(timeout_s=30) is True
    assert spool.ready_files(spool_dir) == []  # everything spooled was re-sent
    assert transport.resent_from_spool > 0  # type: ignore[attr-defined]

    records = consume_run(kafka_bootstrap, kafka_topic, run.id)
    assert {key for key, *_ in records} == {f"{run.id}/0".encode()}
    seqs = [e.seq for *_, e in records]
    assert seqs == list(range(1, len(seqs) + 1)), "events lost, duplicated or reordered"
    for key in ("loss", "acc"):
        steps = [s for *_, e in records if e.HasField("metrics")
                 for k, s in zip(e.metrics.key_index, e.metrics.steps, strict=True)
                 if e.metrics.keys[k] == key]
        assert steps == logged, f"{key}: points lost, duplicated or reordered"
    assert sum(e.HasField("heartbeat") for *_, e in records) >= OUTAGE_S / 2
    print(f"\n{len(logged)} log calls across a {OUTAGE_S:.0f} s broker outage; "
          f"slowest Run.log call {slowest[0] * 1e3:.2f} ms; "
          f"{transport.resent_from_spool} events re-sent from the spool")  # type: ignore[attr-defined]
    # How long log() took is measured by deploy/bench/bench_reliability.py, not asserted
    # here (this machine is shared): the sender never connects on its own thread
    # (test_producer_faults.py), so nothing in it waits on the broker.


def test_avro_events_through_kafka(kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
                                   env):
    env["RUNSTREAM_ENCODING"] = "avro"
    run = runstream.init("avro", kafka=kafka_bootstrap, topic=kafka_topic,
                         spool_dir=tmp_path / "spool", params={"lr": 0.1}, environ=env)
    for i in range(1000):
        run.log({"loss": i * 0.5}, step=i)
    assert run.finish(timeout_s=30) is True
    records = consume_run(kafka_bootstrap, kafka_topic, run.id)
    assert {ct for _, ct, _ in records} == {codec.AVRO_CONTENT_TYPE}
    kinds = [e.WhichOneof("body") for *_, e in records]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and "params" in kinds
    steps = [s for *_, e in records if e.HasField("metrics") for s in e.metrics.steps]
    assert steps == list(range(1000))
    assert records[0][2].run_started.env.python_version
