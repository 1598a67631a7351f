"""Domain objects (:mod:`runstream.query.models`) to protobuf messages and back, by field name.

One mechanism for every object: a dataclass field and the message field of the same name
hold the same thing, so :func:`to_pb` and :func:`from_pb` walk the message descriptor and
the dataclass' type hints, the way :mod:`runstream.proto.codec` walks the descriptors for
Avro. Nested messages become nested dataclasses, repeated fields tuples or lists (as the
dataclass declares them), enums names:

* ``RunStatus`` and ``ParamType`` by their value names ("RUNNING", "FLOAT"); unknown
  names and numbers become the enum's UNSPECIFIED;
* ``MetricGoal`` as "" (auto), "minimize", "maximize"; ``Aggregate`` as "", "mean",
  "min", "max" (the request-side helpers below say what happens to unknown values).

:data:`PAIRS` lists every dataclass with its message; the few fields a message does not
carry (:data:`NOT_ON_THE_WIRE`: what the caller already knows from its request, or what
travels on the enclosing message) are passed to :func:`from_pb` by the caller. A test
holds both lists to the descriptors, so adding a field takes the proto and the dataclass,
nothing here. Pure functions (protobuf only, never grpcio or ClickHouse); thread-safe.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runstream.proto.v1 import events_pb2, query_pb2
from runstream.query.models import (
    MAXIMIZE,
    MINIMIZE,
    Artifact,
    Attempt,
    Change,
    CodeVersion,
    ComparedField,
    ComparedMetric,
    Comparison,
    Drop,
    Environment,
    ExperimentInfo,
    FirstNonFinite,
    FollowUpdate,
    Gpu,
    IngestPartition,
    Input,
    Lineage,
    LineageMatch,
    MetricHistory,
    MetricStats,
    MetricSummary,
    Note,
    Package,
    Param,
    ParamConflict,
    PointsUpdate,
    RankDeparture,
    RankEnvelope,
    RankHealth,
    RankHealthReport,
    RankInfo,
    RankLag,
    RankNonFinite,
    Run,
    RunInfo,
    RunKeys,
    RunPage,
    StatusUpdate,
    Tag,
)

D = TypeVar("D")
M = TypeVar("M", bound=Message)

#: Every domain dataclass and the message it travels as.
PAIRS: tuple[tuple[type, type[Message]], ...] = (
    (RunInfo, query_pb2.RunInfo),
    (RankInfo, query_pb2.RankInfo),
    (Drop, events_pb2.Drop),
    (ParamConflict, query_pb2.ParamConflict),
    (MetricSummary, query_pb2.MetricSummary),
    (Param, events_pb2.Param),
    (Tag, events_pb2.Tag),
    (Artifact, events_pb2.Artifact),
    (Input, events_pb2.Input),
    (CodeVersion, events_pb2.CodeVersion),
    (Package, events_pb2.Package),
    (Gpu, events_pb2.Gpu),
    (Environment, events_pb2.Environment),
    (Run, query_pb2.Run),
    (RunPage, query_pb2.SearchRunsResponse),
    (MetricHistory, query_pb2.GetMetricHistoryResponse),
    (ComparedField, query_pb2.ComparedField),
    (MetricStats, query_pb2.MetricStats),
    (ComparedMetric, query_pb2.ComparedMetric),
    (Comparison, query_pb2.CompareRunsResponse),
    (PointsUpdate, query_pb2.PointsUpdate),
    (StatusUpdate, query_pb2.StatusUpdate),
    (ExperimentInfo, query_pb2.ExperimentInfo),
    (IngestPartition, query_pb2.IngestPartition),
    (FirstNonFinite, query_pb2.FirstNonFinite),
    (RankHealth, query_pb2.RankHealth),
    (RankHealthReport, query_pb2.GetRankHealthResponse),
    (Attempt, query_pb2.Attempt),
    (Note, query_pb2.Note),
    (Change, query_pb2.Change),
    (LineageMatch, query_pb2.LineageMatch),
    (Lineage, query_pb2.GetLineageResponse),
    (RankDeparture, query_pb2.RankDeparture),
    (RankNonFinite, query_pb2.RankNonFinite),
    (RankEnvelope, query_pb2.GetRankEnvelopeResponse),
    (RankLag, query_pb2.GetRankLagResponse),
    (RunKeys, query_pb2.ListRunKeysResponse),
)

#: Dataclass fields their message does not carry: a history answers a request that named
#: its run, key and aggregate; a follow update's ``live`` is on FollowRunResponse.
NOT_ON_THE_WIRE: dict[type, frozenset[str]] = {
    MetricHistory: frozenset({"run_id", "key", "aggregate"}),
    PointsUpdate: frozenset({"live"}),
    StatusUpdate: frozenset({"live"}),
}

# --- enums -------------------------------------------------------------------------------

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
    """"" / "minimize" / "maximize" as the enum; anything else is AUTO."""
    return _GOAL_TO_PB.get(goal, query_pb2.METRIC_GOAL_AUTO)


def goal_from_pb(value: int) -> str:
    """The enum as "" / "minimize" / "maximize"; unknown numbers give "?" (rejected later)."""
    return _GOAL_FROM_PB.get(value, "?")


#: SearchRunsRequest.view by name.
VIEWS = tuple(v.name for v in query_pb2.RunView.DESCRIPTOR.values)


def view_to_pb(view: str) -> query_pb2.RunView:
    """"ACTIVE_ONLY" / "ARCHIVED_ONLY" / "ALL" as the enum; ValueError for anything else."""
    if view not in VIEWS:
        raise ValueError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    return cast(query_pb2.RunView, query_pb2.RunView.Value(view))


def view_from_pb(value: int) -> str:
    """The enum as its name; unknown numbers give "?" (rejected later)."""
    return next((v.name for v in query_pb2.RunView.DESCRIPTOR.values if v.number == value),
                "?")


def _by_value_name(enum: Any) -> tuple[Callable[[str], int], Callable[[int], str]]:
    """(name -> number, number -> name) of an enum whose domain form is its value names;
    unknown ones map to its value 0 (``*_UNSPECIFIED``)."""
    names = {v.name: v.number for v in enum.DESCRIPTOR.values}
    numbers = {v.number: v.name for v in enum.DESCRIPTOR.values}
    unspecified = numbers[0]
    return (lambda name: names.get(name, 0)), (lambda number: numbers.get(number, unspecified))


#: enum full name -> (domain -> number, number -> domain).
_ENUMS: dict[str, tuple[Callable[[Any], int], Callable[[int], Any]]] = {
    "runstream.v1.RunStatus": _by_value_name(events_pb2.RunStatus),
    "runstream.v1.ParamType": _by_value_name(events_pb2.ParamType),
    "runstream.v1.MetricGoal": (goal_to_pb, goal_from_pb),
    "runstream.v1.Aggregate": (aggregate_to_pb, aggregate_from_pb),
}

# --- messages whose domain form is no dataclass ---------------------------------------------

#: A run's SearchRuns columns: one mapping, "params.X" / "tags.X" -> str, "metrics.X" ->
#: float, on the wire as three maps keyed without the prefix.
_COLUMN_KINDS = ("params", "metrics", "tags")


def columns_to_pb(columns: Any) -> query_pb2.RunColumns:
    """A run's column mapping as RunColumns (a name without a known prefix is skipped)."""
    out = query_pb2.RunColumns()
    for name, value in columns.items():
        kind, _, key = name.partition(".")
        if kind == "metrics":
            out.metrics[key] = float(value)
        elif kind in ("params", "tags"):
            getattr(out, kind)[key] = str(value)
    return out


def columns_from_pb(message: Any) -> dict[str, str | float]:
    """RunColumns as one mapping keyed by prefixed name, params, metrics, tags, each sorted."""
    out: dict[str, str | float] = {}
    for kind in _COLUMN_KINDS:
        values = getattr(message, kind)
        for key in sorted(values):
            out[f"{kind}.{key}"] = values[key]
    return out


#: message full name -> (domain -> message, message -> domain), for repeated fields whose
#: items are a mapping (RunColumns) or a list of floats (a row of the lag matrix).
_CUSTOM: dict[str, tuple[Callable[[Any], Message], Callable[[Any], Any]]] = {
    "runstream.v1.RunColumns": (columns_to_pb, columns_from_pb),
    "runstream.v1.RankLagRow": (lambda row: query_pb2.RankLagRow(lag_ms=row),
                                lambda m: m.lag_ms[:]),
}

# --- the mechanism ------------------------------------------------------------------------


@cache
def _message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(hint: Any) -> Any:
    """``X`` of a hint ``X | None``; None for any other hint."""
    args = typing.get_args(hint)
    if len(args) == 2 and type(None) in args and typing.get_origin(hint) in (
            typing.Union, types.UnionType):
        return next(a for a in args if a is not type(None))
    return None


def to_pb(obj: Any, message_cls: type[M]) -> M:
    """The message ``message_cls`` with every field taken from ``obj``'s attribute of the
    same name (nested dataclasses and sequences of them converted too; an optional
    nested object that is None leaves its field unset)."""
    values = {}
    field: Any
    for field in message_cls.DESCRIPTOR.fields:
        value = getattr(obj, field.name)
        if value is None:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            nested = _message_class(field.message_type)
            custom = _CUSTOM.get(field.message_type.full_name)
            if custom is not None:
                value = [custom[0](item) for item in value]
            elif field.is_repeated:
                value = [to_pb(item, nested) for item in value]
            else:
                value = to_pb(value, nested)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = _ENUMS[field.enum_type.full_name][0](value)
        values[field.name] = value
    return message_cls(**values)


def from_pb(message: Message, cls: type[D], **given: Any) -> D:
    """The dataclass ``cls`` with every field read from ``message``'s field of the same
    name, except those in ``given`` (see :data:`NOT_ON_THE_WIRE`), taken as they are."""
    fields_by_name: Any = message.DESCRIPTOR.fields_by_name
    hints = _hints(cast(Any, cls))
    values = dict(given)
    for f in dataclasses.fields(cast(Any, cls)):
        if f.name in given:
            continue
        field = fields_by_name[f.name]
        value = getattr(message, f.name)
        hint = hints[f.name]
        custom = (_CUSTOM.get(field.message_type.full_name)
                  if field.type == FieldDescriptor.TYPE_MESSAGE else None)
        if custom is not None:
            items = [custom[1](item) for item in value]
            value = items if typing.get_origin(hint) is list else tuple(items)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.is_repeated:
                item_cls = typing.get_args(hint)[0]
                value = tuple(from_pb(item, item_cls) for item in value)
            elif (inner := _optional(hint)) is not None:
                value = from_pb(value, inner) if message.HasField(f.name) else None
            else:
                value = from_pb(value, hint)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            value = _ENUMS[field.enum_type.full_name][1](value)
        elif field.is_repeated:
            # A slice copies a repeated scalar field out in one C loop (a million points).
            value = value[:] if typing.get_origin(hint) is list else tuple(value)
        values[f.name] = value
    return cls(**values)


# --- the two with an envelope ---------------------------------------------------------------


def follow_update_to_pb(update: FollowUpdate) -> query_pb2.FollowRunResponse:
    if isinstance(update, StatusUpdate):
        return query_pb2.FollowRunResponse(status=to_pb(update, query_pb2.StatusUpdate),
                                           live=update.live)
    return query_pb2.FollowRunResponse(points=to_pb(update, query_pb2.PointsUpdate),
                                       live=update.live)


def follow_update_from_pb(message: query_pb2.FollowRunResponse) -> FollowUpdate:
    if message.HasField("status"):
        return from_pb(message.status, StatusUpdate, live=message.live)
    return from_pb(message.points, PointsUpdate, live=message.live)


def history_from_pb(message: query_pb2.GetMetricHistoryResponse, *, run_id: str, key: str,
                    aggregate: str) -> MetricHistory:
    """A history page; its run, key and aggregate are the request's."""
    return from_pb(message, MetricHistory, run_id=run_id, key=key, aggregate=aggregate)
