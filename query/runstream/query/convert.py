"""Conversions between domain objects (:mod:`runstream.query.models`) and protobuf messages.

Pure functions used by the servicer (domain → protobuf) and by the client (protobuf →
domain); they need protobuf only, never grpcio or ClickHouse. Unknown status or param
type names map to the enums' UNSPECIFIED value.
"""

from __future__ import annotations

from typing import cast

from runstream.proto.v1 import events_pb2, query_pb2
from runstream.query.models import (
    MAXIMIZE,
    MINIMIZE,
    Artifact,
    CodeVersion,
    ComparedField,
    ComparedMetric,
    Comparison,
    Environment,
    ExperimentInfo,
    FollowUpdate,
    Gpu,
    IngestPartition,
    Input,
    MetricHistory,
    MetricStats,
    MetricSummary,
    Package,
    Param,
    PointsUpdate,
    RankInfo,
    Run,
    RunInfo,
    StatusUpdate,
    Tag,
)

_AGGREGATE_TO_PB = {
    "": query_pb2.AGGREGATE_NONE, "mean": query_pb2.AGGREGATE_MEAN,
    "min": query_pb2.AGGREGATE_MIN, "max": query_pb2.AGGREGATE_MAX,
}
_AGGREGATE_FROM_PB: dict[int, str] = {int(v): k for k, v in _AGGREGATE_TO_PB.items()}
_GOAL_TO_PB = {
    "": query_pb2.METRIC_GOAL_AUTO, MINIMIZE: query_pb2.METRIC_GOAL_MINIMIZE,
    MAXIMIZE: query_pb2.METRIC_GOAL_MAXIMIZE,
}
_GOAL_FROM_PB: dict[int, str] = {int(v): k for k, v in _GOAL_TO_PB.items()}


def aggregate_to_pb(aggregate: str) -> query_pb2.Aggregate:
    """"" / "mean" / "min" / "max" as the enum; ValueError for anything else."""
    try:
        return _AGGREGATE_TO_PB[aggregate]
    except KeyError:
        raise ValueError(f"aggregate {aggregate!r} is not one of mean, min, max") from None


def aggregate_from_pb(value: int) -> str:
    """The enum as "" / "mean" / "min" / "max"; unknown numbers give "?" (rejected later)."""
    return _AGGREGATE_FROM_PB.get(value, "?")


def goal_to_pb(goal: str) -> query_pb2.MetricGoal:
    return _GOAL_TO_PB.get(goal, query_pb2.METRIC_GOAL_AUTO)


def goal_from_pb(value: int) -> str:
    return _GOAL_FROM_PB.get(value, "?")


def status_to_pb(status: str) -> events_pb2.RunStatus:
    try:
        return cast("events_pb2.RunStatus", events_pb2.RunStatus.Value(status))
    except ValueError:
        return events_pb2.RUN_STATUS_UNSPECIFIED


def status_from_pb(status: int) -> str:
    try:
        return events_pb2.RunStatus.Name(status)
    except ValueError:
        return "RUN_STATUS_UNSPECIFIED"


def param_type_to_pb(type_name: str) -> events_pb2.ParamType:
    try:
        return cast("events_pb2.ParamType", events_pb2.ParamType.Value(type_name))
    except ValueError:
        return events_pb2.PARAM_TYPE_UNSPECIFIED


def param_type_from_pb(type_value: int) -> str:
    try:
        return events_pb2.ParamType.Name(type_value)
    except ValueError:
        return "PARAM_TYPE_UNSPECIFIED"


# --- domain -> protobuf ----------------------------------------------------------------


def run_info_to_pb(info: RunInfo) -> query_pb2.RunInfo:
    return query_pb2.RunInfo(
        run_id=info.run_id,
        experiment=info.experiment,
        name=info.name,
        status=status_to_pb(info.status),
        start_ms=info.start_ms,
        end_ms=info.end_ms,
        world_size=info.world_size,
    )


def run_to_pb(run: Run) -> query_pb2.Run:
    return query_pb2.Run(
        info=run_info_to_pb(run.info),
        params=[
            events_pb2.Param(key=p.key, value=p.value, type=param_type_to_pb(p.type))
            for p in run.params
        ],
        tags=[events_pb2.Tag(key=t.key, value=t.value) for t in run.tags],
        artifacts=[
            events_pb2.Artifact(name=a.name, uri=a.uri, size_bytes=a.size_bytes, sha256=a.sha256)
            for a in run.artifacts
        ],
        inputs=[
            events_pb2.Input(name=i.name, uri=i.uri, digest=i.digest, role=i.role)
            for i in run.inputs
        ],
        metrics=[
            summary_to_pb(m)
            for m in run.metrics
        ],
        ranks=[
            query_pb2.RankInfo(
                rank=r.rank,
                local_rank=r.local_rank,
                node=r.node,
                status=status_to_pb(r.status),
                start_ms=r.start_ms,
                end_ms=r.end_ms,
                error=r.error,
            )
            for r in run.ranks
        ],
        code=code_to_pb(run.code),
        env=env_to_pb(run.env),
    )


def code_to_pb(code: CodeVersion) -> events_pb2.CodeVersion:
    return events_pb2.CodeVersion(
        git_commit=code.git_commit,
        git_branch=code.git_branch,
        git_remote=code.git_remote,
        git_dirty=code.git_dirty,
        in_git_repo=code.in_git_repo,
        diff_sha256=code.diff_sha256,
        diff_uri=code.diff_uri,
    )


def env_to_pb(env: Environment) -> events_pb2.Environment:
    return events_pb2.Environment(
        python_version=env.python_version,
        os=env.os,
        command=env.command,
        cpu_count=env.cpu_count,
        cpu_model=env.cpu_model,
        memory_bytes=env.memory_bytes,
        packages=[events_pb2.Package(name=p.name, version=p.version) for p in env.packages],
        gpus=[events_pb2.Gpu(name=g.name, memory_bytes=g.memory_bytes) for g in env.gpus],
        gpu_driver=env.gpu_driver,
        cuda_version=env.cuda_version,
    )


def summary_to_pb(m: MetricSummary) -> query_pb2.MetricSummary:
    return query_pb2.MetricSummary(
        key=m.key, last=m.last, last_step=m.last_step, min=m.min, max=m.max
    )


def comparison_to_pb(c: Comparison) -> query_pb2.CompareRunsResponse:
    return query_pb2.CompareRunsResponse(
        runs=[run_info_to_pb(r) for r in c.runs],
        fields=[
            query_pb2.ComparedField(section=f.section, key=f.key, values=f.values,
                                    differs=f.differs)
            for f in c.fields
        ],
        metrics=[
            query_pb2.ComparedMetric(
                key=m.key,
                goal=goal_to_pb(m.goal),
                stats=[
                    query_pb2.MetricStats(
                        present=s.present, last=s.last, last_step=s.last_step, min=s.min,
                        max=s.max, best=s.best, best_step=s.best_step,
                    )
                    for s in m.stats
                ],
                best_run=m.best_run,
                differs=m.differs,
            )
            for m in c.metrics
        ],
    )


def follow_update_to_pb(update: FollowUpdate) -> query_pb2.FollowRunResponse:
    if isinstance(update, StatusUpdate):
        return query_pb2.FollowRunResponse(
            status=query_pb2.StatusUpdate(rank=update.rank, status=status_to_pb(update.status),
                                          error=update.error, ts_ms=update.ts_ms),
            live=update.live,
        )
    return query_pb2.FollowRunResponse(
        points=query_pb2.PointsUpdate(
            keys=update.keys, key_index=update.key_index, ranks=update.ranks,
            steps=update.steps, values=update.values, ts_ms=update.ts_ms,
        ),
        live=update.live,
    )


def experiment_to_pb(e: ExperimentInfo) -> query_pb2.ExperimentInfo:
    return query_pb2.ExperimentInfo(experiment=e.experiment, run_count=e.run_count,
                                    last_start_ms=e.last_start_ms)


def ingest_to_pb(p: IngestPartition) -> query_pb2.IngestPartition:
    return query_pb2.IngestPartition(
        consumer_id=p.consumer_id, source=p.source, topic=p.topic, partition=p.partition,
        committed_offset=p.committed_offset, end_offset=p.end_offset, lag=p.lag,
        points_total=p.points_total, points_per_s=p.points_per_s,
        batch_latency_ms=p.batch_latency_ms, ts_ms=p.ts_ms,
    )


def history_to_pb(history: MetricHistory) -> query_pb2.GetMetricHistoryResponse:
    return query_pb2.GetMetricHistoryResponse(
        ranks=history.ranks,
        steps=history.steps,
        values=history.values,
        ts_ms=history.ts_ms,
        next_page_token=history.next_page_token,
        downsampled=history.downsampled,
        min_values=history.min_values,
        max_values=history.max_values,
        bucket_counts=history.bucket_counts,
        total_points=history.total_points,
    )


# --- protobuf -> domain ----------------------------------------------------------------


def run_info_from_pb(msg: query_pb2.RunInfo) -> RunInfo:
    return RunInfo(
        run_id=msg.run_id,
        experiment=msg.experiment,
        name=msg.name,
        status=status_from_pb(msg.status),
        start_ms=msg.start_ms,
        end_ms=msg.end_ms,
        world_size=msg.world_size,
    )


def run_from_pb(msg: query_pb2.Run) -> Run:
    return Run(
        info=run_info_from_pb(msg.info),
        params=tuple(
            Param(key=p.key, value=p.value, type=param_type_from_pb(p.type)) for p in msg.params
        ),
        tags=tuple(Tag(key=t.key, value=t.value) for t in msg.tags),
        artifacts=tuple(
            Artifact(name=a.name, uri=a.uri, size_bytes=a.size_bytes, sha256=a.sha256)
            for a in msg.artifacts
        ),
        inputs=tuple(
            Input(name=i.name, uri=i.uri, digest=i.digest, role=i.role) for i in msg.inputs
        ),
        metrics=tuple(
            MetricSummary(key=m.key, last=m.last, last_step=m.last_step, min=m.min, max=m.max)
            for m in msg.metrics
        ),
        ranks=tuple(
            RankInfo(
                rank=r.rank,
                local_rank=r.local_rank,
                node=r.node,
                status=status_from_pb(r.status),
                start_ms=r.start_ms,
                end_ms=r.end_ms,
                error=r.error,
            )
            for r in msg.ranks
        ),
        code=CodeVersion(
            git_commit=msg.code.git_commit,
            git_branch=msg.code.git_branch,
            git_remote=msg.code.git_remote,
            git_dirty=msg.code.git_dirty,
            in_git_repo=msg.code.in_git_repo,
            diff_sha256=msg.code.diff_sha256,
            diff_uri=msg.code.diff_uri,
        ),
        env=Environment(
            python_version=msg.env.python_version,
            os=msg.env.os,
            command=msg.env.command,
            cpu_count=msg.env.cpu_count,
            cpu_model=msg.env.cpu_model,
            memory_bytes=msg.env.memory_bytes,
            packages=tuple(Package(name=p.name, version=p.version) for p in msg.env.packages),
            gpus=tuple(Gpu(name=g.name, memory_bytes=g.memory_bytes) for g in msg.env.gpus),
            gpu_driver=msg.env.gpu_driver,
            cuda_version=msg.env.cuda_version,
        ),
    )


def summary_from_pb(m: query_pb2.MetricSummary) -> MetricSummary:
    return MetricSummary(key=m.key, last=m.last, last_step=m.last_step, min=m.min, max=m.max)


def comparison_from_pb(msg: query_pb2.CompareRunsResponse) -> Comparison:
    return Comparison(
        runs=tuple(run_info_from_pb(r) for r in msg.runs),
        fields=tuple(
            ComparedField(section=f.section, key=f.key, values=tuple(f.values),
                          differs=f.differs)
            for f in msg.fields
        ),
        metrics=tuple(
            ComparedMetric(
                key=m.key,
                goal=goal_from_pb(m.goal),
                stats=tuple(
                    MetricStats(present=s.present, last=s.last, last_step=s.last_step,
                                min=s.min, max=s.max, best=s.best, best_step=s.best_step)
                    for s in m.stats
                ),
                best_run=m.best_run,
                differs=m.differs,
            )
            for m in msg.metrics
        ),
    )


def follow_update_from_pb(msg: query_pb2.FollowRunResponse) -> FollowUpdate:
    if msg.HasField("status"):
        st = msg.status
        return StatusUpdate(rank=st.rank, status=status_from_pb(st.status), error=st.error,
                            ts_ms=st.ts_ms, live=msg.live)
    p = msg.points
    return PointsUpdate(keys=tuple(p.keys), key_index=list(p.key_index), ranks=list(p.ranks),
                        steps=list(p.steps), values=list(p.values), ts_ms=list(p.ts_ms),
                        live=msg.live)


def experiment_from_pb(e: query_pb2.ExperimentInfo) -> ExperimentInfo:
    return ExperimentInfo(experiment=e.experiment, run_count=e.run_count,
                          last_start_ms=e.last_start_ms)


def ingest_from_pb(p: query_pb2.IngestPartition) -> IngestPartition:
    return IngestPartition(
        consumer_id=p.consumer_id, source=p.source, topic=p.topic, partition=p.partition,
        committed_offset=p.committed_offset, end_offset=p.end_offset, lag=p.lag,
        points_total=p.points_total, points_per_s=p.points_per_s,
        batch_latency_ms=p.batch_latency_ms, ts_ms=p.ts_ms,
    )
