"""``runstream sync`` against the real broker: a record Kafka will never take is kept aside
and never blocks the frames and files after it; an unreachable broker stops the sync and
leaves every file in the spool."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runstream.cli.main import main
from runstream.proto import codec, spool
from runstream.proto.errors import UnavailableError
from runstream.sync import sync
from tests.factories import metrics_event
from tests.helpers import free_port


def _read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    """Every value in ``topic``, polling until ``expected`` arrived (then a little more, to
    catch extras) or the deadline."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=64 << 20)
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    extra_until: float | None = None
    try:
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in batch]
            if len(values) >= expected:
                extra_until = extra_until or time.monotonic() + 2
                if time.monotonic() > extra_until:
                    break
    finally:
        consumer.close()
    return values


def test_a_record_kafka_never_takes_is_kept_aside_and_later_files_are_sent(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-sync", roll_bytes=64 << 20)
    good = [codec.encode(metrics_event(10, run_id="run-sync", seq=seq, producer_id="prod-sync"))
            for seq in range(1, 6)]
    oversized = b"\x0a" + b"x" * (18 << 20)  # over max_request_size and message.max.bytes
    writer.append(good[0], codec.PROTOBUF)
    writer.append(oversized, codec.PROTOBUF)
    writer.append(good[1], codec.PROTOBUF)
    first = writer.roll()
    for payload in good[2:]:
        writer.append(payload, codec.PROTOBUF)
    later = writer.roll()
    assert first is not None and later is not None
    original = first.read_bytes()

    rc = main(["sync", "--kafka", kafka_bootstrap, "--topic", kafka_topic,
               "--spool-dir", str(spool_dir)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "sent 5 event(s)" in out and "from 2 spool file(s)" in out
    assert "NOT SENT" in out and "MessageSizeTooLargeError" in out
    assert "1 file(s) kept aside (1 record(s) Kafka refused for good" in out
    assert "SyncStats(" not in out

    assert sorted(_read_topic(kafka_bootstrap, kafka_topic, expected=5)) == sorted(good)
    kept = first.with_suffix(".unsendable")
    assert kept.read_bytes() == original  # kept whole, to send again once fixed
    assert sorted(p.name for p in spool_dir.iterdir()) == [kept.name]

    stats = sync(spool_dir, kafka_bootstrap, kafka_topic)  # nothing left to do
    assert (stats.files, stats.events, stats.unsendable) == (0, 0, [])


def test_unreachable_broker_stops_the_sync_and_keeps_every_file(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-down")
    for seq in (1, 2):
        writer.append(codec.encode(metrics_event(10, seq=seq, producer_id="prod-down")),
                      codec.PROTOBUF)
        writer.roll()
    before = spool.ready_files(spool_dir)
    with pytest.raises(UnavailableError):
        sync(spool_dir, f"127.0.0.1:{free_port()}", "rs-nowhere")
    assert spool.ready_files(spool_dir) == before
