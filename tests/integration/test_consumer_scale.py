"""Two pipelines of one consumer group, ClickHouse refusing for a while, and progress rows.

Both pipelines run in this process, each with its own KafkaConsumer (a real group member)
and the shared chdb client, so exactness is checked on one shared store (chdb opens one
path per process). Two real `runstream consume` processes, each with its own store, are
tests/e2e/test_consumer_group_e2e.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from kafka import KafkaAdminClient, KafkaConsumer

from runstream.consumer.dlq import KafkaDeadLetterSink
from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.consumer.pipeline import Pipeline
from runstream.consumer.progress import ProgressReporter
from runstream.consumer.sink import ClickHouseSink
from runstream.consumer.sources import KafkaSource
from runstream.proto import codec
from tests.factories import make_config, metrics_event
from tests.helpers import produce, wait_for

pytestmark = pytest.mark.kafka


def many_events(n: int) -> list[Any]:
    return [metrics_event(100, run_id=f"run-{i % 8}", rank=0, seq=i // 8 + 1,
                          producer_id=f"p{i % 8}") for i in range(n)]


def metric_count(client: Any) -> int:
    return int(client.query("SELECT count() FROM metrics FINAL").result_rows[0][0])


def group_committed(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="rs-test-offsets")
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return sum(o.offset for o in offsets.values() if o.offset > 0)


class RefusingClient:
    """A real ClickHouse client whose first ``failures`` inserts fail as a refused
    connection does (clickhouse-connect's OperationalError)."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client = client
        self.failures = failures
        self.refused = 0

    def _refuse(self) -> None:
        if self.refused < self.failures:
            self.refused += 1
            raise OperationalError("Connection refused (test)")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse()
        return self._client.insert(*args, **kwargs)

    def insert_arrow(self, *args: Any, **kwargs: Any) -> Any:  # metric points
        self._refuse()
        return self._client.insert_arrow(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_clickhouse_refusing_is_retried_not_committed_not_dead_lettered(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    events = many_events(40)
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    config = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    real = connect_clickhouse(chdb_dsn, ch_database)
    flaky = RefusingClient(real, failures=6)
    sink = ClickHouseSink(flaky, ch_database, initial_backoff_s=0.05, max_backoff_s=0.2)
    sink.ensure_schema()
    source = KafkaSource(config.kafka_bootstrap, config.topic, config.group_id)
    dead = KafkaDeadLetterSink(config.kafka_bootstrap, config.dlq_topic)
    commits: list[int] = []
    commit = source.commit

    def recording_commit(positions: Any) -> None:
        commits.append(flaky.refused)  # how many refusals had happened when it committed
        commit(positions)

    source.commit = recording_commit  # type: ignore[method-assign]
    pipeline = Pipeline(source, sink, dead, config)
    try:
        assert pipeline.drain(timeout_s=60)
    finally:
        pipeline.close()
    assert flaky.refused == 6 and sink.retries == 6
    assert commits and min(commits) == 6  # nothing committed while ClickHouse refused
    assert pipeline.dead_lettered == 0
    assert metric_count(real) == 40 * 100


def test_two_pipelines_share_partitions_and_take_over_exactly(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    events = many_events(400)
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    config = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path,
                         max_batch_rows=2000, max_poll_records=10, progress_interval_s=0.2)
    client = connect_clickhouse(chdb_dsn, ch_database)
    a = build_kafka_pipeline(config, client=client)
    b = build_kafka_pipeline(config, client=client)
    stop_b = threading.Event()
    try:
        # A takes its share (all partitions until B joins) and stops mid-stream without
        # writing or committing the batch in hand, as a killed process would.
        while a.points < 3000:
            a.run_once()
        assert a._batch.rows > 0 or a.batches > 0
        assert group_committed(kafka_bootstrap, config.group_id) < len(events)
        thread_b = b.start(stop_b)
        a.source.close()  # leaves the group: B is given A's partitions
        a._closed = True
        wait_for(lambda: metric_count(client), lambda n: n >= len(events) * 100,
                 timeout_s=90, what="B to ingest everything")
        wait_for(lambda: group_committed(kafka_bootstrap, config.group_id),
                 lambda n: n >= len(events), timeout_s=60, what="every offset committed")
        # Progress rows: B's partitions (all four after A left), lag 0 once caught up.
        reporter = ProgressReporter(client, ch_database, [b], consumer_id="consumer-b")
        rows = wait_for(reporter.report_once,
                        lambda rs: len(rs) == 4 and all(r.lag == 0 for r in rs),
                        timeout_s=30, what="progress rows with lag 0")
        assert {r.partition for r in rows} == {0, 1, 2, 3}
        assert all(r.source == "kafka" and r.topic == kafka_topic for r in rows)
        stored = client.query(
            "SELECT partition, lag, committed_offset, end_offset FROM ingest_progress FINAL"
            " WHERE consumer_id = 'consumer-b' ORDER BY partition").result_rows
        assert [(p, lag) for p, lag, _, _ in stored] == [(p, 0) for p in range(4)]
        assert sum(c for _, _, c, _ in stored) == len(events)
    finally:
        stop_b.set()
        a.close()
    thread_b.join(timeout=60)
    assert b.error is None
    # Exact: every point once, though A's last batch and B's re-read overlap.
    assert metric_count(client) == len(events) * 100
    assert int(client.query("SELECT sum(points) FROM metric_counts FINAL").result_rows[0][0]) \
        == len(events) * 100


def test_a_consumer_kept_out_of_a_forming_group_is_rebuilt_and_ingests_everything_once(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A consumer with nothing assigned has no commit to be refused: KafkaSource rebuilds it
    once it has stayed outside a formed group too long (sources.REBALANCE_STUCK_S). Here
    the group cannot form because a member joined and stopped polling: a newcomer's join
    waits for it to rejoin until its heartbeat thread leaves the group after
    ``max_poll_interval_ms``. The consumer is rebuilt meanwhile, and then ingests every
    point once."""
    events = many_events(40)
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    config = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path)
    blocker = KafkaConsumer(kafka_topic, bootstrap_servers=kafka_bootstrap,
                            group_id=config.group_id, enable_auto_commit=False,
                            max_poll_interval_ms=12_000, client_id="rs-test-blocker")
    try:
        wait_for(lambda: blocker.poll(timeout_ms=200) is not None and blocker.assignment(),
                 timeout_s=60, what="the blocking member to join")
        client = connect_clickhouse(chdb_dsn, ch_database)
        sink = ClickHouseSink(client, ch_database)
        sink.ensure_schema()
        source = KafkaSource(config.kafka_bootstrap, config.topic, config.group_id,
                             store_id=sink.store_id, rebalance_stuck_s=2.0)
        dead = KafkaDeadLetterSink(config.kafka_bootstrap, config.dlq_topic)
        pipeline = Pipeline(source, sink, dead, config)
        with caplog.at_level(logging.WARNING, logger="runstream.consumer.sources"):
            try:
                assert pipeline.drain(timeout_s=90)
            finally:
                pipeline.close()
    finally:
        blocker.close(autocommit=False)
    rebuilds = [r.getMessage() for r in caplog.records
                if "outside a formed consumer group" in r.getMessage()]
    assert rebuilds, "the consumer was never rebuilt while the group could not form"
    assert pipeline.dead_lettered == 0
    assert metric_count(client) == len(events) * 100
    assert int(client.query("SELECT sum(points) FROM metric_counts FINAL").result_rows[0][0]) \
        == len(events) * 100
