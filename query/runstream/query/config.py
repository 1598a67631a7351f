"""Configuration of the query server and of its client, and what both sides of the wire share.

Same shape as every Runstream ``*Config`` (see :mod:`runstream.proto.config`): frozen,
``from_env`` reads the variables, explicit values go through ``dataclasses.replace``,
``__post_init__`` checks every field and raises ConfigError naming the variable.
Importing this module needs protobuf only (no grpcio, no ClickHouse).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from runstream.proto import config as names
from runstream.proto.errors import ConfigError
from runstream.proto.v1 import query_pb2

#: Full name of the query service, as health checks and reflection know it.
SERVICE_NAME: str = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
#: Largest message either side sends or accepts: a 1,000,000-point history page is about
#: 20 MB on the wire.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WORKERS = 16
DEFAULT_GRACE_S = 5.0
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class QueryConfig:
    """Settings of the query server.

    ``addr``: host:port to listen on ($RUNSTREAM_QUERY_ADDR, default 127.0.0.1:50051;
    port 0 picks a free port). ``clickhouse_dsn``: $RUNSTREAM_CLICKHOUSE, default the
    embedded engine under $RUNSTREAM_HOME. ``database``: $RUNSTREAM_CLICKHOUSE_DATABASE,
    default "runstream". ``max_workers``: RPCs served at once. ``grace_s``: how long a
    stop lets running RPCs finish. ``token``: bearer token every RPC but health needs
    ($RUNSTREAM_TOKEN; "" = none). ``tls_cert``/``tls_key``: PEM files that switch the
    port to TLS ($RUNSTREAM_QUERY_TLS_CERT/_KEY; both or neither), the web UI's too.
    ``ui``: also serve the web UI and its JSON/SSE API over HTTP (:mod:`runstream.query.gateway`)
    on ``ui_addr`` ($RUNSTREAM_UI_ADDR, default 127.0.0.1:8080; port 0 picks a free port);
    ``from_env`` turns it on (``runstream serve --no-ui`` off), a config built by hand
    (tests, benchmarks) leaves it off unless asked, so it opens no second port unasked.
    ``artifacts_dir``: the local artifact store the UI downloads file artifacts from
    ($RUNSTREAM_ARTIFACTS, default under $RUNSTREAM_HOME; "" = none).
    """

    addr: str = names.DEFAULT_QUERY_ADDR
    clickhouse_dsn: str
    database: str = names.DEFAULT_DATABASE
    max_workers: int = DEFAULT_MAX_WORKERS
    grace_s: float = DEFAULT_GRACE_S
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    ui: bool = False
    ui_addr: str = names.DEFAULT_UI_ADDR
    artifacts_dir: str = ""

    def __post_init__(self) -> None:
        names.check_tls_files(names.QUERY_TLS_CERT, self.tls_cert,
                              names.QUERY_TLS_KEY, self.tls_key)
        names.parse_host_port(names.QUERY_ADDR, self.addr)
        names.parse_host_port(names.UI_ADDR, self.ui_addr)
        names.check_dsn(names.CLICKHOUSE, self.clickhouse_dsn)
        names.check_database(names.CLICKHOUSE_DATABASE, self.database)
        names.check_int_range("max_workers", self.max_workers, 1)
        names.check_non_negative("grace_s", self.grace_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QueryConfig:
        """Read the ``RUNSTREAM_*`` variables (``None`` = os.environ); ConfigError if malformed."""
        env = names.environ_or_os(environ)
        return cls(
            addr=names.env_str(env, names.QUERY_ADDR, names.DEFAULT_QUERY_ADDR),
            clickhouse_dsn=names.env_str(env, names.CLICKHOUSE, names.default_clickhouse_dsn(env)),
            database=names.env_str(env, names.CLICKHOUSE_DATABASE, names.DEFAULT_DATABASE),
            token=env.get(names.TOKEN, ""),
            tls_cert=env.get(names.QUERY_TLS_CERT, ""),
            tls_key=env.get(names.QUERY_TLS_KEY, ""),
            ui=True,
            ui_addr=names.env_str(env, names.UI_ADDR, names.DEFAULT_UI_ADDR),
            artifacts_dir=str(names.env_path(env, names.ARTIFACTS,
                                             names.default_artifacts_dir(env))),
        )


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Settings of a query client.

    ``target``: the server's "host:port" (any gRPC target; $RUNSTREAM_QUERY_ADDR, default
    127.0.0.1:50051). ``timeout_s``: deadline of each RPC, seconds. ``token``: bearer
    token sent with every RPC ($RUNSTREAM_TOKEN; "" = none). ``tls_ca``: PEM file of the
    server's CA, which turns TLS on ($RUNSTREAM_QUERY_TLS_CA; "" = plaintext).
    """

    target: str = names.DEFAULT_QUERY_ADDR
    timeout_s: float = DEFAULT_TIMEOUT_S
    token: str = ""
    tls_ca: str = ""

    def __post_init__(self) -> None:
        if not self.target:
            raise ConfigError(f"{names.QUERY_ADDR}: empty query server address")
        names.check_positive("timeout_s", self.timeout_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientConfig:
        """Read the ``RUNSTREAM_*`` variables (``None`` = os.environ)."""
        env = names.environ_or_os(environ)
        return cls(
            target=names.env_str(env, names.QUERY_ADDR, names.DEFAULT_QUERY_ADDR),
            token=env.get(names.TOKEN, ""),
            tls_ca=env.get(names.QUERY_TLS_CA, ""),
        )
