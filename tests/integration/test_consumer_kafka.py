"""Kafka -> ClickHouse against the real broker and the real engine (chdb)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from runstream.consumer.dlq import OFFSET_HEADER, PARTITION_HEADER, REASON_HEADER, TOPIC_HEADER
from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.proto import codec, tables
from runstream.proto.v1 import events_pb2 as pb
from tests.factories import make_config, metrics_event, sample_run
from tests.helpers import count, create_topic, produce, send_raw, wait_for

pytestmark = pytest.mark.kafka


def all_rows(client: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for t in tables.TABLES:
        cols = ", ".join(t.column_names)
        rows = client.query(f"SELECT {cols} FROM {t.name} FINAL ORDER BY {cols}").result_rows
        out[t.name] = [tuple("nan" if v != v else v for v in r) for r in rows]
    return out


def read_dlq(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    consumer.assign([TopicPartition(f"{topic}.dlq", 0)])
    got: list[Any] = []
    try:
        def fetch() -> int:
            for batch in consumer.poll(timeout_ms=200).values():
                got.extend(batch)
            return len(got)
        wait_for(fetch, lambda n: n >= expected, timeout_s=30, what="dead letters")
        assert not any(consumer.poll(timeout_ms=300).values())
    finally:
        consumer.close()
    return got


def two_runs() -> list[pb.RunEvent]:
    events = []
    for run_id in ("run-a", "run-b"):
        for rank in (0, 1):
            events += sample_run(run_id, rank, points=50, producer_id=f"{run_id}-p{rank}")
    return events


def test_valid_events_stored_once_malformed_dead_lettered(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
):
    events = two_runs()
    half = len(events) // 2
    produce(kafka_bootstrap, kafka_topic, events[:half], codec.PROTOBUF)
    produce(kafka_bootstrap, kafka_topic, events[half:], codec.AVRO)
    bad_run_id = metrics_event(3, run_id="has space", seq=99)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    malformed = [
        (os.urandom(64), codec.PROTOBUF_CONTENT_TYPE),
        (codec.encode(metrics_event(20, seq=100))[:-7], codec.PROTOBUF_CONTENT_TYPE),
        (codec.encode(metrics_event(20, seq=101), codec.AVRO)[:-3], codec.AVRO_CONTENT_TYPE),
        (codec.encode(bad_run_id), codec.PROTOBUF_CONTENT_TYPE),
        (b"{}", "application/json"),
    ]
    for value, ct in malformed:
        send_raw(producer, kafka_topic, value, ct, "bad/0")
    producer.flush()
    producer.close()

    config = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    pipeline = build_kafka_pipeline(config)
    try:
        assert pipeline.drain(timeout_s=60)
    finally:
        pipeline.close()

    client = connect_clickhouse(chdb_dsn, ch_database)
    assert count(client, "metrics") == 4 * 100
    assert count(client, "runs") == 4
    assert count(client, "run_status") == 8
    assert count(client, "param_values") == 8
    assert count(client, "tags") == 2  # keyed by (run, key)
    assert count(client, "artifacts") == 4
    assert count(client, "inputs") == 4
    assert count(client, "heartbeats") == 4
    status = client.query(
        "SELECT run_id, rank, argMax(status, seq) FROM run_status FINAL GROUP BY run_id, rank"
    ).result_rows
    assert {r[2] for r in status} == {"FINISHED"}
    assert (pipeline.events, pipeline.dead_lettered) == (len(events), len(malformed))

    dead = read_dlq(kafka_bootstrap, kafka_topic, len(malformed))
    assert len(dead) == len(malformed)
    assert sorted(r.value for r in dead) == sorted(v for v, _ in malformed)
    for r in dead:
        headers = dict(r.headers)
        assert headers[TOPIC_HEADER].decode() == kafka_topic
        assert int(headers[PARTITION_HEADER]) in range(4)
        assert int(headers[OFFSET_HEADER]) >= 0
        assert headers[REASON_HEADER]
        assert r.key == b"bad/0"
    reasons = {dict(r.headers)[REASON_HEADER].decode() for r in dead}
    assert any("run_id" in reason for reason in reasons)
    assert any("content-type" in reason for reason in reasons)

    # Every offset is committed: a new pipeline in the same group finds nothing to do.
    again = build_kafka_pipeline(config)
    try:
        assert again.drain(timeout_s=60)
        assert again.messages == 0
    finally:
        again.close()


def test_replay_does_not_duplicate(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
):
    events = two_runs()
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    config = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    first = build_kafka_pipeline(config)
    try:
        assert first.drain(timeout_s=60)
    finally:
        first.close()
    client = connect_clickhouse(chdb_dsn, ch_database)
    before = all_rows(client)
    assert len(before["metrics"]) == 400

    # Same topic again from the beginning (a new group), with different batch boundaries.
    for max_rows in (50_000, 7):
        replay = build_kafka_pipeline(
            make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path,
                        max_batch_rows=max_rows))
        try:
            assert replay.drain(timeout_s=60)
            assert replay.events == len(events)
        finally:
            replay.close()
        assert all_rows(client) == before


def test_protobuf_and_avro_give_identical_rows(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
):
    events = two_runs()
    events[4].metrics.values[0] = float("nan")
    events[4].metrics.values[1] = float("-inf")
    avro_topic = f"{kafka_topic}-avro"
    create_topic(kafka_bootstrap, avro_topic)
    create_topic(kafka_bootstrap, f"{avro_topic}.dlq", 1)
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    produce(kafka_bootstrap, avro_topic, events, codec.AVRO)
    results = []
    for topic, database in ((kafka_topic, ch_database), (avro_topic, f"{ch_database}_avro")):
        pipeline = build_kafka_pipeline(
            make_config(kafka_bootstrap, topic, chdb_dsn, database, tmp_path))
        try:
            assert pipeline.drain(timeout_s=60)
            assert pipeline.dead_lettered == 0
        finally:
            pipeline.close()
        results.append(all_rows(connect_clickhouse(chdb_dsn, database)))
    assert results[0] == results[1]
    assert len(results[0]["metrics"]) == 400


def test_ingest_rate(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
):
    """Points/s of the pipeline over points already in Kafka (RUNSTREAM_BENCH_POINTS)."""
    total = int(os.environ.get("RUNSTREAM_BENCH_POINTS", "200000"))
    per_event = 1000
    events = [metrics_event(per_event, run_id=f"run-{i % 8}", rank=0, seq=i // 8 + 1,
                            producer_id=f"p{i % 8}", keys=("loss", "acc", "lr", "grad_norm"))
              for i in range(total // per_event)]
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    pipeline = build_kafka_pipeline(
        make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path))
    try:
        # Includes joining the group (well under a second on the test broker).
        started = time.perf_counter()
        assert pipeline.drain(timeout_s=600)
        elapsed = time.perf_counter() - started
    finally:
        pipeline.close()
    client = connect_clickhouse(chdb_dsn, ch_database)
    assert count(client, "metrics") == total
    print(f"\ningested {pipeline.points} points in {elapsed:.2f}s: "
          f"{pipeline.points / elapsed:,.0f} points/s "
          f"(of which ClickHouse writes {pipeline.write_s:.2f}s, {pipeline.batches} batches)")
