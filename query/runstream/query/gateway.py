"""The web UI's HTTP face: JSON and Server-Sent Events over the query service, and the
UI's files (``query/web/API.md`` is the contract).

Like the gRPC servicer it holds no logic: each endpoint parses its query parameters,
calls one :class:`~runstream.query.service.QueryService` method (the very object the
servicer calls) on a worker thread (``run_in_threadpool``; the event loop never blocks)
and converts the answer with :mod:`runstream.query.gateway_json`. A RunstreamError
becomes its HTTP status and ``{"error": {"code", "message"[, "position"]}}``; anything
else is logged with its traceback and answered 500 with a message only.

Auth: with a token every ``/api/`` path but ``/api/health`` and ``/api/login`` needs
``Authorization: Bearer <token>`` or the HttpOnly cookie ``runstream_token`` that
``POST /api/login`` sets; both compared in constant time. Static files need none.

:class:`UiServer` runs uvicorn on the thread ``runstream-query-ui`` of the query
server's process (:func:`runstream.query.server.start_server` starts it), with the
gRPC port's TLS certificate when there is one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import json
import logging
import math
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from runstream.proto import config as names
from runstream.proto.errors import (
    ErrorCode,
    InvalidArgumentError,
    NotFoundError,
    RunstreamError,
    UnauthenticatedError,
    UnavailableError,
)
from runstream.query import artifact_files, deadline, gateway_json
from runstream.query.config import DEFAULT_TIMEOUT_S
from runstream.query.filters import FilterError
from runstream.query.models import FollowUpdate, PointsUpdate
from runstream.query.reproduce import reproduce_text
from runstream.query.server import bearer_matches
from runstream.query.service import QueryService

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Where the built UI lies (index.html, app.js, app.css; query/web/build.mjs writes it).
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The cookie POST /api/login sets.
COOKIE = "runstream_token"
#: Seconds between SSE keep-alive comments.
KEEPALIVE_S = 15.0
#: A JSON number is exact up to here; a step beyond it is refused, never rounded.
MAX_EXACT_INT = 1 << 53

HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INTERNAL: 500,
}

_NO_BUNDLE = (
    "The Runstream web UI's files are missing from this installation ({path} not found):\n"
    "build them with `node query/web/build.mjs`. The JSON API under /api/ still works.\n"
)
_OPEN = frozenset({"/api/health", "/api/login"})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    """A JSON answer of a model or of a dict of models (see :mod:`gateway_json`)."""
    return Response(gateway_json.dumps(body), status_code=status, headers=headers,
                    media_type="application/json")


def error_body(error: RunstreamError) -> dict[str, Any]:
    """``{"error": {"code", "message"[, "position"]}}`` of an error."""
    body: dict[str, Any] = {"code": error.code.value, "message": str(error)}
    if isinstance(error, FilterError):
        body["position"] = error.position
    return {"error": body}


def error_response(error: RunstreamError) -> Response:
    return json_response(error_body(error), HTTP_STATUS.get(error.code, 500))


def _internal(what: str) -> Response:
    return json_response({"error": {"code": ErrorCode.INTERNAL.value,
                                    "message": f"internal error in {what}; see the server log"}},
                         500)


# --- query parameters ---------------------------------------------------------------------


def _text(request: Request, name: str, default: str = "") -> str:
    return request.query_params.get(name, default)


def _texts(request: Request, name: str) -> tuple[str, ...]:
    return tuple(request.query_params.getlist(name))


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    return _parse_int(name, raw)


def _parse_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgumentError(f"{name}={raw!r}: expected an integer") from None
    if abs(value) > MAX_EXACT_INT:
        raise InvalidArgumentError(f"{name}={raw}: beyond 2^53, which JSON numbers cannot carry")
    return value


def _optional_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "")
    return None if raw == "" else _parse_int(name, raw)


def _ints(request: Request, name: str) -> tuple[int, ...]:
    return tuple(_parse_int(name, raw) for raw in request.query_params.getlist(name))


def _bool(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "0")
    if raw not in ("0", "1", ""):
        raise InvalidArgumentError(f"{name}={raw!r}: expected 1 or 0")
    return raw == "1"


# --- the app --------------------------------------------------------------------------------


class Gateway:
    """The endpoints of ``API.md`` over ``service``; :meth:`app` is the ASGI app.

    ``token``: what every data endpoint needs ("" = no auth). ``artifacts_root``: the
    local artifact store (None: artifact downloads answer 404). ``unhealthy``: why the
    server stopped serving ("" while healthy; /api/health then answers 503).
    ``secure``: the app is served over TLS (the login cookie is then ``Secure``).
    Thread-safe; blocking calls run on Starlette's worker threads, FollowRun streams on
    a thread of their own each.
    """

    def __init__(self, service: QueryService, *, token: str = "",
                 artifacts_root: Path | None = None, static_dir: Path = STATIC_DIR,
                 unhealthy: Callable[[], str] = lambda: "", secure: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._service = service
        self._token = token.encode()
        self._artifacts_root = artifacts_root
        self._static = static_dir
        self._unhealthy = unhealthy
        self._secure = secure
        self._timeout_s = timeout_s

    def app(self) -> Starlette:
        """The Starlette application (routes of API.md, ``/`` and ``/assets/*``)."""
        api = self._api
        routes = [
            Route("/api/health", self.health),
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/experiments", api("experiments", self.experiments)),
            Route("/api/keys", api("keys", self.keys)),
            Route("/api/runs", api("runs", self.runs)),
            Route("/api/runs/{run_id}", api("run", self.run)),
            Route("/api/runs/{run_id}/metrics", api("metrics", self.metrics)),
            Route("/api/runs/{run_id}/reproduce", api("reproduce", self.reproduce)),
            Route("/api/runs/{run_id}/ranks", api("ranks", self.ranks)),
            Route("/api/runs/{run_id}/lag", api("lag", self.lag)),
            Route("/api/runs/{run_id}/envelope", api("envelope", self.envelope)),
            Route("/api/runs/{run_id}/artifacts/{name:path}", api("artifact", self.artifact)),
            Route("/api/runs/{run_id}/diff", api("diff", self.diff)),
            Route("/api/history", api("history", self.history)),
            Route("/api/compare", api("compare", self.compare)),
            Route("/api/follow/{run_id}", api("follow", self.follow)),
            Route("/api/ingest", api("ingest", self.ingest)),
            Route("/api/{rest:path}", api("api", self.unknown), methods=["GET", "POST"]),
            Route("/", self.index),
            Route("/index.html", self.index),
            Mount("/assets", app=_Assets(self._static)),
        ]
        return Starlette(routes=routes)

    # --- plumbing ---

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the token (header or cookie); True without one."""
        if not self._token:
            return True
        header = request.headers.get("authorization")
        if header is not None and bearer_matches(header, self._token):
            return True
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and hmac.compare_digest(
            cookie.encode("utf-8", "replace"), self._token)

    def _api(self, what: str, handler: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` behind the token, with errors answered as API.md says."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            if not self.authorized(request):
                return error_response(UnauthenticatedError("missing or wrong bearer token"))
            try:
                return await handler(request)
            except RunstreamError as e:
                if e.code is ErrorCode.INTERNAL:
                    log.error("web API %s failed: %s", what, e, exc_info=e)
                return error_response(e)
            except Exception:
                log.exception("web API %s failed unexpectedly", what)
                return _internal(what)

        return endpoint

    async def _call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` on a worker thread, under the request's deadline."""

        def bounded() -> R:
            with deadline.scope(self._timeout_s):
                return fn(*args, **kwargs)

        return await run_in_threadpool(bounded)

    async def _json(self, fn: Callable[..., Any], *args: Any, wrap: str = "",
                    **kwargs: Any) -> Response:
        """Call ``fn`` and answer its result as JSON (under the key ``wrap`` if given),
        converted on the worker thread too."""

        def answer() -> bytes:
            with deadline.scope(self._timeout_s):
                result = fn(*args, **kwargs)
            return gateway_json.dumps({wrap: result} if wrap else result)

        body = await run_in_threadpool(answer)
        return Response(body, media_type="application/json")

    # --- endpoints ---

    async def health(self, request: Request) -> Response:
        why = self._unhealthy()
        body: dict[str, Any] = {"ok": not why, "auth": bool(self._token)}
        if why:
            body["error"] = {"code": ErrorCode.UNAVAILABLE.value, "message": why}
        return json_response(body, 503 if why else 200)

    async def login(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            given = body.get("token", "") if isinstance(body, dict) else None
        except ValueError:
            given = None
        if not isinstance(given, str):
            return error_response(InvalidArgumentError('expected {"token": "..."}'))
        if self._token and not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                   self._token):
            return error_response(UnauthenticatedError("wrong token"))
        response = Response(status_code=204)
        if self._token:
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict", path="/",
                                secure=self._secure)
        return response

    async def unknown(self, request: Request) -> Response:
        raise NotFoundError(f"no API endpoint {request.url.path}")

    async def experiments(self, request: Request) -> Response:
        return await self._json(self._service.list_experiments, wrap="experiments")

    async def keys(self, request: Request) -> Response:
        return await self._json(self._service.run_keys, experiments=_texts(request, "experiment"))

    async def runs(self, request: Request) -> Response:
        page = await self._call(
            self._service.search_runs,
            page_size=_int(request, "page_size", 0),
            page_token=_text(request, "page_token"),
            filter_text=_text(request, "filter"),
            order_by=_texts(request, "order_by"),
            experiments=_texts(request, "experiment"),
            view=_text(request, "view", "ACTIVE_ONLY") or "ACTIVE_ONLY",
            columns=_texts(request, "column"),
        )

        def answer() -> bytes:
            # RunInfo's fields and "columns" (empty when none were asked for).
            values = page.columns or ({},) * len(page.runs)
            runs = []
            for info, cols in zip(page.runs, values, strict=True):
                row = gateway_json.plain(info)
                row["columns"] = gateway_json.plain(cols)
                runs.append(row)
            return gateway_json.encode_plain({"runs": runs,
                                              "next_page_token": page.next_page_token})

        return Response(await run_in_threadpool(answer), media_type="application/json")

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if _bool(request, "all_attempts"):
            return await self._json(self._service.get_run, run_id, all_attempts=True)
        return await self._json(self._service.get_run, run_id)

    async def metrics(self, request: Request) -> Response:
        return await self._json(self._service.list_metric_keys, request.path_params["run_id"],
                                wrap="metrics")

    async def reproduce(self, request: Request) -> Response:
        run = await self._call(self._service.get_run, request.path_params["run_id"])
        return json_response({"text": reproduce_text(run)})

    async def ranks(self, request: Request) -> Response:
        return await self._json(self._service.rank_health, request.path_params["run_id"],
                                _text(request, "step_time_key"), _text(request, "lag_key"))

    async def lag(self, request: Request) -> Response:
        return await self._json(self._service.rank_lag, request.path_params["run_id"],
                                _text(request, "key"), max_steps=_int(request, "max_steps", 200))

    async def envelope(self, request: Request) -> Response:
        return await self._json(self._service.rank_envelope, request.path_params["run_id"],
                                _text(request, "key"),
                                max_points=_int(request, "max_points", 1000),
                                start_step=_optional_int(request, "start_step"),
                                end_step=_optional_int(request, "end_step"))

    async def artifact(self, request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["name"]
        sha_prefix = _text(request, "sha256")

        def find() -> tuple[Path, str]:
            with deadline.scope(self._timeout_s):
                run = self._service.get_run(run_id)
            chosen = artifact_files.choose_artifact(run, name, sha_prefix)
            return artifact_files.stored_file(self._artifacts_root, chosen), chosen.name

        path, chosen_name = await run_in_threadpool(find)
        return FileResponse(path, media_type="application/octet-stream",
                            filename=chosen_name.rsplit("/", 1)[-1] or "artifact",
                            content_disposition_type="attachment",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def diff(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def read() -> bytes:
            with deadline.scope(self._timeout_s):
                run = self._service.get_run(run_id)
            return artifact_files.stored_diff(self._artifacts_root, run.code)

        return Response(await run_in_threadpool(read), media_type="text/plain; charset=utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})

    async def history(self, request: Request) -> Response:
        return await self._json(
            self._service.metric_histories, _texts(request, "run"), _texts(request, "key"),
            max_points=_int(request, "max_points", 1000), ranks=_ints(request, "rank"),
            aggregate=_text(request, "aggregate"),
            start_step=_optional_int(request, "start_step"),
            end_step=_optional_int(request, "end_step"), wrap="series")

    async def compare(self, request: Request) -> Response:
        return await self._json(self._service.compare_runs, _texts(request, "run"),
                                _texts(request, "key"))

    async def ingest(self, request: Request) -> Response:
        return await self._json(self._service.ingest_status, wrap="partitions")

    async def follow(self, request: Request) -> Response:
        cancelled = threading.Event()
        updates = self._service.follow_run(
            request.path_params["run_id"], _texts(request, "key"), _ints(request, "rank"),
            _int(request, "from_step", -1), cancelled=cancelled)
        stream = _FollowStream(updates, cancelled)
        try:
            first = await stream.next()  # bad arguments, unknown run, too many followers
        except BaseException:
            stream.close()
            raise
        return StreamingResponse(stream.events(first), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    async def index(self, request: Request) -> Response:
        path = self._static / "index.html"
        if not path.is_file():
            return PlainTextResponse(_NO_BUNDLE.format(path=path), 503)
        return FileResponse(path, media_type="text/html",
                            headers={"Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff"})


def sse_event(event: str, data: bytes) -> bytes:
    """One Server-Sent Event (``data`` is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def update_event(update: FollowUpdate) -> bytes:
    """``event: points`` or ``event: status`` with the update as JSON."""
    kind = "points" if isinstance(update, PointsUpdate) else "status"
    return sse_event(kind, gateway_json.dumps(update))


class _FollowStream:
    """A FollowRun generator driven from the event loop: each ``next`` runs on the
    stream's own thread (``runstream-query-follow``), so the generator only ever runs
    there, and :meth:`close` (queued behind a ``next`` in flight) releases its follower
    slot once the cancelled stream reaches its next poll."""

    def __init__(self, updates: Iterator[FollowUpdate], cancelled: threading.Event) -> None:
        self._updates = updates
        self._cancelled = cancelled
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="runstream-query-follow")
        self._closed = False

    def next(self) -> asyncio.Future[FollowUpdate | None]:
        return asyncio.get_running_loop().run_in_executor(
            self._thread, next, self._updates, None)

    def close(self) -> None:
        """End the stream at its next poll and release it, without waiting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cancelled.set()
        self._thread.submit(self._updates.close)  # type: ignore[attr-defined]
        self._thread.shutdown(wait=False)

    async def events(self, first: FollowUpdate | None) -> AsyncIterator[bytes]:
        try:
            update = first
            while update is not None:
                yield update_event(update)
                pending = self.next()
                while True:
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                    if done:
                        break
                    yield b": keep-alive\n\n"
                try:
                    update = pending.result()
                except RunstreamError as e:
                    yield sse_event("error", gateway_json.dumps(error_body(e)))
                    return
                except Exception:
                    log.exception("web API follow failed unexpectedly")
                    yield sse_event("error", gateway_json.dumps(
                        {"error": {"code": "INTERNAL", "message": "internal error in follow;"
                                   " see the server log"}}))
                    return
            yield sse_event("end", b"{}")
        finally:
            self.close()  # also when the client went away (the task is cancelled)


class _Assets:
    """``/assets/*`` from the bundle's folder (ETag, Last-Modified, 304), or a 503 page
    while the bundle is missing."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._directory.is_dir():
            response: Response = PlainTextResponse(_NO_BUNDLE.format(path=self._directory), 503)
            await response(scope, receive, send)
            return
        await self._files(scope, receive, send)


# --- serving --------------------------------------------------------------------------------


class UiServer:
    """uvicorn serving an ASGI app on a socket bound at construction (errors come then),
    on the daemon thread ``runstream-query-ui`` once :meth:`start` is called.

    ``host``/``port`` are the bound address (port 0 asked: the port picked). TLS when
    ``tls_cert``/``tls_key`` (PEM paths) are given. :meth:`stop` lets requests in flight
    finish for ``grace_s`` seconds, then cancels them; idempotent. Thread-safe.
    """

    def __init__(self, app: Any, addr: str, *, tls_cert: str = "", tls_key: str = "",
                 grace_s: float = 5.0) -> None:
        host, port = names.parse_host_port(names.UI_ADDR, addr)
        self.host = host
        self.secure = bool(tls_cert)
        self._grace_s = grace_s
        self._socket = _bind(host, port, addr)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app, host=host, port=self.port, log_config=None, access_log=False,
            lifespan="off", server_header=False, http="h11", loop="asyncio",
            ssl_certfile=tls_cert or None, ssl_keyfile=tls_key or None,
            timeout_graceful_shutdown=max(1, math.ceil(grace_s)),
        )
        try:
            config.load()  # the TLS files: fail here, not on the thread
        except Exception as e:
            self._socket.close()
            raise UnavailableError(f"web UI on {addr}: {e}") from e
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="runstream-query-ui",
                                        daemon=True)
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def address(self) -> str:
        """"host:port" of the bound socket."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The UI's address as a browser opens it: ``http(s)://host:port/``."""
        return f"{'https' if self.secure else 'http'}://{self.address}/"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except Exception:
            log.exception("web UI on %s stopped unexpectedly", self.address)

    def start(self) -> None:
        """Start serving on the thread. Returns at once (the socket already listens)."""
        self._thread.start()

    def begin_stop(self) -> None:
        """Refuse new connections from now on; :meth:`stop` waits for the end."""
        self._server.should_exit = True

    def stop(self) -> None:
        """Stop (see the class); blocks up to the grace period and a little more."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self.begin_stop()
            if self._thread.is_alive():
                self._thread.join(self._grace_s + 5.0)
            if self._thread.is_alive():
                log.error("web UI on %s did not stop within %.0f s", self.address,
                          self._grace_s + 5.0)
            self._socket.close()


def _bind(host: str, port: int, addr: str) -> socket.socket:
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise UnavailableError(f"web UI: cannot listen on {addr}: {e}") from e
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UnavailableError(f"web UI: cannot listen on {addr}: {e}") from e
    sock.setblocking(False)
    return sock
