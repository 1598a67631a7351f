"""Configuration of the consumer: where events come from and where rows go.

Precedence as everywhere in Runstream: explicit argument (construct ``ConsumerConfig``
directly, or ``dataclasses.replace``) > ``RUNSTREAM_*`` environment variable > default;
``from_env`` reads, ``__post_init__`` checks (see :mod:`runstream.proto.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runstream.consumer.topics import TopicConfig
from runstream.proto import config as names

# Consumer-only variables (the shared ones live in runstream.proto.config).
GROUP_ID = "RUNSTREAM_CONSUMER_GROUP"
MAX_BATCH_ROWS = "RUNSTREAM_CONSUMER_MAX_BATCH_ROWS"
MAX_BATCH_AGE_S = "RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S"
CRASH_TIMEOUT_S = "RUNSTREAM_CRASH_TIMEOUT_S"
PROGRESS_S = "RUNSTREAM_CONSUMER_PROGRESS_S"
INSTANCE_ID = "RUNSTREAM_CONSUMER_INSTANCE_ID"
WRITERS = "RUNSTREAM_CONSUMER_WRITERS"

DEFAULT_GROUP_ID = "runstream-consumer"
DEFAULT_MAX_BATCH_ROWS = 200_000
DEFAULT_MAX_BATCH_AGE_S = 0.5
DEFAULT_CRASH_TIMEOUT_S = 60.0
DEFAULT_PROGRESS_S = 5.0
DEFAULT_WRITERS = 2


@dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    """Everything one consumer process needs. Immutable, so safe to share between threads."""

    #: Kafka bootstrap servers ("host:port"); empty = no Kafka (spool only).
    kafka_bootstrap: tuple[str, ...] = ()
    #: Topic of run events; dead letters go to ``<topic>.dlq``.
    topic: str = names.DEFAULT_TOPIC
    #: Kafka consumer group; every consumer process of one deployment shares it.
    group_id: str = DEFAULT_GROUP_ID
    #: "chdb:///abs/path" (embedded engine) or "http://host:8123".
    clickhouse_dsn: str
    #: ClickHouse database the tables live in (created if missing).
    database: str = names.DEFAULT_DATABASE
    #: The local spool directory the embedded mode ingests.
    spool_dir: Path
    #: Flush a batch to ClickHouse once it holds this many rows (all tables together) ...
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    #: ... or once its oldest message is this many seconds old.
    max_batch_age_s: float = DEFAULT_MAX_BATCH_AGE_S
    #: Batches written to ClickHouse at once, each on its own connection, while the next
    #: is decoded; commits still follow offset order.
    writers: int = DEFAULT_WRITERS
    #: Longest a single poll blocks waiting for messages, seconds.
    poll_timeout_s: float = 0.2
    #: Most messages one poll returns.
    max_poll_records: int = 5000
    #: Kafka client id prefix (shows up in broker logs and metrics).
    client_id: str = field(default="runstream-consumer")
    #: Kafka static membership (``group.instance.id``; empty = dynamic): a consumer that
    #: restarts with the same id gets its partitions back at once instead of after the
    #: session timeout (45 s). Give each consumer process of a deployment its own, stable id.
    instance_id: str = ""
    #: A RUNNING rank with no heartbeat or event for this many seconds becomes CRASHED.
    crash_timeout_s: float = DEFAULT_CRASH_TIMEOUT_S
    #: Seconds between progress rows (``ingest_progress``) and terminal progress lines.
    progress_interval_s: float = DEFAULT_PROGRESS_S
    #: Partitions and replication of the topics the consumer creates (and checks).
    topics: TopicConfig = field(default_factory=TopicConfig)

    def __post_init__(self) -> None:
        for server in self.kafka_bootstrap:
            names.parse_host_port(names.KAFKA, server)
        names.check_topic(names.TOPIC, self.topic)
        names.check_topic(GROUP_ID, self.group_id)
        names.check_dsn(names.CLICKHOUSE, self.clickhouse_dsn)
        names.check_database(names.CLICKHOUSE_DATABASE, self.database)
        names.check_int_range(MAX_BATCH_ROWS, self.max_batch_rows, 1)
        names.check_non_negative(MAX_BATCH_AGE_S, self.max_batch_age_s)
        names.check_int_range(WRITERS, self.writers, 1, 16)
        names.check_non_negative("poll_timeout_s", self.poll_timeout_s)
        names.check_int_range("max_poll_records", self.max_poll_records, 1)
        if self.instance_id:
            names.check_topic(INSTANCE_ID, self.instance_id)
        names.check_positive(CRASH_TIMEOUT_S, self.crash_timeout_s)
        names.check_positive(PROGRESS_S, self.progress_interval_s)

    @property
    def dlq_topic(self) -> str:
        """The dead-letter topic: ``<topic>.dlq``."""
        return self.topic + ".dlq"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsumerConfig:
        """Read the ``RUNSTREAM_*`` variables (``os.environ`` when ``environ`` is None).

        Raises ConfigError naming the variable for any malformed value.
        """
        env = names.environ_or_os(environ)
        raw_kafka = env.get(names.KAFKA, "").strip()
        return cls(
            kafka_bootstrap=tuple(names.parse_bootstrap(names.KAFKA, raw_kafka)) if raw_kafka
            else (),
            topic=names.env_str(env, names.TOPIC, names.DEFAULT_TOPIC),
            group_id=names.env_str(env, GROUP_ID, DEFAULT_GROUP_ID),
            clickhouse_dsn=names.env_str(env, names.CLICKHOUSE, names.default_clickhouse_dsn(env)),
            database=names.env_str(env, names.CLICKHOUSE_DATABASE, names.DEFAULT_DATABASE),
            spool_dir=names.env_path(env, names.SPOOL_DIR, names.default_spool_dir(env)),
            max_batch_rows=names.env_int(env, MAX_BATCH_ROWS, DEFAULT_MAX_BATCH_ROWS),
            max_batch_age_s=names.env_float(env, MAX_BATCH_AGE_S, DEFAULT_MAX_BATCH_AGE_S),
            writers=names.env_int(env, WRITERS, DEFAULT_WRITERS),
            instance_id=env.get(INSTANCE_ID, ""),
            crash_timeout_s=names.env_float(env, CRASH_TIMEOUT_S, DEFAULT_CRASH_TIMEOUT_S),
            progress_interval_s=names.env_float(env, PROGRESS_S, DEFAULT_PROGRESS_S),
            topics=TopicConfig.from_env(env),
        )
