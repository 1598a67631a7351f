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

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runstream.proto import config as names
from runstream.proto.errors import (
    ConfigError,
    RunstreamError,
    code_for_grpc_status,
    error_for_code,
)
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.config import (
    DEFAULT_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    ClientConfig,
)
from runstream.query.convert import (
    aggregate_to_pb,
    follow_update_from_pb,
    from_pb,
    goal_to_pb,
    history_from_pb,
    view_to_pb,
)
from runstream.query.limits import (
    DEFAULT_HISTORY_PAGE_SIZE,
    DEFAULT_LAG_STEPS,
    DEFAULT_RUNS_PAGE_SIZE,
    DEFAULT_UI_MAX_POINTS,
)
from runstream.query.models import (
    Comparison,
    ExperimentInfo,
    FollowUpdate,
    IngestPartition,
    Lineage,
    MetricHistory,
    MetricSummary,
    RankEnvelope,
    RankHealthReport,
    RankLag,
    Run,
    RunInfo,
    RunKeys,
    RunPage,
)

R = TypeVar("R")

#: gRPC retry policy of every QueryService RPC (all are idempotent reads): a call that
#: fails UNAVAILABLE (server restarting, connection refused or reset) is tried again, up
#: to 5 attempts in all, with exponential backoff from 0.1 s to 2 s. gRPC retries a
#: streaming call (FollowRun, ExportMetricHistory) only until its first response
#: arrives, so no chunk is ever delivered twice. The health check is not covered.
RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
#: The channel's service config (gRPC's JSON format): RETRY_POLICY on QueryService.
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{"name": [{"service": "runstream.v1.QueryService"}],
                      "retryPolicy": RETRY_POLICY}],
})


class RunList(list[RunInfo]):
    """The runs of a SearchRuns page (a list), with ``columns``: parallel to the runs, each
    run's values of the columns asked for ("params.X" / "tags.X" -> str, "metrics.X" ->
    float; a value the run lacks has no entry); empty when none were asked for."""

    columns: list[Mapping[str, str | float]]

    def __init__(self, runs: Iterable[RunInfo] = (),
                 columns: Iterable[Mapping[str, str | float]] = ()) -> None:
        super().__init__(runs)
        self.columns = list(columns)


def _step_range(start_step: int | None, end_step: int | None) -> dict[str, int]:
    """The optional start_step / end_step fields of a request, only those given."""
    out = {}
    if start_step is not None:
        out["start_step"] = start_step
    if end_step is not None:
        out["end_step"] = end_step
    return out


def error_from_rpc(error: grpc.RpcError) -> RunstreamError:
    """The :class:`RunstreamError` subclass matching a failed RPC's status and details."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else None
    name = code.name if code is not None else "INTERNAL"
    return error_for_code(code_for_grpc_status(name), details or f"query service: {name}")


def channel_options() -> list[tuple[str, Any]]:
    """The client channel's options: message size limits and the retry policy."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", SERVICE_CONFIG),
    ]


class Client:
    """A connection to the Runstream query service.

    ``target``: "host:port" (any gRPC target); default $RUNSTREAM_QUERY_ADDR, else
    127.0.0.1:50051. ``timeout_s``: deadline of each RPC, in seconds. ``token``: bearer
    token sent with every RPC (default $RUNSTREAM_TOKEN). ``tls_ca``: PEM file of the
    server's CA, which turns TLS on (default $RUNSTREAM_QUERY_TLS_CA; "" = plaintext).
    The channel connects lazily; close it with :meth:`close` or use the client as a
    context manager.
    """

    def __init__(
        self,
        target: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        config = names.with_explicit(ClientConfig.from_env(environ), target=target,
                                     token=token, tls_ca=tls_ca, timeout_s=timeout_s)
        self.config = config
        self.target = config.target
        self.timeout_s = config.timeout_s
        self._metadata = (("authorization", f"Bearer {config.token}"),) if config.token else ()
        options = channel_options()
        if config.tls_ca:
            try:
                root = Path(config.tls_ca).read_bytes()
            except OSError as e:
                raise ConfigError(f"{names.QUERY_TLS_CA}={config.tls_ca!r}: {e}") from e
            credentials = grpc.ssl_channel_credentials(root_certificates=root)
            self._channel = grpc.secure_channel(config.target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(config.target, options=options)
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
            return method(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from e

    def get_run(self, run_id: str, all_attempts: bool = False) -> Run:
        """Everything recorded for one run. NotFoundError if unknown.

        ``info`` and ``ranks`` describe the run's latest attempt (``attempts`` lists them
        all); ``all_attempts`` lists the ranks of every attempt, each with its ``attempt``.
        """
        request = query_pb2.GetRunRequest(run_id=run_id, all_attempts=all_attempts)
        response = self._call(self._stub.GetRun, request)
        return from_pb(response.run, Run)

    def get_lineage(self, sha256: str) -> Lineage:
        """Where an artifact came from and where it went (see GetLineage): the runs that
        logged content with this SHA-256 (64 lowercase hex digits; each with its ``run``
        as :meth:`get_run` returns it) and the runs that used it as an input, oldest
        first. An unknown digest gives empty lists; a malformed one InvalidArgumentError.
        """
        response = self._call(self._stub.GetLineage, query_pb2.GetLineageRequest(sha256=sha256))
        return from_pb(response, Lineage)

    def search_runs(
        self,
        experiment: str | None = None,
        page_size: int = DEFAULT_RUNS_PAGE_SIZE,
        page_token: str = "",
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        experiments: Sequence[str] = (),
        view: str = "ACTIVE_ONLY",
        columns: Sequence[str] = (),
    ) -> tuple[RunList, str]:
        """One page of runs matching ``filter`` (MLflow grammar), in ``order_by`` order.

        ``experiment``/``experiments`` restrict the experiments (none = all); default
        order: newest start first. ``view``: "ACTIVE_ONLY" (archived runs left out),
        "ARCHIVED_ONLY" or "ALL" (ValueError for anything else). Returns the runs and
        the token of the next page ("" on the last page). ``page_size`` is 1..1000. A
        bad filter raises InvalidArgumentError naming the offending position.
        ``columns`` ("params.X", "metrics.X", "tags.X"; at most 50): the runs' values of
        them come back as the runs list's ``columns`` (see :class:`RunList`).
        """
        request = query_pb2.SearchRunsRequest(
            experiment=experiment or "", page_size=page_size, page_token=page_token,
            filter=filter, order_by=list(order_by), experiments=list(experiments),
            view=view_to_pb(view), columns=list(columns),
        )
        response = self._call(self._stub.SearchRuns, request)
        page = from_pb(response, RunPage)
        return RunList(page.runs, page.columns), page.next_page_token

    def iter_runs(
        self,
        experiment: str | None = None,
        page_size: int = DEFAULT_RUNS_PAGE_SIZE,
        *,
        filter: str = "",
        order_by: Sequence[str] = (),
        view: str = "ACTIVE_ONLY",
    ) -> Iterator[RunInfo]:
        """Every matching run (archived ones as ``view`` says), fetching pages as it goes."""
        token = ""
        while True:
            runs, token = self.search_runs(
                experiment, page_size, token, filter=filter, order_by=order_by, view=view
            )
            yield from runs
            if not token:
                return

    def compare_runs(
        self,
        run_ids: Sequence[str],
        metric_keys: Sequence[str] = (),
        goals: Mapping[str, str] | None = None,
    ) -> Comparison:
        """2..50 runs side by side (see CompareRuns). ``goals``: key -> "minimize"/"maximize"."""
        request = query_pb2.CompareRunsRequest(
            run_ids=list(run_ids), metric_keys=list(metric_keys),
            goals={k: goal_to_pb(v) for k, v in (goals or {}).items()},
        )
        return from_pb(self._call(self._stub.CompareRuns, request), Comparison)

    def list_experiments(self) -> list[ExperimentInfo]:
        response = self._call(self._stub.ListExperiments, query_pb2.ListExperimentsRequest())
        return [from_pb(e, ExperimentInfo) for e in response.experiments]

    def list_metric_keys(self, run_id: str) -> list[MetricSummary]:
        request = query_pb2.ListMetricKeysRequest(run_id=run_id)
        response = self._call(self._stub.ListMetricKeys, request)
        return [from_pb(m, MetricSummary) for m in response.metrics]

    def ingest_status(self) -> list[IngestPartition]:
        """Latest progress of every consumer partition heard from in the last minute."""
        response = self._call(self._stub.GetIngestStatus, query_pb2.GetIngestStatusRequest())
        return [from_pb(p, IngestPartition) for p in response.partitions]

    def rank_health(self, run_id: str, step_time_key: str = "", lag_key: str = ""
                    ) -> RankHealthReport:
        """Which rank of a run is slow or broken (see GetRankHealth): per rank its step
        time percentiles, lag behind the median rank, first NaN/inf per key, last sign
        of life, status and problems, with the suspects slowest first. ``step_time_key``
        "" = telemetry/step_time_s; ``lag_key`` "" = the step-time key if logged, else
        the key with the most points. NotFoundError if the run is unknown."""
        request = query_pb2.GetRankHealthRequest(run_id=run_id, step_time_key=step_time_key,
                                                 lag_key=lag_key)
        return from_pb(self._call(self._stub.GetRankHealth, request), RankHealthReport)

    def metric_histories(
        self,
        run_ids: Sequence[str],
        keys: Sequence[str],
        *,
        max_points: int = DEFAULT_UI_MAX_POINTS,
        ranks: Iterable[int] = (),
        aggregate: str = "",
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> list[MetricHistory]:
        """Downsampled histories of several runs x keys in one call (see
        GetMetricHistories): one per (run, key), run-major, each as
        :meth:`metric_history` with ``max_points`` gives it, within the inclusive step
        range. 1..50 runs, 1..20 keys, at most 200 series."""
        request = query_pb2.GetMetricHistoriesRequest(
            run_ids=list(run_ids), keys=list(keys), max_points=max_points,
            ranks=sorted(set(ranks)), aggregate=aggregate_to_pb(aggregate),
            **_step_range(start_step, end_step))
        response = self._call(self._stub.GetMetricHistories, request)
        return [history_from_pb(s.history, run_id=s.run_id, key=s.key, aggregate=aggregate)
                for s in response.series]

    def rank_envelope(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int = DEFAULT_UI_MAX_POINTS,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> RankEnvelope:
        """A key's spread across a run's ranks per step (see GetRankEnvelope): mean, min,
        max and the rank at each extreme, bucketed to ``max_points``, with the departing
        rank and each rank's first NaN/inf. NotFoundError if the run is unknown."""
        request = query_pb2.GetRankEnvelopeRequest(
            run_id=run_id, key=key, max_points=max_points, **_step_range(start_step, end_step))
        return from_pb(self._call(self._stub.GetRankEnvelope, request), RankEnvelope)

    def rank_lag(self, run_id: str, key: str = "", *, max_steps: int = DEFAULT_LAG_STEPS
                 ) -> RankLag:
        """Each rank's lag behind the median rank per step bucket (see GetRankLag); ``key``
        "" = GetRankHealth's lag key. NotFoundError if the run is unknown."""
        request = query_pb2.GetRankLagRequest(run_id=run_id, key=key, max_steps=max_steps)
        return from_pb(self._call(self._stub.GetRankLag, request), RankLag)

    def run_keys(self, experiments: Sequence[str] = ()) -> RunKeys:
        """The param, metric and tag keys used by runs of these experiments (none = all),
        sorted, at most 1,000 each (see ListRunKeys)."""
        request = query_pb2.ListRunKeysRequest(experiments=list(experiments))
        return from_pb(self._call(self._stub.ListRunKeys, request), RunKeys)

    def follow(
        self,
        run_id: str,
        keys: Sequence[str] = (),
        from_step: int = 0,
        ranks: Sequence[int] = (),
        *,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[FollowUpdate]:
        """Stream a run's points and status changes (see FollowRun) as they arrive.

        ``from_step`` -1 = live only. Ends when the run ends, when ``timeout_s`` (None =
        no deadline) passes (DeadlineExceededError), or soon after ``stop`` is set.
        Blocks while waiting for the next update.
        """
        request = query_pb2.FollowRunRequest(
            run_id=run_id, keys=list(keys), from_step=from_step, ranks=list(ranks)
        )
        call = self._stub.FollowRun(request, timeout=timeout_s, metadata=self._metadata)
        watcher = None
        if stop is not None:
            watcher = threading.Thread(
                target=lambda: stop.wait() and call.cancel(),
                name="runstream-client-follow-cancel", daemon=True,
            )
            watcher.start()
        try:
            for message in call:
                yield follow_update_from_pb(message)
        except grpc.RpcError as e:
            if stop is not None and stop.is_set() and e.code() == grpc.StatusCode.CANCELLED:
                return
            raise error_from_rpc(e) from e
        finally:
            call.cancel()

    def metric_history(
        self,
        run_id: str,
        key: str,
        ranks: Iterable[int] | None = None,
        page_size: int = DEFAULT_HISTORY_PAGE_SIZE,
        page_token: str | None = None,
        *,
        max_points: int = 0,
        aggregate: str = "",
        own_points_only: bool = False,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> MetricHistory:
        """Points of one metric ordered by (rank, step, ts_ms), deduplicated.

        ``ranks`` None/empty = all ranks. Without ``page_token`` every point comes in
        one ExportMetricHistory stream (``page_size`` is then unused and
        ``next_page_token`` ""), which must finish within ``timeout_s`` (30 s by
        default: tens of millions of points); page a longer series with ``page_token``
        (each page has its own deadline). With one ("" = first page) only that page of
        GetMetricHistory comes back, with its ``next_page_token``. ``max_points``
        2..10,000 downsamples each series (LTTB plus the per-bucket min/max envelope) in
        one call;
        ``aggregate`` "mean"/"min"/"max" merges ranks per step. A forked run's history
        includes its parent's points up to the fork step, as one series;
        ``own_points_only`` leaves them out. NotFoundError for an unknown run; a run
        without this metric gives an empty history. ``start_step`` / ``end_step``: only
        steps in that inclusive range (downsampled over the range alone); a range is
        read page by page (GetMetricHistory) even without ``page_token``.
        """
        rank_list = sorted(set(ranks or ()))
        agg = aggregate_to_pb(aggregate)
        ranged = _step_range(start_step, end_step)
        if max_points:
            request = query_pb2.GetMetricHistoryRequest(
                run_id=run_id, key=key, ranks=rank_list, max_points=max_points, aggregate=agg,
                own_points_only=own_points_only, start_step=start_step, end_step=end_step,
            )
            response = self._call(self._stub.GetMetricHistory, request)
            return history_from_pb(response, run_id=run_id, key=key, aggregate=aggregate)
        if page_token is None and ranged:
            return self._all_pages(run_id, key, rank_list, page_size, agg, aggregate,
                                   own_points_only, ranged)
        if page_token is None:
            return self._export(run_id, key, rank_list, agg, aggregate, own_points_only)
        request = query_pb2.GetMetricHistoryRequest(
            run_id=run_id, key=key, ranks=rank_list, page_size=page_size, page_token=page_token,
            aggregate=agg, own_points_only=own_points_only, **ranged,
        )
        response = self._call(self._stub.GetMetricHistory, request)
        return history_from_pb(response, run_id=run_id, key=key, aggregate=aggregate)

    def _all_pages(self, run_id: str, key: str, ranks: list[int], page_size: int,
                   agg: query_pb2.Aggregate, aggregate: str, own_points_only: bool,
                   ranged: Mapping[str, int]) -> MetricHistory:
        """Every point of a step range, page after page of GetMetricHistory, joined."""
        out = MetricHistory(run_id=run_id, key=key, aggregate=aggregate)
        token = ""
        while True:
            request = query_pb2.GetMetricHistoryRequest(
                run_id=run_id, key=key, ranks=ranks, page_size=page_size, page_token=token,
                aggregate=agg, own_points_only=own_points_only, **ranged)
            response = self._call(self._stub.GetMetricHistory, request)
            out.ranks.extend(response.ranks)
            out.steps.extend(response.steps)
            out.values.extend(response.values)
            out.ts_ms.extend(response.ts_ms)
            token = response.next_page_token
            if not token:
                return out

    def _export(self, run_id: str, key: str, ranks: list[int], agg: query_pb2.Aggregate,
                aggregate: str, own_points_only: bool = False) -> MetricHistory:
        request = query_pb2.ExportMetricHistoryRequest(
            run_id=run_id, key=key, ranks=ranks, aggregate=agg, own_points_only=own_points_only
        )
        ranks_out: list[int] = []
        steps: list[int] = []
        values: list[float] = []
        ts_ms: list[int] = []
        call = self._stub.ExportMetricHistory(request, timeout=self.timeout_s,
                                              metadata=self._metadata)
        try:
            for chunk in call:
                # A slice copies a repeated field out in one C loop; += then only copies
                # pointers (about 20% faster than list.extend on the field).
                ranks_out += chunk.ranks[:]
                steps += chunk.steps[:]
                values += chunk.values[:]
                ts_ms += chunk.ts_ms[:]
        except grpc.RpcError as e:
            raise error_from_rpc(e) from e
        finally:
            call.cancel()
        return MetricHistory(run_id=run_id, key=key, ranks=ranks_out, steps=steps,
                             values=values, ts_ms=ts_ms, aggregate=aggregate)

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
