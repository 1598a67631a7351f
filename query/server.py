"""The gRPC query server: configuration, wiring, health checking, reflection, graceful stop.

``runstream query-server`` and the embedded ``runstream serve`` call :func:`start_server`
and get a running :class:`QueryServer` (one process may open a chdb path any number of
times, but no second path); :func:`run` is the same with signal handling built in.

Health (``grpc.health.v1.Health``) answers SERVING for ``""`` and
``runstream.v1.QueryService`` while the server runs and NOT_SERVING once it starts to
stop; server reflection lists the query service, health and reflection.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import weakref
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from types import FrameType, TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runstream.proto import config as cfg
from runstream.proto.errors import ConfigError, UnavailableError
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.repository import ClickHouseRepository
from runstream.query.service import QueryService
from runstream.query.servicer import QueryServicer

log = logging.getLogger(__name__)

#: Full name of the query service, as health checks and reflection know it.
SERVICE_NAME: str = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
# A 1,000,000-point history page is about 20 MB on the wire.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WORKERS = 16
DEFAULT_GRACE_S = 5.0

_DATABASE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HEALTH: weakref.WeakKeyDictionary[grpc.Server, health.HealthServicer] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, kw_only=True)
class QueryConfig:
    """Settings of the query server.

    ``addr``: host:port to listen on ($RUNSTREAM_QUERY_ADDR, default 127.0.0.1:50051;
    port 0 picks a free port). ``clickhouse_dsn``: $RUNSTREAM_CLICKHOUSE, default the
    embedded engine under $RUNSTREAM_HOME. ``database``: $RUNSTREAM_CLICKHOUSE_DATABASE,
    default "runstream". ``max_workers``: RPCs served at once. ``grace_s``: how long a
    stop lets running RPCs finish.
    """

    addr: str = cfg.DEFAULT_QUERY_ADDR
    clickhouse_dsn: str
    database: str = cfg.DEFAULT_DATABASE
    max_workers: int = DEFAULT_MAX_WORKERS
    grace_s: float = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        cfg.parse_host_port(cfg.QUERY_ADDR, self.addr)
        cfg.check_dsn(cfg.CLICKHOUSE, self.clickhouse_dsn)
        if not _DATABASE.fullmatch(self.database):
            raise ConfigError(f"{cfg.CLICKHOUSE_DATABASE}={self.database!r}: expected a name")
        if self.max_workers < 1:
            raise ConfigError(f"max_workers={self.max_workers}: expected at least 1")
        if self.grace_s < 0:
            raise ConfigError(f"grace_s={self.grace_s}: expected a non-negative number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QueryConfig:
        """Read the ``RUNSTREAM_*`` variables (``None`` = os.environ); ConfigError if malformed."""
        env = cfg.environ_or_os(environ)
        return cls(
            addr=cfg.env_str(env, cfg.QUERY_ADDR, cfg.DEFAULT_QUERY_ADDR),
            clickhouse_dsn=cfg.env_str(env, cfg.CLICKHOUSE, cfg.default_clickhouse_dsn(env)),
            database=cfg.env_str(env, cfg.CLICKHOUSE_DATABASE, cfg.DEFAULT_DATABASE),
        )


def build_server(
    service: QueryService, addr: str, *, max_workers: int = DEFAULT_MAX_WORKERS
) -> tuple[grpc.Server, int]:
    """A gRPC server (not yet started) with the query service, health and reflection.

    Returns the server and the port it is bound to (``addr`` may use port 0).
    Raises UnavailableError when the address cannot be bound. Stop it with :func:`stop`.
    """
    cfg.parse_host_port(cfg.QUERY_ADDR, addr)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runstream-query"),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    query_pb2_grpc.add_QueryServiceServicer_to_server(QueryServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as e:
        raise UnavailableError(f"cannot listen on {addr}: {e}") from e
    if port == 0:
        raise UnavailableError(f"cannot listen on {addr}")
    _HEALTH[server] = health_servicer
    return server, port


def stop(server: grpc.Server, grace_s: float = DEFAULT_GRACE_S) -> None:
    """Report NOT_SERVING, refuse new RPCs, let running ones finish for up to ``grace_s``.

    Blocks until the server has stopped. Idempotent.
    """
    health_servicer = _HEALTH.get(server)
    if health_servicer is not None:
        health_servicer.enter_graceful_shutdown()
    server.stop(grace_s).wait()


class QueryServer:
    """A running query server and what it owns (repository connections included).

    ``port`` is the bound port. :meth:`stop` is graceful and idempotent; the object is a
    context manager that stops on exit. Thread-safe.
    """

    def __init__(self, server: grpc.Server, host: str, port: int, service: QueryService,
                 repository: ClickHouseRepository | None, grace_s: float) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.service = service
        self._repository = repository
        self._grace_s = grace_s
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """"host:port" clients dial (the bound port, also when 0 was asked for)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Stop serving (see :func:`stop`), then close the ClickHouse connections. Blocks."""
        with self._lock:
            if self._stopped.is_set():
                return
            stop(self.server, self._grace_s if grace_s is None else grace_s)
            if self._repository is not None:
                self._repository.close()
            self._stopped.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`stop` has finished (True) or ``timeout_s`` passed (False)."""
        return self._stopped.wait(timeout_s)

    def __enter__(self) -> QueryServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(config: QueryConfig) -> QueryServer:
    """Start the server on ``config.addr`` and return it; ClickHouse connects on first query.

    The tables are the consumer's to create: until they exist, queries answer UNAVAILABLE.
    """
    repository = ClickHouseRepository(config.clickhouse_dsn, config.database)
    try:
        service = QueryService(repository)
        server, port = build_server(service, config.addr, max_workers=config.max_workers)
    except BaseException:
        repository.close()
        raise
    server.start()
    log.info("query server listening on %s (port %d), ClickHouse %s database %s",
             config.addr, port, config.clickhouse_dsn, config.database)
    host, _ = cfg.parse_host_port(cfg.QUERY_ADDR, config.addr)
    return QueryServer(server, host, port, service, repository, config.grace_s)


def run(config: QueryConfig) -> int:
    """``runstream query-server``: serve until SIGINT or SIGTERM, then stop gracefully.

    Must be called from the main thread (it installs signal handlers). Returns 0.
    """
    running = start_server(config)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopping.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        running.stop()
    return 0
