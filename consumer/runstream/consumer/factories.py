"""Wiring of the consumer's parts: ClickHouse connections, the two pipelines, the monitors.

What ``runstream consume`` and ``runstream serve`` call::

    client = connect_clickhouse(config.clickhouse_dsn, config.database)
    pipeline = build_kafka_pipeline(config, client=client)   # or build_spool_pipeline
    pipeline.start(stop)                                      # thread "runstream-consumer"
    monitors = start_monitors(config, [pipeline], stop, client=client)
    ...                                                       # SIGTERM handler: stop.set()

With chdb, one process opens one path, so the embedded ``runstream serve`` runs the
pipelines and the query service in one process; each opens its own handles to that one
engine (a process may hold any number).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from runstream.consumer.config import ConsumerConfig
from runstream.consumer.dlq import KafkaDeadLetterSink, SpoolDeadLetterSink
from runstream.consumer.liveness import LivenessChecker
from runstream.consumer.pipeline import Pipeline
from runstream.consumer.progress import ProgressReporter
from runstream.consumer.sink import ClickHouseSink
from runstream.consumer.sources import KafkaSource, SpoolSource
from runstream.consumer.topics import ensure_topics
from runstream.proto import config as names
from runstream.proto.errors import ConfigError, UnavailableError


def connect_clickhouse(dsn: str, database: str) -> Any:
    """A clickhouse-connect client for ``dsn`` whose default database is ``database``,
    created if missing. ``dsn`` is ``chdb:///abs/path`` (embedded engine, one path per
    process) or ``http(s)://host:port``. Blocks; raises UnavailableError if unreachable,
    ConfigError for a malformed DSN or database name."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    names.check_dsn(names.CLICKHOUSE, dsn)
    names.check_database(names.CLICKHOUSE_DATABASE, database)
    try:
        bootstrap = clickhouse_connect.get_client(dsn=dsn)
        try:
            bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        finally:
            bootstrap.close()
        return clickhouse_connect.get_client(dsn=dsn, database=database)
    except (ClickHouseError, OSError) as e:
        raise UnavailableError(f"cannot open ClickHouse at {dsn}: {e}") from e


def _sink(config: ConsumerConfig, client: Any | None) -> ClickHouseSink:
    """A sink with ``config.writers`` connections: ``client`` (or a new one) and its own
    extra ones (with chdb, more handles to the engine this process already hosts)."""
    if client is None:
        client = connect_clickhouse(config.clickhouse_dsn, config.database)
    more = [connect_clickhouse(config.clickhouse_dsn, config.database)
            for _ in range(config.writers - 1)]
    sink = ClickHouseSink(client, config.database, more_clients=more)
    try:
        sink.ensure_schema(config.clickhouse_dsn)
    except BaseException:
        sink.close()
        raise
    return sink


def build_kafka_pipeline(config: ConsumerConfig, *, client: Any | None = None) -> Pipeline:
    """The Kafka → ClickHouse pipeline (dead letters to ``<topic>.dlq``), schema ensured.

    Pass ``client`` to share one ClickHouse client (the sink opens
    ``config.writers - 1`` more of its own). Raises ConfigError when
    ``config.kafka_bootstrap`` is empty.
    """
    if not config.kafka_bootstrap:
        raise ConfigError(f"{names.KAFKA} is not set: no Kafka to consume from")
    sink = _sink(config, client)
    membership: dict[str, Any] = (
        {"group_instance_id": config.instance_id} if config.instance_id else {}
    )
    try:
        ensure_topics(config.kafka_bootstrap, config.topics, config.topic, config.dlq_topic,
                      client_id=config.client_id)
        source = KafkaSource(
            config.kafka_bootstrap, config.topic, config.group_id,
            max_poll_records=config.max_poll_records, client_id=config.client_id,
            store_id=sink.store_id, lag_interval_s=config.progress_interval_s, **membership,
        )
        try:
            dead = KafkaDeadLetterSink(config.kafka_bootstrap, config.dlq_topic,
                                       client_id=f"{config.client_id}-dlq")
        except BaseException:
            source.close()
            raise
    except BaseException:
        sink.close()
        raise
    return Pipeline(source, sink, dead, config, name="runstream-consumer")


def build_spool_pipeline(config: ConsumerConfig, *, client: Any | None = None) -> Pipeline:
    """The spool → ClickHouse pipeline of the embedded mode (dead letters to
    ``<spool_dir>/dead/``), schema ensured. See :func:`build_kafka_pipeline` on ``client``."""
    sink = _sink(config, client)
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    return Pipeline(SpoolSource(config.spool_dir), sink, SpoolDeadLetterSink(config.spool_dir),
                    config, name="runstream-consumer-spool")


def start_monitors(
    config: ConsumerConfig,
    pipelines: Sequence[Pipeline],
    stop: threading.Event,
    *,
    client: Any | None = None,
    echo: Callable[[str], None] | None = None,
) -> list[threading.Thread]:
    """Start the CRASHED detection (``runstream-consumer-liveness``) and the progress
    reporter (``runstream-consumer-progress``) for this process's ``pipelines``; both
    stop when ``stop`` is set. With chdb they share ``client``; over HTTP each opens its
    own (one HTTP session serves one query at a time). Liveness passes run only while
    every pipeline is caught up (a poll that was not full within the crash timeout)."""
    shared = client is not None and config.clickhouse_dsn.startswith("chdb:")

    def own_client() -> Any:
        if shared:
            return client
        return connect_clickhouse(config.clickhouse_dsn, config.database)

    def ready() -> bool:
        now = time.monotonic()
        return all(
            p.last_unsaturated_poll is not None
            and now - p.last_unsaturated_poll <= config.crash_timeout_s
            for p in pipelines
        )

    liveness = LivenessChecker(own_client(), config.database,
                               timeout_s=config.crash_timeout_s, ready=ready)
    reporter = ProgressReporter(own_client(), config.database, pipelines,
                                interval_s=config.progress_interval_s, echo=echo)
    return [liveness.start(stop), reporter.start(stop)]
