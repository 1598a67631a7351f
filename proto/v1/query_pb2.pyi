from runstream.proto.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RankInfo(_message.Message):
    __slots__ = ("rank", "local_rank", "node", "status", "start_ms", "end_ms", "error")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    rank: int
    local_rank: int
    node: str
    status: _events_pb2.RunStatus
    start_ms: int
    end_ms: int
    error: str
    def __init__(self, rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., node: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class MetricSummary(_message.Message):
    __slots__ = ("key", "last", "last_step", "min", "max")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    key: str
    last: float
    last_step: int
    min: float
    max: float
    def __init__(self, key: _Optional[str] = ..., last: _Optional[float] = ..., last_step: _Optional[int] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "experiment", "name", "status", "start_ms", "end_ms", "world_size")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    experiment: str
    name: str
    status: _events_pb2.RunStatus
    start_ms: int
    end_ms: int
    world_size: int
    def __init__(self, run_id: _Optional[str] = ..., experiment: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., world_size: _Optional[int] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("info", "params", "tags", "artifacts", "inputs", "metrics", "ranks", "code", "env")
    INFO_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    info: RunInfo
    params: _containers.RepeatedCompositeFieldContainer[_events_pb2.Param]
    tags: _containers.RepeatedCompositeFieldContainer[_events_pb2.Tag]
    artifacts: _containers.RepeatedCompositeFieldContainer[_events_pb2.Artifact]
    inputs: _containers.RepeatedCompositeFieldContainer[_events_pb2.Input]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    ranks: _containers.RepeatedCompositeFieldContainer[RankInfo]
    code: _events_pb2.CodeVersion
    env: _events_pb2.Environment
    def __init__(self, info: _Optional[_Union[RunInfo, _Mapping]] = ..., params: _Optional[_Iterable[_Union[_events_pb2.Param, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[_events_pb2.Tag, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[_events_pb2.Artifact, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[_events_pb2.Input, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ..., ranks: _Optional[_Iterable[_Union[RankInfo, _Mapping]]] = ..., code: _Optional[_Union[_events_pb2.CodeVersion, _Mapping]] = ..., env: _Optional[_Union[_events_pb2.Environment, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class SearchRunsRequest(_message.Message):
    __slots__ = ("experiment", "page_size", "page_token")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    page_size: int
    page_token: str
    def __init__(self, experiment: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetMetricHistoryRequest(_message.Message):
    __slots__ = ("run_id", "key", "ranks", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetMetricHistoryResponse(_message.Message):
    __slots__ = ("ranks", "steps", "values", "ts_ms", "next_page_token")
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    next_page_token: str
    def __init__(self, ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., ts_ms: _Optional[_Iterable[int]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
