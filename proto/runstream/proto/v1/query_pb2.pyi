from runstream.proto.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVE_ONLY: _ClassVar[RunView]
    ARCHIVED_ONLY: _ClassVar[RunView]
    ALL: _ClassVar[RunView]

class Aggregate(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATE_NONE: _ClassVar[Aggregate]
    AGGREGATE_MEAN: _ClassVar[Aggregate]
    AGGREGATE_MIN: _ClassVar[Aggregate]
    AGGREGATE_MAX: _ClassVar[Aggregate]

class MetricGoal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_GOAL_AUTO: _ClassVar[MetricGoal]
    METRIC_GOAL_MINIMIZE: _ClassVar[MetricGoal]
    METRIC_GOAL_MAXIMIZE: _ClassVar[MetricGoal]
ACTIVE_ONLY: RunView
ARCHIVED_ONLY: RunView
ALL: RunView
AGGREGATE_NONE: Aggregate
AGGREGATE_MEAN: Aggregate
AGGREGATE_MIN: Aggregate
AGGREGATE_MAX: Aggregate
METRIC_GOAL_AUTO: MetricGoal
METRIC_GOAL_MINIMIZE: MetricGoal
METRIC_GOAL_MAXIMIZE: MetricGoal

class RankInfo(_message.Message):
    __slots__ = ("rank", "local_rank", "node", "status", "start_ms", "end_ms", "error", "points_logged", "points_stored", "dropped", "producers_finished", "attempt")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POINTS_LOGGED_FIELD_NUMBER: _ClassVar[int]
    POINTS_STORED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    PRODUCERS_FINISHED_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    rank: int
    local_rank: int
    node: str
    status: _events_pb2.RunStatus
    start_ms: int
    end_ms: int
    error: str
    points_logged: int
    points_stored: int
    dropped: _containers.RepeatedCompositeFieldContainer[_events_pb2.Drop]
    producers_finished: int
    attempt: int
    def __init__(self, rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., node: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., error: _Optional[str] = ..., points_logged: _Optional[int] = ..., points_stored: _Optional[int] = ..., dropped: _Optional[_Iterable[_Union[_events_pb2.Drop, _Mapping]]] = ..., producers_finished: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("attempt", "restart", "resume", "world_size", "ranks", "status", "start_ms", "end_ms", "error")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    restart: int
    resume: bool
    world_size: int
    ranks: _containers.RepeatedScalarFieldContainer[int]
    status: _events_pb2.RunStatus
    start_ms: int
    end_ms: int
    error: str
    def __init__(self, attempt: _Optional[int] = ..., restart: _Optional[int] = ..., resume: _Optional[bool] = ..., world_size: _Optional[int] = ..., ranks: _Optional[_Iterable[int]] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class Note(_message.Message):
    __slots__ = ("text", "user", "host", "ts_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    user: str
    host: str
    ts_ms: int
    def __init__(self, text: _Optional[str] = ..., user: _Optional[str] = ..., host: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("ts_ms", "user", "host", "what")
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    ts_ms: int
    user: str
    host: str
    what: str
    def __init__(self, ts_ms: _Optional[int] = ..., user: _Optional[str] = ..., host: _Optional[str] = ..., what: _Optional[str] = ...) -> None: ...

class ParamConflict(_message.Message):
    __slots__ = ("key", "rank", "value", "type", "producer_id", "ts_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    rank: int
    value: str
    type: _events_pb2.ParamType
    producer_id: str
    ts_ms: int
    def __init__(self, key: _Optional[str] = ..., rank: _Optional[int] = ..., value: _Optional[str] = ..., type: _Optional[_Union[_events_pb2.ParamType, str]] = ..., producer_id: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("run_id", "experiment", "name", "status", "start_ms", "end_ms", "world_size", "archived", "fork_run_id", "fork_step", "attempts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    FORK_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FORK_STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    experiment: str
    name: str
    status: _events_pb2.RunStatus
    start_ms: int
    end_ms: int
    world_size: int
    archived: bool
    fork_run_id: str
    fork_step: int
    attempts: int
    def __init__(self, run_id: _Optional[str] = ..., experiment: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., world_size: _Optional[int] = ..., archived: _Optional[bool] = ..., fork_run_id: _Optional[str] = ..., fork_step: _Optional[int] = ..., attempts: _Optional[int] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("info", "params", "tags", "artifacts", "inputs", "metrics", "ranks", "code", "env", "param_conflicts", "attempts", "notes", "changes")
    INFO_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    PARAM_CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    info: RunInfo
    params: _containers.RepeatedCompositeFieldContainer[_events_pb2.Param]
    tags: _containers.RepeatedCompositeFieldContainer[_events_pb2.Tag]
    artifacts: _containers.RepeatedCompositeFieldContainer[_events_pb2.Artifact]
    inputs: _containers.RepeatedCompositeFieldContainer[_events_pb2.Input]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    ranks: _containers.RepeatedCompositeFieldContainer[RankInfo]
    code: _events_pb2.CodeVersion
    env: _events_pb2.Environment
    param_conflicts: _containers.RepeatedCompositeFieldContainer[ParamConflict]
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    notes: _containers.RepeatedCompositeFieldContainer[Note]
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, info: _Optional[_Union[RunInfo, _Mapping]] = ..., params: _Optional[_Iterable[_Union[_events_pb2.Param, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[_events_pb2.Tag, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[_events_pb2.Artifact, _Mapping]]] = ..., inputs: _Optional[_Iterable[_Union[_events_pb2.Input, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ..., ranks: _Optional[_Iterable[_Union[RankInfo, _Mapping]]] = ..., code: _Optional[_Union[_events_pb2.CodeVersion, _Mapping]] = ..., env: _Optional[_Union[_events_pb2.Environment, _Mapping]] = ..., param_conflicts: _Optional[_Iterable[_Union[ParamConflict, _Mapping]]] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., notes: _Optional[_Iterable[_Union[Note, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id", "all_attempts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    all_attempts: bool
    def __init__(self, run_id: _Optional[str] = ..., all_attempts: _Optional[bool] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class SearchRunsRequest(_message.Message):
    __slots__ = ("experiment", "page_size", "page_token", "filter", "order_by", "experiments", "view", "columns")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    page_size: int
    page_token: str
    filter: str
    order_by: _containers.RepeatedScalarFieldContainer[str]
    experiments: _containers.RepeatedScalarFieldContainer[str]
    view: RunView
    columns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[_Iterable[str]] = ..., experiments: _Optional[_Iterable[str]] = ..., view: _Optional[_Union[RunView, str]] = ..., columns: _Optional[_Iterable[str]] = ...) -> None: ...

class RunColumns(_message.Message):
    __slots__ = ("params", "metrics", "tags")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.ScalarMap[str, str]
    metrics: _containers.ScalarMap[str, float]
    tags: _containers.ScalarMap[str, str]
    def __init__(self, params: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SearchRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token", "columns")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    next_page_token: str
    columns: _containers.RepeatedCompositeFieldContainer[RunColumns]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., columns: _Optional[_Iterable[_Union[RunColumns, _Mapping]]] = ...) -> None: ...

class GetMetricHistoryRequest(_message.Message):
    __slots__ = ("run_id", "key", "ranks", "page_size", "page_token", "max_points", "aggregate", "own_points_only", "start_step", "end_step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    OWN_POINTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    END_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    page_size: int
    page_token: str
    max_points: int
    aggregate: Aggregate
    own_points_only: bool
    start_step: int
    end_step: int
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., max_points: _Optional[int] = ..., aggregate: _Optional[_Union[Aggregate, str]] = ..., own_points_only: _Optional[bool] = ..., start_step: _Optional[int] = ..., end_step: _Optional[int] = ...) -> None: ...

class GetMetricHistoryResponse(_message.Message):
    __slots__ = ("ranks", "steps", "values", "ts_ms", "next_page_token", "downsampled", "min_values", "max_values", "bucket_counts", "total_points")
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLED_FIELD_NUMBER: _ClassVar[int]
    MIN_VALUES_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUES_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_POINTS_FIELD_NUMBER: _ClassVar[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    next_page_token: str
    downsampled: bool
    min_values: _containers.RepeatedScalarFieldContainer[float]
    max_values: _containers.RepeatedScalarFieldContainer[float]
    bucket_counts: _containers.RepeatedScalarFieldContainer[int]
    total_points: int
    def __init__(self, ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., ts_ms: _Optional[_Iterable[int]] = ..., next_page_token: _Optional[str] = ..., downsampled: _Optional[bool] = ..., min_values: _Optional[_Iterable[float]] = ..., max_values: _Optional[_Iterable[float]] = ..., bucket_counts: _Optional[_Iterable[int]] = ..., total_points: _Optional[int] = ...) -> None: ...

class ExportMetricHistoryRequest(_message.Message):
    __slots__ = ("run_id", "key", "ranks", "aggregate", "own_points_only")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    OWN_POINTS_ONLY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    aggregate: Aggregate
    own_points_only: bool
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., aggregate: _Optional[_Union[Aggregate, str]] = ..., own_points_only: _Optional[bool] = ...) -> None: ...

class MetricHistoryChunk(_message.Message):
    __slots__ = ("ranks", "steps", "values", "ts_ms")
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., ts_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class CompareRunsRequest(_message.Message):
    __slots__ = ("run_ids", "metric_keys", "goals")
    class GoalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricGoal
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricGoal, str]] = ...) -> None: ...
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    METRIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    GOALS_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    metric_keys: _containers.RepeatedScalarFieldContainer[str]
    goals: _containers.ScalarMap[str, MetricGoal]
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ..., metric_keys: _Optional[_Iterable[str]] = ..., goals: _Optional[_Mapping[str, MetricGoal]] = ...) -> None: ...

class ComparedField(_message.Message):
    __slots__ = ("section", "key", "values", "differs")
    SECTION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FIELD_NUMBER: _ClassVar[int]
    section: str
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    differs: bool
    def __init__(self, section: _Optional[str] = ..., key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., differs: _Optional[bool] = ...) -> None: ...

class MetricStats(_message.Message):
    __slots__ = ("present", "last", "last_step", "min", "max", "best", "best_step")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_STEP_FIELD_NUMBER: _ClassVar[int]
    present: bool
    last: float
    last_step: int
    min: float
    max: float
    best: float
    best_step: int
    def __init__(self, present: _Optional[bool] = ..., last: _Optional[float] = ..., last_step: _Optional[int] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., best: _Optional[float] = ..., best_step: _Optional[int] = ...) -> None: ...

class ComparedMetric(_message.Message):
    __slots__ = ("key", "goal", "stats", "best_run", "differs")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GOAL_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    BEST_RUN_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FIELD_NUMBER: _ClassVar[int]
    key: str
    goal: MetricGoal
    stats: _containers.RepeatedCompositeFieldContainer[MetricStats]
    best_run: int
    differs: bool
    def __init__(self, key: _Optional[str] = ..., goal: _Optional[_Union[MetricGoal, str]] = ..., stats: _Optional[_Iterable[_Union[MetricStats, _Mapping]]] = ..., best_run: _Optional[int] = ..., differs: _Optional[bool] = ...) -> None: ...

class CompareRunsResponse(_message.Message):
    __slots__ = ("runs", "fields", "metrics")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    fields: _containers.RepeatedCompositeFieldContainer[ComparedField]
    metrics: _containers.RepeatedCompositeFieldContainer[ComparedMetric]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ..., fields: _Optional[_Iterable[_Union[ComparedField, _Mapping]]] = ..., metrics: _Optional[_Iterable[_Union[ComparedMetric, _Mapping]]] = ...) -> None: ...

class FollowRunRequest(_message.Message):
    __slots__ = ("run_id", "keys", "from_step", "ranks")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    from_step: int
    ranks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, run_id: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., from_step: _Optional[int] = ..., ranks: _Optional[_Iterable[int]] = ...) -> None: ...

class PointsUpdate(_message.Message):
    __slots__ = ("keys", "key_index", "ranks", "steps", "values", "ts_ms")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    KEY_INDEX_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    key_index: _containers.RepeatedScalarFieldContainer[int]
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., key_index: _Optional[_Iterable[int]] = ..., ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., ts_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class StatusUpdate(_message.Message):
    __slots__ = ("rank", "status", "error", "ts_ms")
    RANK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    status: _events_pb2.RunStatus
    error: str
    ts_ms: int
    def __init__(self, rank: _Optional[int] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., error: _Optional[str] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class FollowRunResponse(_message.Message):
    __slots__ = ("points", "status", "live")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    points: PointsUpdate
    status: StatusUpdate
    live: bool
    def __init__(self, points: _Optional[_Union[PointsUpdate, _Mapping]] = ..., status: _Optional[_Union[StatusUpdate, _Mapping]] = ..., live: _Optional[bool] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExperimentInfo(_message.Message):
    __slots__ = ("experiment", "run_count", "last_start_ms")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_START_MS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_count: int
    last_start_ms: int
    def __init__(self, experiment: _Optional[str] = ..., run_count: _Optional[int] = ..., last_start_ms: _Optional[int] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[ExperimentInfo]
    def __init__(self, experiments: _Optional[_Iterable[_Union[ExperimentInfo, _Mapping]]] = ...) -> None: ...

class ListMetricKeysRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ListMetricKeysResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    def __init__(self, metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ...) -> None: ...

class GetIngestStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IngestPartition(_message.Message):
    __slots__ = ("consumer_id", "source", "topic", "partition", "committed_offset", "end_offset", "lag", "points_total", "points_per_s", "batch_latency_ms", "ts_ms")
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    POINTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    POINTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BATCH_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    source: str
    topic: str
    partition: int
    committed_offset: int
    end_offset: int
    lag: int
    points_total: int
    points_per_s: float
    batch_latency_ms: float
    ts_ms: int
    def __init__(self, consumer_id: _Optional[str] = ..., source: _Optional[str] = ..., topic: _Optional[str] = ..., partition: _Optional[int] = ..., committed_offset: _Optional[int] = ..., end_offset: _Optional[int] = ..., lag: _Optional[int] = ..., points_total: _Optional[int] = ..., points_per_s: _Optional[float] = ..., batch_latency_ms: _Optional[float] = ..., ts_ms: _Optional[int] = ...) -> None: ...

class GetIngestStatusResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[IngestPartition]
    def __init__(self, partitions: _Optional[_Iterable[_Union[IngestPartition, _Mapping]]] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class LineageMatch(_message.Message):
    __slots__ = ("run_id", "name", "rank", "uri", "size_bytes", "ts_ms", "run")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    name: str
    rank: int
    uri: str
    size_bytes: int
    ts_ms: int
    run: Run
    def __init__(self, run_id: _Optional[str] = ..., name: _Optional[str] = ..., rank: _Optional[int] = ..., uri: _Optional[str] = ..., size_bytes: _Optional[int] = ..., ts_ms: _Optional[int] = ..., run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("produced_by", "used_by")
    PRODUCED_BY_FIELD_NUMBER: _ClassVar[int]
    USED_BY_FIELD_NUMBER: _ClassVar[int]
    produced_by: _containers.RepeatedCompositeFieldContainer[LineageMatch]
    used_by: _containers.RepeatedCompositeFieldContainer[LineageMatch]
    def __init__(self, produced_by: _Optional[_Iterable[_Union[LineageMatch, _Mapping]]] = ..., used_by: _Optional[_Iterable[_Union[LineageMatch, _Mapping]]] = ...) -> None: ...

class GetRankHealthRequest(_message.Message):
    __slots__ = ("run_id", "step_time_key", "lag_key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_KEY_FIELD_NUMBER: _ClassVar[int]
    LAG_KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step_time_key: str
    lag_key: str
    def __init__(self, run_id: _Optional[str] = ..., step_time_key: _Optional[str] = ..., lag_key: _Optional[str] = ...) -> None: ...

class FirstNonFinite(_message.Message):
    __slots__ = ("key", "step", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    step: int
    value: float
    def __init__(self, key: _Optional[str] = ..., step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class RankHealth(_message.Message):
    __slots__ = ("rank", "node", "status", "last_seen_ms", "steps", "step_time_p50_s", "step_time_p95_s", "lag_p50_ms", "lag_p95_ms", "lag_max_ms", "data_wait_p50_s", "device_memory_max_bytes", "first_non_finite", "problems")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_P50_S_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_P95_S_FIELD_NUMBER: _ClassVar[int]
    LAG_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LAG_P95_MS_FIELD_NUMBER: _ClassVar[int]
    LAG_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    DATA_WAIT_P50_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    FIRST_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    rank: int
    node: str
    status: _events_pb2.RunStatus
    last_seen_ms: int
    steps: int
    step_time_p50_s: float
    step_time_p95_s: float
    lag_p50_ms: float
    lag_p95_ms: float
    lag_max_ms: float
    data_wait_p50_s: float
    device_memory_max_bytes: int
    first_non_finite: _containers.RepeatedCompositeFieldContainer[FirstNonFinite]
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., node: _Optional[str] = ..., status: _Optional[_Union[_events_pb2.RunStatus, str]] = ..., last_seen_ms: _Optional[int] = ..., steps: _Optional[int] = ..., step_time_p50_s: _Optional[float] = ..., step_time_p95_s: _Optional[float] = ..., lag_p50_ms: _Optional[float] = ..., lag_p95_ms: _Optional[float] = ..., lag_max_ms: _Optional[float] = ..., data_wait_p50_s: _Optional[float] = ..., device_memory_max_bytes: _Optional[int] = ..., first_non_finite: _Optional[_Iterable[_Union[FirstNonFinite, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRankHealthResponse(_message.Message):
    __slots__ = ("ranks", "median_step_time_p50_s", "lag_key", "suspects", "attempt")
    RANKS_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_STEP_TIME_P50_S_FIELD_NUMBER: _ClassVar[int]
    LAG_KEY_FIELD_NUMBER: _ClassVar[int]
    SUSPECTS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ranks: _containers.RepeatedCompositeFieldContainer[RankHealth]
    median_step_time_p50_s: float
    lag_key: str
    suspects: _containers.RepeatedScalarFieldContainer[int]
    attempt: int
    def __init__(self, ranks: _Optional[_Iterable[_Union[RankHealth, _Mapping]]] = ..., median_step_time_p50_s: _Optional[float] = ..., lag_key: _Optional[str] = ..., suspects: _Optional[_Iterable[int]] = ..., attempt: _Optional[int] = ...) -> None: ...

class GetMetricHistoriesRequest(_message.Message):
    __slots__ = ("run_ids", "keys", "max_points", "ranks", "aggregate", "start_step", "end_step")
    RUN_IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    END_STEP_FIELD_NUMBER: _ClassVar[int]
    run_ids: _containers.RepeatedScalarFieldContainer[str]
    keys: _containers.RepeatedScalarFieldContainer[str]
    max_points: int
    ranks: _containers.RepeatedScalarFieldContainer[int]
    aggregate: Aggregate
    start_step: int
    end_step: int
    def __init__(self, run_ids: _Optional[_Iterable[str]] = ..., keys: _Optional[_Iterable[str]] = ..., max_points: _Optional[int] = ..., ranks: _Optional[_Iterable[int]] = ..., aggregate: _Optional[_Union[Aggregate, str]] = ..., start_step: _Optional[int] = ..., end_step: _Optional[int] = ...) -> None: ...

class SeriesHistory(_message.Message):
    __slots__ = ("run_id", "key", "history")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    history: GetMetricHistoryResponse
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., history: _Optional[_Union[GetMetricHistoryResponse, _Mapping]] = ...) -> None: ...

class GetMetricHistoriesResponse(_message.Message):
    __slots__ = ("series",)
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[SeriesHistory]
    def __init__(self, series: _Optional[_Iterable[_Union[SeriesHistory, _Mapping]]] = ...) -> None: ...

class GetRankEnvelopeRequest(_message.Message):
    __slots__ = ("run_id", "key", "max_points", "start_step", "end_step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    END_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    max_points: int
    start_step: int
    end_step: int
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., max_points: _Optional[int] = ..., start_step: _Optional[int] = ..., end_step: _Optional[int] = ...) -> None: ...

class RankDeparture(_message.Message):
    __slots__ = ("rank", "step", "value", "median")
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    rank: int
    step: int
    value: float
    median: float
    def __init__(self, rank: _Optional[int] = ..., step: _Optional[int] = ..., value: _Optional[float] = ..., median: _Optional[float] = ...) -> None: ...

class RankNonFinite(_message.Message):
    __slots__ = ("rank", "step", "value")
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    step: int
    value: float
    def __init__(self, rank: _Optional[int] = ..., step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class GetRankEnvelopeResponse(_message.Message):
    __slots__ = ("run_id", "key", "ranks", "steps", "mean", "min", "max", "min_rank", "max_rank", "count", "downsampled", "total_steps", "outlier_rank", "departures", "first_non_finite")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_RANK_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DOWNSAMPLED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_RANK_FIELD_NUMBER: _ClassVar[int]
    DEPARTURES_FIELD_NUMBER: _ClassVar[int]
    FIRST_NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    min: _containers.RepeatedScalarFieldContainer[float]
    max: _containers.RepeatedScalarFieldContainer[float]
    min_rank: _containers.RepeatedScalarFieldContainer[int]
    max_rank: _containers.RepeatedScalarFieldContainer[int]
    count: _containers.RepeatedScalarFieldContainer[int]
    downsampled: bool
    total_steps: int
    outlier_rank: int
    departures: _containers.RepeatedCompositeFieldContainer[RankDeparture]
    first_non_finite: _containers.RepeatedCompositeFieldContainer[RankNonFinite]
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., mean: _Optional[_Iterable[float]] = ..., min: _Optional[_Iterable[float]] = ..., max: _Optional[_Iterable[float]] = ..., min_rank: _Optional[_Iterable[int]] = ..., max_rank: _Optional[_Iterable[int]] = ..., count: _Optional[_Iterable[int]] = ..., downsampled: _Optional[bool] = ..., total_steps: _Optional[int] = ..., outlier_rank: _Optional[int] = ..., departures: _Optional[_Iterable[_Union[RankDeparture, _Mapping]]] = ..., first_non_finite: _Optional[_Iterable[_Union[RankNonFinite, _Mapping]]] = ...) -> None: ...

class GetRankLagRequest(_message.Message):
    __slots__ = ("run_id", "key", "max_steps")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    max_steps: int
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., max_steps: _Optional[int] = ...) -> None: ...

class RankLagRow(_message.Message):
    __slots__ = ("lag_ms",)
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    lag_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, lag_ms: _Optional[_Iterable[float]] = ...) -> None: ...

class GetRankLagResponse(_message.Message):
    __slots__ = ("run_id", "key", "ranks", "steps", "lag_ms")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    lag_ms: _containers.RepeatedCompositeFieldContainer[RankLagRow]
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., lag_ms: _Optional[_Iterable[_Union[RankLagRow, _Mapping]]] = ...) -> None: ...

class ListRunKeysRequest(_message.Message):
    __slots__ = ("experiments",)
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiments: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRunKeysResponse(_message.Message):
    __slots__ = ("params", "metrics", "tags", "truncated")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    truncated: bool
    def __init__(self, params: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ..., truncated: _Optional[bool] = ...) -> None: ...
