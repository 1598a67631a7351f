"""Spool -> ClickHouse (the embedded mode) against the real engine (chdb)."""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

from runstream.consumer.config import ConsumerConfig
from runstream.consumer.dlq import read_spool_dead_letters
from runstream.consumer.factories import build_spool_pipeline, connect_clickhouse
from runstream.proto import codec, spool
from tests.factories import TS, metrics_event, sample_run
from tests.helpers import count, wait_for


def make_config(dsn: str, database: str, spool_dir: Path) -> ConsumerConfig:
    return ConsumerConfig(clickhouse_dsn=dsn, database=database, spool_dir=spool_dir)


def ingest(dsn: str, database: str, spool_dir: Path) -> Any:
    """Drain the spool into ClickHouse with a spool pipeline; return a client to read it."""
    pipeline = build_spool_pipeline(make_config(dsn, database, spool_dir))
    try:
        assert pipeline.drain(timeout_s=60)
    finally:
        pipeline.close()
    return connect_clickhouse(dsn, database)


def spool_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def test_spool_files_ingested_then_deleted(chdb_dsn: str, ch_database: str, tmp_path: Path):
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-a", roll_bytes=2000)
    for i, e in enumerate(sample_run("run-s", 0, points=40, producer_id="prod-a")):
        writer.append(codec.encode(e, codec.AVRO if i % 2 else codec.PROTOBUF),
                      codec.AVRO if i % 2 else codec.PROTOBUF)
    writer.roll()
    writer.append(b"\x01not an event", codec.PROTOBUF)  # decodes badly -> dead letter
    writer.roll()
    assert len(spool.ready_files(spool_dir)) >= 2

    client = ingest(chdb_dsn, ch_database, spool_dir)
    assert count(client, "metrics") == 80
    assert count(client, "runs") == 1
    assert count(client, "run_status") == 2
    assert spool_files(spool_dir) == []  # every file deleted; dead/ is a directory
    [dead] = read_spool_dead_letters(spool_dir)
    assert dead["payload"] == b"\x01not an event"
    assert dead["reason"].startswith("DecodeError")


def test_torn_tail_frames_before_it_stored_rest_dead_lettered(
    chdb_dsn: str, ch_database: str, tmp_path: Path
):
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-b")
    for seq in (1, 2):
        writer.append(codec.encode(metrics_event(10, run_id="run-t", seq=seq)), codec.PROTOBUF)
    path = writer.roll()
    assert path is not None
    good = path.read_bytes()
    torn = b"\x40\x00\x00\x00" + zlib.crc32(b"x").to_bytes(4, "little") + b"\x00partial"
    path.write_bytes(good + torn)
    # A .part file left by a process that is gone is recovered at start.
    orphan = spool_dir / "prod-c-999999999-00000001.part"
    w2 = spool.SpoolWriter(tmp_path / "other", "prod-c")
    w2.append(codec.encode(metrics_event(5, run_id="run-o", seq=1, producer_id="prod-c")),
              codec.PROTOBUF)
    other = w2.roll()
    assert other is not None
    os.replace(other, orphan)

    client = ingest(chdb_dsn, ch_database, spool_dir)
    rows = client.query(
        "SELECT run_id, count() FROM metrics FINAL GROUP BY run_id ORDER BY run_id"
    ).result_rows
    assert rows == [("run-o", 5), ("run-t", 20)]
    assert spool_files(spool_dir) == []
    [dead] = read_spool_dead_letters(spool_dir)
    assert dead["payload"] == torn
    assert dead["offset"] == len(good)
    assert "corrupt" in dead["reason"]


def test_running_pipeline_picks_up_new_files_and_stops_cleanly(
    chdb_dsn: str, ch_database: str, tmp_path: Path
):
    spool_dir = tmp_path / "spool"
    config = make_config(chdb_dsn, ch_database, spool_dir)
    pipeline = build_spool_pipeline(config)
    stop = threading.Event()
    thread = pipeline.start(stop)
    try:
        assert thread.name == "runstream-consumer-spool"
        writer = spool.SpoolWriter(spool_dir, "prod-live")
        for seq in range(1, 6):
            writer.append(codec.encode(metrics_event(100, run_id="run-live", seq=seq,
                                                     producer_id="prod-live")), codec.PROTOBUF)
            writer.roll()
        client = connect_clickhouse(chdb_dsn, ch_database)
        wait_for(lambda: count(client, "metrics"), lambda n: n == 500, timeout_s=30,
                 what="spooled points in ClickHouse")
        wait_for(lambda: spool_files(spool_dir), lambda f: f == [], timeout_s=30,
                 what="spool files deleted")
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert pipeline.error is None
    assert pipeline.points == 500


def test_metric_summaries_keep_the_value_at_the_highest_step_then_ts(
    chdb_dsn: str, ch_database: str, tmp_path: Path
):
    """The summary's "last" orders by step, then ts_ms (a packed UInt128 key): steps past
    2^32, a second value at the same step logged later, and replays all come out right."""
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-a")

    def event(seq: int, points: list[tuple[int, float, int]]) -> bytes:
        e = metrics_event(1, run_id="run-last", seq=seq, keys=("loss",))
        m = e.metrics
        del m.key_index[:], m.steps[:], m.values[:], m.ts_ms[:]
        for step, value, ts_ms in points:
            m.key_index.append(0)
            m.steps.append(step)
            m.values.append(value)
            m.ts_ms.append(ts_ms)
        return codec.encode(e)

    big = 5 << 32  # would wrap in a 32-bit packing
    payloads = [
        event(1, [(big, 1.0, TS + 5), (7, 9.0, TS + 9)]),   # highest step wins over later ts
        event(2, [(big, 2.0, TS + 6), (big, 0.5, TS + 1)]),  # same step: later ts wins
        event(3, [(3, -4.0, TS + 99)]),                      # lower step, latest ts: not last
    ]
    for payload in [*payloads, payloads[1]]:  # the replayed event changes nothing
        writer.append(payload, codec.PROTOBUF)
    writer.roll()
    client = ingest(chdb_dsn, ch_database, spool_dir)
    [row] = client.query(
        "SELECT argMaxMerge(last), max(last_step), min(min), max(max) FROM metric_summaries"
        " WHERE run_id = 'run-last' AND key = 'loss'").result_rows
    assert row == (2.0, big, -4.0, 9.0)
