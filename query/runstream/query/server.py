"""The gRPC query server: configuration, wiring, health checking, reflection, graceful stop.

``runstream query-server`` and the embedded ``runstream serve`` call :func:`start_server`
and get a running :class:`QueryServer` (one process may open a chdb path any number of
times, but no second path).

Health (``grpc.health.v1.Health``) answers SERVING for ``""`` and
``runstream.v1.QueryService`` while the server runs and NOT_SERVING once it starts to
stop, or once its embedded store (``chdb:///path``) was removed under it (checked every
second by the thread ``runstream-query-store``; queries then answer UNAVAILABLE naming
the path); server reflection lists the query service, health and reflection.

Security: with a token ($RUNSTREAM_TOKEN) every RPC but health needs the metadata
``authorization: Bearer <token>`` (else UNAUTHENTICATED; the scheme in any case, RFC
7235, the token compared in constant time). Reflection needs it too: what the server
serves is not told to strangers, and grpcurl passes it with
``grpcurl -H 'authorization: Bearer <token>' HOST:PORT list``.
With a certificate and key ($RUNSTREAM_QUERY_TLS_CERT, $RUNSTREAM_QUERY_TLS_KEY, PEM
files) the server speaks TLS only.

Beside gRPC the same process serves the web UI and its JSON/SSE API over HTTP on
``config.ui_addr`` (:mod:`runstream.query.gateway`, on the thread ``runstream-query-ui``),
over the same :class:`QueryService`, with the same token and the same TLS certificate.

The ClickHouse user needs read access only: every
query runs with ``readonly=2`` (SELECT only; a query may still set its own limits such as
``max_execution_time``), so a read-only ClickHouse profile (``readonly = 2``) suffices.
"""

from __future__ import annotations

import hmac
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runstream.proto import config as names
from runstream.proto.errors import UnavailableError
from runstream.proto.v1 import query_pb2_grpc
from runstream.query.config import (
    DEFAULT_GRACE_S,
    DEFAULT_MAX_WORKERS,
    MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    QueryConfig,
)
from runstream.query.repository import ClickHouseRepository
from runstream.query.service import QueryService
from runstream.query.servicer import QueryServicer

if TYPE_CHECKING:
    from runstream.query.gateway import UiServer

log = logging.getLogger(__name__)

_HEALTH_PREFIX = "/grpc.health.v1.Health/"

_HEALTH: weakref.WeakKeyDictionary[grpc.Server, health.HealthServicer] = weakref.WeakKeyDictionary()
_SERVICES: weakref.WeakKeyDictionary[grpc.Server, QueryService] = weakref.WeakKeyDictionary()


def bearer_matches(header: str | bytes, token: bytes) -> bool:
    """Whether an ``authorization`` value carries ``token`` in the Bearer scheme. The
    scheme is matched case-insensitively (RFC 7235: ``bearer``, ``BEARER``), the token
    exactly and in constant time."""
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    scheme, _, credentials = text.strip().partition(" ")
    given = credentials.strip().encode("latin-1", "replace")
    return hmac.compare_digest(given, token) and scheme.lower() == "bearer"


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every RPC but health without ``authorization: Bearer <token>``; server
    reflection too, so listing the services needs the token (``grpcurl -H``)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)
        self._deny_bidi = grpc.stream_stream_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        given = next(
            (v for k, v in handler_call_details.invocation_metadata or () if k == "authorization"),
            "",
        )
        if bearer_matches(given, self._token):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is not None and handler.request_streaming:
            return self._deny_bidi  # server reflection
        if handler is not None and handler.response_streaming:
            return self._deny_stream
        return self._deny_unary


def build_server(
    service: QueryService,
    addr: str,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    token: str = "",
    tls_cert: str = "",
    tls_key: str = "",
) -> tuple[grpc.Server, int]:
    """A gRPC server (not yet started) with the query service, health and reflection.

    ``token`` non-empty requires a bearer token on every RPC but health; ``tls_cert`` and
    ``tls_key`` (PEM file paths) switch the port to TLS. Returns the server and the port
    it is bound to (``addr`` may use port 0). Raises UnavailableError when the address
    cannot be bound. Stop it with :func:`stop`.
    """
    names.parse_host_port(names.QUERY_ADDR, addr)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="runstream-query"),
        interceptors=[TokenInterceptor(token)] if token else [],
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
        if tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())]
            )
            port = server.add_secure_port(addr, credentials)
        else:
            port = server.add_insecure_port(addr)
    except RuntimeError as e:
        raise UnavailableError(f"cannot listen on {addr}: {e}") from e
    if port == 0:
        raise UnavailableError(f"cannot listen on {addr}")
    _HEALTH[server] = health_servicer
    _SERVICES[server] = service
    return server, port


def stop(server: grpc.Server, grace_s: float = DEFAULT_GRACE_S) -> None:
    """Report NOT_SERVING, refuse new RPCs, let running ones finish for up to ``grace_s``.

    Blocks until the server has stopped. Idempotent.
    """
    health_servicer = _HEALTH.get(server)
    if health_servicer is not None:
        health_servicer.enter_graceful_shutdown()
    service = _SERVICES.get(server)
    if service is not None:
        service.close()  # FollowRun streams end at their next poll, within the grace
    server.stop(grace_s).wait()


class QueryServer:
    """A running query server and what it owns (repository connections included).

    ``port`` is the bound port; ``ui`` the web UI's HTTP server (None when off).
    :meth:`stop` is graceful and idempotent; the object is a context manager that stops
    on exit. Thread-safe.
    """

    def __init__(self, server: grpc.Server, host: str, port: int, service: QueryService,
                 repository: ClickHouseRepository | None, grace_s: float,
                 ui: UiServer | None = None) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.service = service
        self.ui = ui
        self._repository = repository
        self._grace_s = grace_s
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        #: Why the server stopped serving while still running ("" while healthy).
        self.unhealthy = ""

    def watch_store(self, interval_s: float = 1.0) -> threading.Thread | None:
        """Check the repository's embedded store every ``interval_s`` on a daemon thread
        ``runstream-query-store``: once it is gone, health answers NOT_SERVING (and
        queries fail on their own, see ClickHouseRepository.check_store). Returns the
        thread, or None without a repository."""
        repository = self._repository
        if repository is None:
            return None

        def watch() -> None:
            while not self._stopped.wait(interval_s):
                try:
                    repository.check_store()
                except UnavailableError as e:
                    self.unhealthy = str(e)
                    log.error("query server: %s; health answers NOT_SERVING", e)
                    health_servicer = _HEALTH.get(self.server)
                    if health_servicer is not None:
                        for name in ("", SERVICE_NAME):
                            health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
                    return

        thread = threading.Thread(target=watch, name="runstream-query-store", daemon=True)
        thread.start()
        return thread

    @property
    def address(self) -> str:
        """"host:port" clients dial (the bound port, also when 0 was asked for)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def ui_port(self) -> int:
        """The web UI's bound port (0 when the UI is off)."""
        return self.ui.port if self.ui is not None else 0

    @property
    def ui_address(self) -> str:
        """"host:port" of the web UI ("" when off)."""
        return self.ui.address if self.ui is not None else ""

    @property
    def ui_url(self) -> str:
        """The web UI as a browser opens it, "http://host:port/" ("" when off)."""
        return self.ui.url if self.ui is not None else ""

    def stop(self, grace_s: float | None = None) -> None:
        """Stop serving gRPC (see :func:`stop`) and the web UI, together within the grace
        period, then close the ClickHouse connections. Blocks."""
        with self._lock:
            if self._stopped.is_set():
                return
            if self.ui is not None:
                self.ui.begin_stop()  # new connections refused while gRPC drains
            stop(self.server, self._grace_s if grace_s is None else grace_s)
            if self.ui is not None:
                self.ui.stop()  # SSE streams end at their next poll: the service is closed
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
    The web UI (``config.ui``) binds ``config.ui_addr`` before anything starts serving:
    UnavailableError naming the address if it cannot.
    """
    repository = ClickHouseRepository(config.clickhouse_dsn, config.database)
    ui: UiServer | None = None
    built: list[grpc.Server] = []
    try:
        service = QueryService(repository, max_followers=max(1, config.max_workers // 2))
        server, port = build_server(
            service, config.addr, max_workers=config.max_workers, token=config.token,
            tls_cert=config.tls_cert, tls_key=config.tls_key,
        )
        built.append(server)
        if config.ui:
            ui = _build_ui(service, config, lambda: running.unhealthy)
    except BaseException:
        for unstarted in built:
            unstarted.stop(None)  # frees the gRPC port
        repository.close()
        raise
    server.start()
    log.info("query server listening on %s (port %d), ClickHouse %s database %s",
             config.addr, port, config.clickhouse_dsn, config.database)
    host, _ = names.parse_host_port(names.QUERY_ADDR, config.addr)
    running = QueryServer(server, host, port, service, repository, config.grace_s, ui)
    if ui is not None:
        ui.start()
        log.info("web UI on %s", ui.url)
    running.watch_store()
    return running


def _build_ui(service: QueryService, config: QueryConfig, unhealthy: Callable[[], str]
              ) -> UiServer:
    """The web UI's server over ``service``, bound but not yet serving."""
    from runstream.query.gateway import Gateway, UiServer  # starlette only when serving it

    gateway = Gateway(service, token=config.token,
                      artifacts_root=Path(config.artifacts_dir) if config.artifacts_dir else None,
                      unhealthy=unhealthy, secure=bool(config.tls_cert))
    return UiServer(gateway.app(), config.ui_addr, tls_cert=config.tls_cert,
                    tls_key=config.tls_key, grace_s=config.grace_s)
