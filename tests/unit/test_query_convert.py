"""runstream.query.convert: every domain dataclass matches its message field for field, and
every one round-trips through protobuf unchanged (pure, no gRPC)."""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import typing
from typing import Any

import pytest

from runstream.proto.v1 import events_pb2, query_pb2
from runstream.query import convert, models
from runstream.query.models import MetricHistory, PointsUpdate, RankInfo, StatusUpdate

# Values the enums accept, for fields that hold an enum name.
ENUM_VALUES = {"status": "FINISHED", "type": "FLOAT", "goal": "maximize"}


def populated(cls: type, seed: int = 1) -> Any:
    """An instance of ``cls`` with every field set to a value that is not its default."""
    values: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        values[name] = _value(name, hint, seed)
    return cls(**values)


def _value(name: str, hint: Any, seed: int) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if name in ENUM_VALUES:
        return ENUM_VALUES[name]
    if type(None) in args:  # X | None: an X
        return _value(name, next(a for a in args if a is not type(None)), seed)
    if origin is collections.abc.Mapping:  # RunPage.columns: prefixed names as the wire keeps them
        return {"metrics.m": 0.5 + seed, "params.p": f"v{seed}", "tags.t": f"t{seed}"}
    if origin is tuple:
        return tuple(_value(name, args[0], seed + i) for i in range(2))
    if origin is list:
        return [_value(name, args[0], seed + i) for i in range(3)]
    if dataclasses.is_dataclass(hint):
        return populated(hint, seed)
    return {bool: True, int: 40 + seed, float: 0.5 + seed, str: f"{name}-{seed}"}[hint]


def test_every_domain_dataclass_has_its_message() -> None:
    paired = {cls for cls, _ in convert.PAIRS}
    defined = {obj for _, obj in inspect.getmembers(models, dataclasses.is_dataclass)
               if obj.__module__ == models.__name__}
    assert defined == paired


@pytest.mark.parametrize(("cls", "message"), convert.PAIRS, ids=lambda x: x.__name__)
def test_every_field_exists_on_its_message_and_back(cls: type, message: Any) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    off_wire = convert.NOT_ON_THE_WIRE.get(cls, frozenset())
    assert off_wire <= fields
    assert fields - off_wire == {f.name for f in message.DESCRIPTOR.fields}


@pytest.mark.parametrize(("cls", "message"), convert.PAIRS, ids=lambda x: x.__name__)
def test_every_object_round_trips(cls: type, message: Any) -> None:
    obj = populated(cls)
    given = {name: getattr(obj, name) for name in convert.NOT_ON_THE_WIRE.get(cls, ())}
    pb = convert.to_pb(obj, message)
    assert isinstance(pb, message)
    assert convert.from_pb(pb, cls, **given) == obj


def test_enums_travel_as_names_and_unknown_ones_as_unspecified() -> None:
    rank = RankInfo(rank=1, local_rank=0, node="n", status="CRASHED", start_ms=1, end_ms=2,
                    error="")
    pb = convert.to_pb(rank, query_pb2.RankInfo)
    assert pb.status == events_pb2.CRASHED
    assert convert.to_pb(dataclasses.replace(rank, status="NOPE"),
                         query_pb2.RankInfo).status == events_pb2.RUN_STATUS_UNSPECIFIED
    pb.status = 77  # a status newer than this client
    assert convert.from_pb(pb, RankInfo).status == "RUN_STATUS_UNSPECIFIED"
    param = convert.from_pb(events_pb2.Param(key="k", value="v", type=events_pb2.BOOL),
                            models.Param)
    assert param.type == "BOOL"
    assert convert.goal_from_pb(9) == "?" and convert.aggregate_from_pb(9) == "?"
    with pytest.raises(ValueError, match="aggregate"):
        convert.aggregate_to_pb("median")


def test_follow_updates_carry_live_on_the_envelope() -> None:
    points = populated(PointsUpdate)
    status = dataclasses.replace(populated(StatusUpdate), live=False)
    for update in (points, status):
        message = convert.follow_update_to_pb(update)
        assert message.live is update.live
        assert convert.follow_update_from_pb(message) == update


def test_an_optional_nested_object_travels_unset_as_none() -> None:
    match = models.LineageMatch(run_id="r", name="model.npz", rank=0, uri="file:///x")
    pb = convert.to_pb(match, query_pb2.LineageMatch)
    assert not pb.HasField("run")
    assert convert.from_pb(pb, models.LineageMatch) == match
    with_run = dataclasses.replace(match, run=populated(models.Run))
    assert convert.from_pb(convert.to_pb(with_run, query_pb2.LineageMatch),
                           models.LineageMatch) == with_run


def test_views_travel_by_name() -> None:
    assert [convert.view_to_pb(v) for v in convert.VIEWS] == [
        query_pb2.ACTIVE_ONLY, query_pb2.ARCHIVED_ONLY, query_pb2.ALL]
    assert convert.view_from_pb(query_pb2.ALL) == "ALL" and convert.view_from_pb(9) == "?"
    with pytest.raises(ValueError, match="view"):
        convert.view_to_pb("archived")


def test_history_pages_keep_their_point_lists_as_lists() -> None:
    history = MetricHistory(run_id="r", key="loss", ranks=[0, 1], steps=[5, 5],
                            values=[0.5, 0.25], ts_ms=[1, 2], next_page_token="t")
    back = convert.history_from_pb(convert.to_pb(history, query_pb2.GetMetricHistoryResponse),
                                   run_id="r", key="loss", aggregate="")
    assert back == history and type(back.steps) is list
