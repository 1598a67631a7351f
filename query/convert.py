"""Conversions between domain objects (:mod:`runstream.query.models`) and protobuf messages.

Pure functions used by the servicer (domain → protobuf) and by the client (protobuf →
domain); they need protobuf only, never grpcio or ClickHouse. Unknown status or param
type names map to the enums' UNSPECIFIED value.
"""

from __future__ import annotations

from typing import cast

from runstream.proto.v1 import events_pb2, query_pb2
from runstream.query.models import (
    Artifact,
    CodeVersion,
    Environment,
    Input,
    MetricHistory,
    MetricSummary,
    Param,
    RankInfo,
    Run,
    RunInfo,
    Tag,
)


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
            query_pb2.MetricSummary(
                key=m.key, last=m.last, last_step=m.last_step, min=m.min, max=m.max
            )
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
        code=events_pb2.CodeVersion(
            git_commit=run.code.git_commit,
            git_branch=run.code.git_branch,
            git_remote=run.code.git_remote,
            git_dirty=run.code.git_dirty,
            in_git_repo=run.code.in_git_repo,
        ),
        env=events_pb2.Environment(
            python_version=run.env.python_version,
            os=run.env.os,
            command=run.env.command,
            cpu_count=run.env.cpu_count,
        ),
    )


def history_to_pb(history: MetricHistory) -> query_pb2.GetMetricHistoryResponse:
    return query_pb2.GetMetricHistoryResponse(
        ranks=history.ranks,
        steps=history.steps,
        values=history.values,
        ts_ms=history.ts_ms,
        next_page_token=history.next_page_token,
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
        ),
        env=Environment(
            python_version=msg.env.python_version,
            os=msg.env.os,
            command=msg.env.command,
            cpu_count=msg.env.cpu_count,
        ),
    )
