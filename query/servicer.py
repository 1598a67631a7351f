"""The gRPC face of the query service: protobuf in, domain call, protobuf out.

:class:`QueryServicer` holds no logic. A :class:`RunstreamError` becomes
``context.abort`` with the status from :data:`runstream.proto.errors.GRPC_STATUS` and
the error's message; anything unexpected is logged with its traceback and answered
``INTERNAL`` without internals in the message. Thread-safe: grpcio calls it from its
worker pool, one RPC per thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NoReturn, TypeVar

import grpc

from runstream.proto.errors import GRPC_STATUS, RunstreamError
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.convert import history_to_pb, run_info_to_pb, run_to_pb
from runstream.query.service import QueryService

log = logging.getLogger(__name__)

R = TypeVar("R")


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """Implements ``runstream.v1.QueryService`` on top of a :class:`QueryService`."""

    def __init__(self, service: QueryService) -> None:
        self._service = service

    def GetRun(
        self, request: query_pb2.GetRunRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetRunResponse:
        return _answer(
            context,
            "GetRun",
            lambda: query_pb2.GetRunResponse(run=run_to_pb(self._service.get_run(request.run_id))),
        )

    def SearchRuns(
        self, request: query_pb2.SearchRunsRequest, context: grpc.ServicerContext
    ) -> query_pb2.SearchRunsResponse:
        def call() -> query_pb2.SearchRunsResponse:
            page = self._service.search_runs(
                request.experiment, request.page_size, request.page_token
            )
            return query_pb2.SearchRunsResponse(
                runs=[run_info_to_pb(r) for r in page.runs], next_page_token=page.next_page_token
            )

        return _answer(context, "SearchRuns", call)

    def GetMetricHistory(
        self, request: query_pb2.GetMetricHistoryRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetMetricHistoryResponse:
        return _answer(
            context,
            "GetMetricHistory",
            lambda: history_to_pb(
                self._service.metric_history(
                    request.run_id,
                    request.key,
                    request.ranks,
                    request.page_size,
                    request.page_token,
                )
            ),
        )


def _answer(context: grpc.ServicerContext, method: str, call: Callable[[], R]) -> R:
    try:
        return call()
    except RunstreamError as e:
        error: RunstreamError = e
    except Exception:
        log.exception("QueryService/%s failed unexpectedly", method)
        _abort(context, grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
    if error.code.name == "INTERNAL":
        log.error("QueryService/%s failed: %s", method, error, exc_info=error)
    _abort(context, grpc.StatusCode[GRPC_STATUS[error.code]], str(error))


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise RuntimeError("context.abort returned")  # grpcio always raises; keeps typing honest
