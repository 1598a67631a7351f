"""The gRPC face of the query service: protobuf in, domain call, protobuf out.

:class:`QueryServicer` holds no logic. A :class:`RunstreamError` becomes
``context.abort`` with the status from :data:`runstream.proto.errors.GRPC_STATUS` and
the error's message; anything unexpected is logged with its traceback and answered
``INTERNAL`` without internals in the message. Each call runs inside a
:func:`deadline.scope` of the RPC's remaining time, so ClickHouse queries stop when the
caller's deadline passes. Thread-safe: grpcio calls it from its worker pool, one RPC per
thread (a FollowRun or ExportMetricHistory stream holds its thread until it ends).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from runstream.proto.errors import GRPC_STATUS, RunstreamError
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query import deadline
from runstream.query.convert import (
    aggregate_from_pb,
    follow_update_to_pb,
    goal_from_pb,
    to_pb,
    view_from_pb,
)
from runstream.query.limits import DEFAULT_LAG_STEPS, DEFAULT_UI_MAX_POINTS
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
        def call() -> query_pb2.GetRunResponse:
            # The keyword only when asked for: a service (subclass) of one argument serves
            # the plain request as before.
            run = (self._service.get_run(request.run_id, all_attempts=True)
                   if request.all_attempts else self._service.get_run(request.run_id))
            return query_pb2.GetRunResponse(run=to_pb(run, query_pb2.Run))

        return _answer(context, "GetRun", call)

    def SearchRuns(
        self, request: query_pb2.SearchRunsRequest, context: grpc.ServicerContext
    ) -> query_pb2.SearchRunsResponse:
        def call() -> query_pb2.SearchRunsResponse:
            page = self._service.search_runs(
                request.experiment,
                request.page_size,
                request.page_token,
                filter_text=request.filter,
                order_by=tuple(request.order_by),
                experiments=tuple(request.experiments),
                view=view_from_pb(request.view),
                **({"columns": tuple(request.columns)} if request.columns else {}),
            )
            return to_pb(page, query_pb2.SearchRunsResponse)

        return _answer(context, "SearchRuns", call)

    def GetMetricHistory(
        self, request: query_pb2.GetMetricHistoryRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetMetricHistoryResponse:
        return _answer(
            context,
            "GetMetricHistory",
            lambda: to_pb(
                self._service.metric_history(
                    request.run_id,
                    request.key,
                    request.ranks,
                    request.page_size,
                    request.page_token,
                    max_points=request.max_points,
                    aggregate=aggregate_from_pb(request.aggregate),
                    own_points_only=request.own_points_only,
                    **_step_range(request),
                ),
                query_pb2.GetMetricHistoryResponse,
            ),
        )

    def ExportMetricHistory(
        self, request: query_pb2.ExportMetricHistoryRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.MetricHistoryChunk]:
        chunks = _answer(context, "ExportMetricHistory",
                         lambda: self._service.export_metric_history(
                             request.run_id, request.key, request.ranks,
                             aggregate=aggregate_from_pb(request.aggregate),
                             own_points_only=request.own_points_only))
        try:
            while True:
                chunk = _answer(context, "ExportMetricHistory", lambda: next(chunks, None))
                if chunk is None:
                    return
                yield query_pb2.MetricHistoryChunk(
                    ranks=chunk.ranks, steps=chunk.steps, values=chunk.values, ts_ms=chunk.ts_ms
                )
        finally:
            # Also when the client cancels: grpcio drops (closes) this generator.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def CompareRuns(
        self, request: query_pb2.CompareRunsRequest, context: grpc.ServicerContext
    ) -> query_pb2.CompareRunsResponse:
        return _answer(
            context,
            "CompareRuns",
            lambda: to_pb(
                self._service.compare_runs(
                    tuple(request.run_ids),
                    tuple(request.metric_keys),
                    {k: goal_from_pb(v) for k, v in request.goals.items()},
                ),
                query_pb2.CompareRunsResponse,
            ),
        )

    def ListExperiments(
        self, request: query_pb2.ListExperimentsRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListExperimentsResponse:
        return _answer(
            context,
            "ListExperiments",
            lambda: query_pb2.ListExperimentsResponse(
                experiments=[to_pb(e, query_pb2.ExperimentInfo)
                             for e in self._service.list_experiments()]
            ),
        )

    def ListMetricKeys(
        self, request: query_pb2.ListMetricKeysRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListMetricKeysResponse:
        return _answer(
            context,
            "ListMetricKeys",
            lambda: query_pb2.ListMetricKeysResponse(
                metrics=[to_pb(m, query_pb2.MetricSummary)
                         for m in self._service.list_metric_keys(request.run_id)]
            ),
        )

    def GetIngestStatus(
        self, request: query_pb2.GetIngestStatusRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetIngestStatusResponse:
        return _answer(
            context,
            "GetIngestStatus",
            lambda: query_pb2.GetIngestStatusResponse(
                partitions=[to_pb(p, query_pb2.IngestPartition)
                            for p in self._service.ingest_status()]
            ),
        )

    def GetRankHealth(
        self, request: query_pb2.GetRankHealthRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetRankHealthResponse:
        return _answer(
            context,
            "GetRankHealth",
            lambda: to_pb(
                self._service.rank_health(request.run_id, request.step_time_key,
                                          request.lag_key),
                query_pb2.GetRankHealthResponse,
            ),
        )

    def GetMetricHistories(
        self, request: query_pb2.GetMetricHistoriesRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetMetricHistoriesResponse:
        def call() -> query_pb2.GetMetricHistoriesResponse:
            histories = self._service.metric_histories(
                tuple(request.run_ids), tuple(request.keys),
                max_points=request.max_points or DEFAULT_UI_MAX_POINTS,
                ranks=tuple(request.ranks), aggregate=aggregate_from_pb(request.aggregate),
                **_step_range(request))
            return query_pb2.GetMetricHistoriesResponse(series=[
                query_pb2.SeriesHistory(run_id=h.run_id, key=h.key,
                                        history=to_pb(h, query_pb2.GetMetricHistoryResponse))
                for h in histories])

        return _answer(context, "GetMetricHistories", call)

    def GetRankEnvelope(
        self, request: query_pb2.GetRankEnvelopeRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetRankEnvelopeResponse:
        return _answer(
            context,
            "GetRankEnvelope",
            lambda: to_pb(
                self._service.rank_envelope(
                    request.run_id, request.key,
                    max_points=request.max_points or DEFAULT_UI_MAX_POINTS,
                    **_step_range(request)),
                query_pb2.GetRankEnvelopeResponse,
            ),
        )

    def GetRankLag(
        self, request: query_pb2.GetRankLagRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetRankLagResponse:
        return _answer(
            context,
            "GetRankLag",
            lambda: to_pb(
                self._service.rank_lag(request.run_id, request.key,
                                       max_steps=request.max_steps or DEFAULT_LAG_STEPS),
                query_pb2.GetRankLagResponse,
            ),
        )

    def ListRunKeys(
        self, request: query_pb2.ListRunKeysRequest, context: grpc.ServicerContext
    ) -> query_pb2.ListRunKeysResponse:
        return _answer(
            context,
            "ListRunKeys",
            lambda: to_pb(self._service.run_keys(tuple(request.experiments)),
                          query_pb2.ListRunKeysResponse),
        )

    def GetLineage(
        self, request: query_pb2.GetLineageRequest, context: grpc.ServicerContext
    ) -> query_pb2.GetLineageResponse:
        return _answer(
            context,
            "GetLineage",
            lambda: to_pb(self._service.get_lineage(request.sha256),
                          query_pb2.GetLineageResponse),
        )

    def FollowRun(
        self, request: query_pb2.FollowRunRequest, context: grpc.ServicerContext
    ) -> Iterator[query_pb2.FollowRunResponse]:
        cancelled = threading.Event()
        # Called when the RPC ends for any reason: client cancel, deadline, server stop.
        context.add_callback(cancelled.set)
        updates = self._service.follow_run(
            request.run_id,
            tuple(request.keys),
            tuple(request.ranks),
            request.from_step,
            cancelled=cancelled,
        )
        while True:
            update = _answer(context, "FollowRun", lambda: next(updates, None))
            if update is None:
                return
            yield follow_update_to_pb(update)


def _step_range(request: Any) -> dict[str, int]:
    """The request's optional start_step / end_step as keyword arguments (only those set:
    a service of the old shape serves a request without them as before)."""
    return {name: getattr(request, name) for name in ("start_step", "end_step")
            if request.HasField(name)}


def _answer(context: grpc.ServicerContext, method: str, call: Callable[[], R]) -> R:
    try:
        with deadline.scope(context.time_remaining()):
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
