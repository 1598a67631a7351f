"""The SDK against the real Kafka broker: direct sends, and spool -> sync replay."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

import runstream
from runstream.proto import codec, spool
from runstream.proto.v1 import events_pb2
from runstream.sync import sync
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka


def consume(bootstrap: str, topic: str, until: int) -> list[tuple[bytes, dict[str, bytes],
                                                                   events_pb2.RunEvent]]:
    """(key, headers, event) of the topic's records until `until` metric points are seen."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    records: list[tuple[bytes, dict[str, bytes], events_pb2.RunEvent]] = []

    def poll() -> int:
        for batch in consumer.poll(timeout_ms=500).values():
            for r in batch:
                headers = dict(r.headers)
                ct = headers[codec.CONTENT_TYPE_HEADER].decode()
                records.append((r.key, headers, codec.decode(r.value, ct)))
        return sum(len(e.metrics.steps) for _, _, e in records)

    try:
        wait_for(poll, lambda n: n >= until, timeout_s=60, what=f"{until} points")
        # Also wait for the run_finished event that follows the last points.
        wait_for(lambda: (poll(), any(e.HasField("run_finished") for *_, e in records))[1],
                 timeout_s=30, what="run_finished")
    finally:
        consumer.close()
    return records


def check_points(records, run_id: str, n: int) -> None:
    points = []
    for key, headers, event in records:
        assert key == f"{run_id}/0".encode()
        assert event.run_id == run_id
        assert headers[codec.CONTENT_TYPE_HEADER] == codec.CONTENT_TYPES["protobuf"].encode()
        if event.HasField("metrics"):
            m = event.metrics
            points += [(m.keys[k], s, v) for k, s, v in zip(m.key_index, m.steps, m.values,
                                                           strict=True)]
    assert sorted(points) == sorted(("loss", i, i * 0.25) for i in range(n))
    seqs = sorted(e.seq for *_, e in records)
    assert seqs == list(range(1, len(seqs) + 1))


def test_log_to_kafka_every_point_once(kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
                                       env):
    n = 10_000
    run = runstream.init("exp", kafka=kafka_bootstrap, topic=kafka_topic,
                         spool_dir=tmp_path / "spool", environ=env)
    for i in range(n):
        run.log({"loss": i * 0.25}, step=i)
    assert run.finish(timeout_s=30) is True
    assert spool.ready_files(tmp_path / "spool") == []  # nothing fell back to the spool
    records = consume(kafka_bootstrap, kafka_topic, n)
    check_points(records, run.id, n)
    assert records[0][2].HasField("run_started")


def test_spool_then_sync_into_kafka(kafka_bootstrap: str, kafka_topic: str, tmp_path: Path,
                                    env):
    n = 3_000
    spool_dir = tmp_path / "spool"
    run = runstream.init("exp", spool_dir=spool_dir, environ=env)
    for i in range(n):
        run.log({"loss": i * 0.25}, step=i)
    run.finish()
    files = spool.ready_files(spool_dir)
    assert files
    seen: list[tuple[int, int]] = []
    stats = sync(spool_dir, kafka_bootstrap, kafka_topic,
                 progress=lambda done, total: seen.append((done, total)))
    assert stats.files == len(files) and stats.corrupt == [] and stats.undecodable == 0
    assert seen[-1] == (len(files), len(files))
    assert spool.ready_files(spool_dir) == []
    check_points(consume(kafka_bootstrap, kafka_topic, n), run.id, n)


def test_unreachable_kafka_falls_back_to_spool(tmp_path: Path, env):
    from tests.conftest import free_port

    spool_dir = tmp_path / "spool"
    run = runstream.init("exp", kafka=f"127.0.0.1:{free_port()}", spool_dir=spool_dir,
                         environ=env)
    run.log({"loss": 1.0}, step=0)
    run.finish(timeout_s=30)
    events = [codec.decode(f.payload) for p in spool.ready_files(spool_dir)
              for f in spool.read_frames(p)]
    kinds = [e.WhichOneof("body") for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished" and "metrics" in kinds
