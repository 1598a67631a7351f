"""The Python client of the query service (needs grpcio; never ClickHouse).

``Client`` mirrors the gRPC service and returns the dataclasses of
:mod:`runstream.query.models`. Failed calls raise the same :mod:`runstream.proto.errors`
classes the server raised (``NotFoundError``, ``InvalidArgumentError``, ...); a server
that cannot be reached raises ``UnavailableError`` and a call past ``timeout_s`` raises
``DeadlineExceededError``.

Thread-safety: one ``Client`` may be shared by threads (a gRPC channel is). Every
method blocks until its RPCs finish (each RPC is bounded by ``timeout_s``).

Example::

    with Client("127.0.0.1:50051") as client:
        run = client.get_run("a1b2c3")
        loss = client.metric_history(run.info.run_id, "loss")
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runstream.proto import config as cfg
from runstream.proto.errors import RunstreamError, code_for_grpc_status, error_for_code
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.convert import run_from_pb, run_info_from_pb
from runstream.query.models import MetricHistory, Run, RunInfo

SERVICE_NAME: str = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RUNS_PAGE_SIZE = 100
DEFAULT_HISTORY_PAGE_SIZE = 100_000

R = TypeVar("R")


def error_from_rpc(error: grpc.RpcError) -> RunstreamError:
    """The :class:`RunstreamError` subclass matching a failed RPC's status and details."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else None
    name = code.name if code is not None else "INTERNAL"
    return error_for_code(code_for_grpc_status(name), details or f"query service: {name}")


class Client:
    """A connection to the Runstream query service.

    ``target``: "host:port" (any gRPC target); default $RUNSTREAM_QUERY_ADDR, else
    127.0.0.1:50051. ``timeout_s``: deadline of each RPC, in seconds. The channel
    connects lazily; close it with :meth:`close` or use the client as a context manager.
    """

    def __init__(
        self,
        target: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if target is None:
            env = cfg.environ_or_os(environ)
            target = cfg.env_str(env, cfg.QUERY_ADDR, cfg.DEFAULT_QUERY_ADDR)
        if not target:
            raise cfg.ConfigError(f"{cfg.QUERY_ADDR}: empty query server address")
        if not timeout_s > 0:
            raise cfg.ConfigError(f"timeout_s={timeout_s}: expected a positive number of seconds")
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = query_pb2_grpc.QueryServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def healthy(self, timeout_s: float = 1.0) -> bool:
        """True if the server answers the standard gRPC health check with SERVING.

        Blocks up to ``timeout_s`` seconds; never raises for an unreachable server.
        """
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            response = self._health.Check(request, timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from e

    def get_run(self, run_id: str) -> Run:
        """Everything recorded for one run. NotFoundError if unknown."""
        response = self._call(self._stub.GetRun, query_pb2.GetRunRequest(run_id=run_id))
        return run_from_pb(response.run)

    def search_runs(
        self,
        experiment: str | None = None,
        page_size: int = DEFAULT_RUNS_PAGE_SIZE,
        page_token: str = "",
    ) -> tuple[list[RunInfo], str]:
        """One page of runs (``experiment`` None = all), newest start first.

        Returns the runs and the token of the next page ("" on the last page).
        ``page_size`` is 1..1000.
        """
        request = query_pb2.SearchRunsRequest(
            experiment=experiment or "", page_size=page_size, page_token=page_token
        )
        response = self._call(self._stub.SearchRuns, request)
        return [run_info_from_pb(r) for r in response.runs], response.next_page_token

    def iter_runs(
        self, experiment: str | None = None, page_size: int = DEFAULT_RUNS_PAGE_SIZE
    ) -> Iterator[RunInfo]:
        """Every run (of one experiment), newest first, fetching pages as it goes."""
        token = ""
        while True:
            runs, token = self.search_runs(experiment, page_size, token)
            yield from runs
            if not token:
                return

    def metric_history(
        self,
        run_id: str,
        key: str,
        ranks: Iterable[int] | None = None,
        page_size: int = DEFAULT_HISTORY_PAGE_SIZE,
        page_token: str | None = None,
    ) -> MetricHistory:
        """Points of one metric ordered by (rank, step, ts_ms), deduplicated.

        ``ranks`` None/empty = all ranks. Without ``page_token`` every page is fetched
        and joined (``next_page_token`` is then ""); with one ("" = first page) only that
        page comes back, with its ``next_page_token``. NotFoundError for an unknown run;
        a run without this metric gives an empty history.
        """
        rank_list = sorted(set(ranks or ()))
        single = page_token is not None
        token = page_token or ""
        out = MetricHistory(run_id=run_id, key=key)
        while True:
            request = query_pb2.GetMetricHistoryRequest(
                run_id=run_id, key=key, ranks=rank_list, page_size=page_size, page_token=token
            )
            response = self._call(self._stub.GetMetricHistory, request)
            out.ranks.extend(response.ranks)
            out.steps.extend(response.steps)
            out.values.extend(response.values)
            out.ts_ms.extend(response.ts_ms)
            token = response.next_page_token
            if single or not token:
                break
        if single and token:
            return MetricHistory(
                run_id=run_id,
                key=key,
                ranks=out.ranks,
                steps=out.steps,
                values=out.values,
                ts_ms=out.ts_ms,
                next_page_token=token,
            )
        return out

    def close(self) -> None:
        """Close the channel; in-flight calls are cancelled. Idempotent."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
