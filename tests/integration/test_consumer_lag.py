"""The lag report never runs on the pipeline thread (real broker, real engine).

With the broker down, each end-offsets or committed-offsets request of the lag report
blocks for its request timeout: on the pipeline thread that stalled ingestion after a
broker restart. The report now runs on the source's own thread; the pipeline thread
only reads its snapshot.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.consumer.sources import KafkaSource
from runstream.proto import codec
from tests.factories import make_config, metrics_event
from tests.helpers import count, produce, wait_for

pytestmark = pytest.mark.kafka


def test_the_pipeline_thread_never_reads_the_lag(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, str]] = []  # (what, thread name)

    def recording(name: str, original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.current_thread().name))
            return original(*args, **kwargs)
        return call

    # Every broker round trip a lag report makes, on any consumer, and the report itself.
    for name in ("end_offsets", "committed"):
        monkeypatch.setattr(KafkaConsumer, name, recording(name, getattr(KafkaConsumer, name)))
    monkeypatch.setattr(KafkaSource, "_read_lag", recording("_read_lag", KafkaSource._read_lag))

    events = [metrics_event(100, run_id="lag-1", seq=s, step0=s * 100) for s in range(1, 21)]
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    pipeline = build_kafka_pipeline(make_config(
        kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path, progress_interval_s=0.2))
    stop = threading.Event()
    thread = pipeline.start(stop)
    client = connect_clickhouse(chdb_dsn, ch_database)
    try:
        wait_for(lambda: count(client, "metrics"), lambda n: n == 2000, what="the points")
        # The lag report reached the pipeline's progress: 20 messages, all committed.
        wait_for(lambda: pipeline.progress()[0],
                 lambda o: sum(e for _, e in o.values()) == 20
                 and all(c == e for c, e in o.values()),
                 what="a lag report with every message committed")
    finally:
        stop.set()
        thread.join(60)
        client.close()
    assert pipeline.error is None
    threads = {t for what, t in calls if what in ("_read_lag", "end_offsets")}
    assert threads == {"runstream-consumer-lag"}
    # committed() on the pipeline thread: only the store check of new partitions, once
    # each per assignment (4 partitions; a rejoin assigns them again).
    on_pipeline = [what for what, t in calls if t == pipeline.name]
    assert set(on_pipeline) == {"committed"} and len(on_pipeline) % 4 == 0, on_pipeline
