"""Configuration of the training-side SDK: one frozen dataclass, explicit > env > default.

``ProducerConfig.from_env`` reads the variables; :func:`runstream.init` applies its
explicit arguments with ``dataclasses.replace``; ``__post_init__`` checks every field,
whichever way it was set (see :mod:`runstream.proto.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runstream.proto import config as names
from runstream.proto.errors import ConfigError
from runstream.proto.validation import MAX_KEYS_PER_BATCH, check_run_id

DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_FLUSH_INTERVAL_S = 0.15
DEFAULT_SPOOL_ROLL_S = 0.5
DEFAULT_MAX_BUFFERED_POINTS = 1_000_000
DEFAULT_POINTS_PER_BATCH = 10_000
DEFAULT_EXIT_FLUSH_S = 10.0
DEFAULT_SYSTEM_METRICS_S = 10.0
#: The oldest unacknowledged Kafka record waiting this long means Kafka is down: the
#: sender spools new events.
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
    record may wait before new events go to the spool. ``resume`` (``RUNSTREAM_RESUME``,
    "1" or "0", default "0"): init continues the run named by ``run_id`` as a new attempt
    (see :func:`runstream.init`). ``points_per_batch`` (points in
    one MetricsBatch) is at most MAX_KEYS_PER_BATCH, so a batch stays within both of the
    consumer's batch limits. Immutable, so safe to share between threads. ConfigError
    names the variable (or the field) of a bad value.
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
    resume: bool = False

    def __post_init__(self) -> None:
        # Canonical forms (a frozen dataclass sets them through object.__setattr__).
        canonical: dict[str, object] = {
            "spool_dir": Path(self.spool_dir).expanduser(),
            "artifacts_dir": Path(self.artifacts_dir).expanduser(),
            "heartbeat_s": names.check_positive(HEARTBEAT_S, self.heartbeat_s),
            "system_metrics_s": names.check_non_negative(SYSTEM_METRICS_S,
                                                         self.system_metrics_s),
            "exit_flush_s": names.check_non_negative(EXIT_FLUSH_S, self.exit_flush_s),
            "flush_interval_s": names.check_positive("flush_interval_s", self.flush_interval_s),
            "spool_roll_s": names.check_non_negative("spool_roll_s", self.spool_roll_s),
            "kafka_stall_s": names.check_positive("kafka_stall_s", self.kafka_stall_s),
        }
        if self.kafka is not None:
            if not isinstance(self.kafka, str):
                raise ConfigError(f"{names.KAFKA}={self.kafka!r}: expected host:port[,...]")
            canonical["kafka"] = ",".join(names.parse_bootstrap(names.KAFKA, self.kafka))
        for name, value in canonical.items():
            object.__setattr__(self, name, value)
        names.check_topic(names.TOPIC, self.topic)
        names.check_choice(names.ENCODING, self.encoding, names.ENCODINGS)
        if self.run_id is not None:
            check_run_id(self.run_id, name=names.RUN_ID, error=ConfigError)
        if not isinstance(self.resume, bool):
            raise ConfigError(f"{names.RESUME}={self.resume!r}: expected True or False")
        names.check_int_range("max_buffered_points", self.max_buffered_points, 1)
        # A batch of n points has at most n keys: within both consumer limits
        # (MAX_KEYS_PER_BATCH <= MAX_POINTS_PER_BATCH).
        names.check_int_range("points_per_batch", self.points_per_batch, 1,
                              MAX_KEYS_PER_BATCH)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProducerConfig:
        """Read ``RUNSTREAM_*`` variables (os.environ when None); ConfigError if malformed."""
        env = names.environ_or_os(environ)
        return cls(
            kafka=env.get(names.KAFKA, "").strip() or None,
            topic=names.env_str(env, names.TOPIC, names.DEFAULT_TOPIC),
            encoding=names.env_str(env, names.ENCODING, "protobuf"),
            spool_dir=names.env_path(env, names.SPOOL_DIR, names.default_spool_dir(env)),
            artifacts_dir=names.env_path(env, names.ARTIFACTS, names.default_artifacts_dir(env)),
            run_id=env.get(names.RUN_ID, "") or None,
            heartbeat_s=names.env_float(env, HEARTBEAT_S, DEFAULT_HEARTBEAT_S),
            system_metrics_s=names.env_float(env, SYSTEM_METRICS_S, DEFAULT_SYSTEM_METRICS_S),
            exit_flush_s=names.env_float(env, EXIT_FLUSH_S, DEFAULT_EXIT_FLUSH_S),
            resume=env_flag(env, names.RESUME),
        )


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """A "1"/"0" variable: True for "1", False for "0", unset or empty; anything else
    (including "true" or "yes") raises ConfigError naming the variable and the value."""
    raw = environ.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"{name}={environ[name]!r}: expected 1 or 0")
    return raw == "1"
