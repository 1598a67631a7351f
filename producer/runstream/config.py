"""Configuration of the training-side SDK: one frozen dataclass, explicit > env > default."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runstream.proto import config as names
from runstream.proto.errors import ConfigError

_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_FLUSH_INTERVAL_S = 0.15
DEFAULT_SPOOL_ROLL_S = 0.5
DEFAULT_MAX_BUFFERED_POINTS = 1_000_000
DEFAULT_POINTS_PER_BATCH = 10_000
DEFAULT_EXIT_FLUSH_S = 10.0
DEFAULT_SYSTEM_METRICS_S = 10.0
DEFAULT_KAFKA_STALL_S = 5.0
# Producer-only settings (the shared names live in runstream.proto.config).
HEARTBEAT_S = "RUNSTREAM_HEARTBEAT_S"
SYSTEM_METRICS_S = "RUNSTREAM_SYSTEM_METRICS_S"
EXIT_FLUSH_S = "RUNSTREAM_EXIT_FLUSH_S"


@dataclass(frozen=True, kw_only=True)
class ProducerConfig:
    """Everything the producer needs, resolved once by :func:`runstream.init`.

    ``kafka`` is the bootstrap list ("host:port,...") or None for the local spool.
    Durations are seconds (``*_s``): ``heartbeat_s`` between heartbeats
    (``RUNSTREAM_HEARTBEAT_S``), ``system_metrics_s`` between system metric samples, 0 =
    off (``RUNSTREAM_SYSTEM_METRICS_S``), ``exit_flush_s`` the flush budget at exit and on
    SIGTERM (``RUNSTREAM_EXIT_FLUSH_S``), ``kafka_stall_s`` how long an unacknowledged
    record may wait before new events go to the spool. Immutable, so safe to share
    between threads.
    """

    kafka: str | None = None
    topic: str = names.DEFAULT_TOPIC
    encoding: str = "protobuf"
    spool_dir: Path
    artifacts_dir: Path
    run_id: str | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    spool_roll_s: float = DEFAULT_SPOOL_ROLL_S
    max_buffered_points: int = DEFAULT_MAX_BUFFERED_POINTS
    points_per_batch: int = DEFAULT_POINTS_PER_BATCH
    exit_flush_s: float = DEFAULT_EXIT_FLUSH_S
    system_metrics_s: float = DEFAULT_SYSTEM_METRICS_S
    kafka_stall_s: float = DEFAULT_KAFKA_STALL_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProducerConfig:
        """Read ``RUNSTREAM_*`` variables (os.environ when None); ConfigError if malformed."""
        env = names.environ_or_os(environ)
        kafka_raw = env.get(names.KAFKA, "").strip()
        kafka = ",".join(names.parse_bootstrap(names.KAFKA, kafka_raw)) if kafka_raw else None
        run_id = env.get(names.RUN_ID, "") or None
        if run_id is not None:
            _check_run_id(names.RUN_ID, run_id)
        return cls(
            kafka=kafka,
            topic=_check_topic(names.TOPIC, names.env_str(env, names.TOPIC, names.DEFAULT_TOPIC)),
            encoding=names.env_choice(env, names.ENCODING, names.ENCODINGS, "protobuf"),
            spool_dir=names.env_path(env, names.SPOOL_DIR, names.default_spool_dir(env)),
            artifacts_dir=names.env_path(env, names.ARTIFACTS, names.default_artifacts_dir(env)),
            run_id=run_id,
            heartbeat_s=_positive(HEARTBEAT_S, names.env_float(env, HEARTBEAT_S,
                                                                DEFAULT_HEARTBEAT_S)),
            system_metrics_s=names.env_float(env, SYSTEM_METRICS_S, DEFAULT_SYSTEM_METRICS_S),
            exit_flush_s=names.env_float(env, EXIT_FLUSH_S, DEFAULT_EXIT_FLUSH_S),
        )

    def with_explicit(
        self,
        *,
        kafka: str | None = None,
        topic: str | None = None,
        encoding: str | None = None,
        spool_dir: str | Path | None = None,
        artifacts_dir: str | Path | None = None,
        run_id: str | None = None,
        heartbeat_s: float | None = None,
        system_metrics_s: float | None = None,
    ) -> ProducerConfig:
        """A copy with the explicitly given (non-None) arguments applied and checked."""
        changes: dict[str, object] = {}
        if kafka is not None:
            changes["kafka"] = ",".join(names.parse_bootstrap("kafka", kafka))
        if topic is not None:
            changes["topic"] = _check_topic("topic", topic)
        if encoding is not None:
            changes["encoding"] = names.check_choice("encoding", encoding, names.ENCODINGS)
        if spool_dir is not None:
            changes["spool_dir"] = Path(spool_dir).expanduser()
        if artifacts_dir is not None:
            changes["artifacts_dir"] = Path(artifacts_dir).expanduser()
        if run_id is not None:
            changes["run_id"] = _check_run_id("run_id", run_id)
        if heartbeat_s is not None:
            if not isinstance(heartbeat_s, int | float) or not math.isfinite(heartbeat_s) \
                    or heartbeat_s <= 0:
                raise ConfigError(f"heartbeat_s={heartbeat_s!r}: expected a positive number")
            changes["heartbeat_s"] = float(heartbeat_s)
        if system_metrics_s is not None:
            if not isinstance(system_metrics_s, int | float) \
                    or not math.isfinite(system_metrics_s) or system_metrics_s < 0:
                raise ConfigError(
                    f"system_metrics_s={system_metrics_s!r}: expected a number >= 0 (0 = off)")
            changes["system_metrics_s"] = float(system_metrics_s)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _positive(name: str, value: float) -> float:
    if value <= 0:
        raise ConfigError(f"{name}={value!r}: expected a positive number")
    return value


def _check_run_id(name: str, value: str) -> str:
    from runstream.proto.validation import RUN_ID_PATTERN

    if not isinstance(value, str) or not RUN_ID_PATTERN.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r}: expected 1..64 characters of letters, digits, '.', '_', '-'"
        )
    return value


def _check_topic(name: str, value: str) -> str:
    # Kafka's own rule for topic names.
    if not isinstance(value, str) or not _TOPIC.fullmatch(value):
        raise ConfigError(f"{name}={value!r}: expected 1..249 characters of [A-Za-z0-9._-]")
    return value
