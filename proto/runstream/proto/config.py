"""Configuration names every component and script agrees on, and the parsers they share.

Precedence everywhere: explicit argument > ``RUNSTREAM_*`` environment variable >
documented default. Each component has one frozen ``*Config`` dataclass of the same
shape: ``from_env(environ)`` reads and parses the variables (``env_*`` below: a value
that does not parse raises), explicit values are applied with ``dataclasses.replace``,
and ``__post_init__`` validates every field in one place (``check_*`` below). A
malformed value raises :class:`ConfigError` naming the variable and the value, never a
warning and a fallback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from runstream.proto.errors import ConfigError

C = TypeVar("C")

# Bootstrap servers, "host:port[,host:port...]". Unset or empty: write to the local spool.
KAFKA = "RUNSTREAM_KAFKA"
# ClickHouse DSN: "chdb:///abs/path" (embedded engine) or "http://host:8123".
CLICKHOUSE = "RUNSTREAM_CLICKHOUSE"
# ClickHouse database the tables live in.
CLICKHOUSE_DATABASE = "RUNSTREAM_CLICKHOUSE_DATABASE"
# host:port the query server listens on and the client dials.
QUERY_ADDR = "RUNSTREAM_QUERY_ADDR"
# host:port the web UI (the query server's HTTP JSON/SSE gateway) listens on.
UI_ADDR = "RUNSTREAM_UI_ADDR"
SPOOL_DIR = "RUNSTREAM_SPOOL_DIR"
ARTIFACTS = "RUNSTREAM_ARTIFACTS"
RUN_ID = "RUNSTREAM_RUN_ID"
ENCODING = "RUNSTREAM_ENCODING"
# Bearer token the query server requires and the client sends; unset = no auth.
TOKEN = "RUNSTREAM_TOKEN"  # noqa: S105 - a variable name, not a secret
# The query server's TLS certificate and key (PEM files; both or neither), and the CA
# the client trusts (PEM; set = TLS).
QUERY_TLS_CERT = "RUNSTREAM_QUERY_TLS_CERT"
QUERY_TLS_KEY = "RUNSTREAM_QUERY_TLS_KEY"
QUERY_TLS_CA = "RUNSTREAM_QUERY_TLS_CA"
# Kafka topic of run events; the dead-letter topic is "<topic>.dlq".
TOPIC = "RUNSTREAM_TOPIC"
# Partitions of the events topic and replicas of every Runstream topic, when the consumer
# creates them (unset: the broker's defaults); a topic that exists with other settings
# than these is an error (runstream.consumer.topics).
TOPIC_PARTITIONS = "RUNSTREAM_TOPIC_PARTITIONS"
TOPIC_REPLICATION = "RUNSTREAM_TOPIC_REPLICATION"
# Root of every default local path below.
HOME = "RUNSTREAM_HOME"
# "1" = runstream.init continues the run named by RUNSTREAM_RUN_ID (or run_id=...) as a
# new attempt instead of starting one (init's resume=True).
RESUME = "RUNSTREAM_RESUME"

#: Per-rank telemetry every rank logs (run.step_timer(), the framework integrations):
#: seconds per step, seconds the step waited for data, device memory in use (bytes).
#: GetRankHealth reads them.
TELEMETRY_STEP_TIME = "telemetry/step_time_s"
TELEMETRY_DATA_WAIT = "telemetry/data_wait_s"
TELEMETRY_DEVICE_MEMORY = "telemetry/device_memory_bytes"

DEFAULT_TOPIC = "runstream.events"
DEFAULT_QUERY_ADDR = "127.0.0.1:50051"
DEFAULT_UI_ADDR = "127.0.0.1:8080"
DEFAULT_DATABASE = "runstream"
ENCODINGS = ("protobuf", "avro")

#: A plain ClickHouse identifier (database, cluster): nothing that needs quoting.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Kafka's own rule for topic names (and group and instance ids, held to the same).
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def home(environ: Mapping[str, str]) -> Path:
    """Root of Runstream's local data: $RUNSTREAM_HOME, default ~/.runstream."""
    raw = environ.get(HOME, "")
    return Path(raw).expanduser() if raw else Path.home() / ".runstream"


def default_spool_dir(environ: Mapping[str, str]) -> Path:
    return home(environ) / "spool"


def default_artifacts_dir(environ: Mapping[str, str]) -> Path:
    return home(environ) / "artifacts"


def default_clickhouse_dsn(environ: Mapping[str, str]) -> str:
    return "chdb://" + str((home(environ) / "chdb").resolve())


def env_str(environ: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value, or the default when unset or empty."""
    value = environ.get(name, "")
    return value if value else default


def env_path(environ: Mapping[str, str], name: str, default: Path) -> Path:
    value = environ.get(name, "")
    return Path(value).expanduser() if value else default


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    """The variable as a number, or the default when unset or empty (range: the config's
    ``__post_init__`` checks it)."""
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None


def env_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """The variable as an integer, or the default when unset or empty."""
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None


def check_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}={value!r}: expected a positive number")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number >= 0, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r}: expected a non-negative number")
    return float(value)


def check_int_range(name: str, value: int, low: int, high: int | None = None) -> int:
    """``value`` if it is an integer in ``low..high`` (no upper bound: None), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name}={value!r}: expected an integer {bounds}")
    return value


def check_topic(name: str, value: str) -> str:
    """``value`` if it is a legal Kafka topic name, else ConfigError."""
    if not isinstance(value, str) or not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ConfigError(f"{name}={value!r}: expected 1..249 characters of [A-Za-z0-9._-]")
    return value


def check_database(name: str, value: str) -> str:
    """``value`` if it is a plain ClickHouse identifier, else ConfigError."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ConfigError(f"{name}={value!r}: expected a database name [A-Za-z_][A-Za-z0-9_]*")
    return value


def check_tls_files(cert_name: str, cert: str, key_name: str, key: str) -> None:
    """A certificate and key (paths of PEM files) are both set or both empty, and exist."""
    if bool(cert) != bool(key):
        raise ConfigError(f"{cert_name} and {key_name} must be set together")
    for name, path in ((cert_name, cert), (key_name, key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}={path!r}: no such file")


def parse_host_port(name: str, value: str) -> tuple[str, int]:
    """Split "host:port" (IPv6 as "[::1]:port"), raising ConfigError naming the variable."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name}={value!r}: expected host:port")
    try:
        port_no = int(port)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: port {port!r} is not a number") from None
    if not 0 <= port_no <= 65535:
        raise ConfigError(f"{name}={value!r}: port out of range")
    return host.strip("[]"), port_no


def parse_bootstrap(name: str, value: str) -> list[str]:
    """Kafka bootstrap servers "h:p,h:p" -> ["h:p", ...], each checked."""
    servers = [part.strip() for part in value.split(",") if part.strip()]
    if not servers:
        raise ConfigError(f"{name}={value!r}: expected host:port[,host:port...]")
    for server in servers:
        parse_host_port(name, server)
    return servers


def check_dsn(name: str, value: str) -> str:
    """Accept "chdb:///abs/path" or "http(s)://host:port[/...]"."""
    if value.startswith("chdb://"):
        path = value[len("chdb://") :]
        if not path.startswith("/"):
            raise ConfigError(f"{name}={value!r}: chdb DSN needs an absolute path, chdb:///abs/path")
        return value
    if value.startswith(("http://", "https://")):
        return value
    raise ConfigError(f"{name}={value!r}: expected chdb:///abs/path or http://host:8123")


def environ_or_os(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def with_explicit(config: C, **values: object) -> C:
    """``config`` with the values given explicitly (those that are not None) applied on
    top, the way every component takes arguments and flags over its variables; the
    config's ``__post_init__`` checks them."""
    given = {name: value for name, value in values.items() if value is not None}
    replaced: Any = dataclasses.replace(config, **given)  # type: ignore[type-var]
    return replaced
