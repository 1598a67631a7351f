from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUNNING: _ClassVar[RunStatus]
    FINISHED: _ClassVar[RunStatus]
    FAILED: _ClassVar[RunStatus]
    KILLED: _ClassVar[RunStatus]
    CRASHED: _ClassVar[RunStatus]

class ParamType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PARAM_TYPE_UNSPECIFIED: _ClassVar[ParamType]
    STRING: _ClassVar[ParamType]
    INT: _ClassVar[ParamType]
    FLOAT: _ClassVar[ParamType]
    BOOL: _ClassVar[ParamType]

class ArchiveAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARCHIVE_ACTION_UNSPECIFIED: _ClassVar[ArchiveAction]
    ARCHIVE: _ClassVar[ArchiveAction]
    RESTORE: _ClassVar[ArchiveAction]
RUN_STATUS_UNSPECIFIED: RunStatus
RUNNING: RunStatus
FINISHED: RunStatus
FAILED: RunStatus
KILLED: RunStatus
CRASHED: RunStatus
PARAM_TYPE_UNSPECIFIED: ParamType
STRING: ParamType
INT: ParamType
FLOAT: ParamType
BOOL: ParamType
ARCHIVE_ACTION_UNSPECIFIED: ArchiveAction
ARCHIVE: ArchiveAction
RESTORE: ArchiveAction

class RunEvent(_message.Message):
    __slots__ = ("run_id", "experiment", "rank", "world_size", "local_rank", "node", "producer_id", "seq", "ts_ms", "run_started", "params", "metrics", "tags", "artifact", "run_finished", "heartbeat", "input", "annotation")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_STARTED_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    RUN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    experiment: str
    rank: int
    world_size: int
    local_rank: int
    node: str
    producer_id: str
    seq: int
    ts_ms: int
    run_started: RunStarted
    params: Params
    metrics: MetricsBatch
    tags: Tags
    artifact: Artifact
    run_finished: RunFinished
    heartbeat: Heartbeat
    input: Input
    annotation: Annotation
    def __init__(self, run_id: _Optional[str] = ..., experiment: _Optional[str] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., local_rank: _Optional[int] = ..., node: _Optional[str] = ..., producer_id: _Optional[str] = ..., seq: _Optional[int] = ..., ts_ms: _Optional[int] = ..., run_started: _Optional[_Union[RunStarted, _Mapping]] = ..., params: _Optional[_Union[Params, _Mapping]] = ..., metrics: _Optional[_Union[MetricsBatch, _Mapping]] = ..., tags: _Optional[_Union[Tags, _Mapping]] = ..., artifact: _Optional[_Union[Artifact, _Mapping]] = ..., run_finished: _Optional[_Union[RunFinished, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., input: _Optional[_Union[Input, _Mapping]] = ..., annotation: _Optional[_Union[Annotation, _Mapping]] = ...) -> None: ...

class RunStarted(_message.Message):
    __slots__ = ("name", "code", "env", "restart", "resume", "fork_run_id", "fork_step")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    FORK_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    FORK_STEP_FIELD_NUMBER: _ClassVar[int]
    name: str
    code: CodeVersion
    env: Environment
    restart: int
    resume: bool
    fork_run_id: str
    fork_step: int
    def __init__(self, name: _Optional[str] = ..., code: _Optional[_Union[CodeVersion, _Mapping]] = ..., env: _Optional[_Union[Environment, _Mapping]] = ..., restart: _Optional[int] = ..., resume: _Optional[bool] = ..., fork_run_id: _Optional[str] = ..., fork_step: _Optional[int] = ...) -> None: ...

class CodeVersion(_message.Message):
    __slots__ = ("git_commit", "git_branch", "git_remote", "git_dirty", "in_git_repo", "diff_sha256", "diff_uri", "cwd", "script")
    GIT_COMMIT_FIELD_NUMBER: _ClassVar[int]
    GIT_BRANCH_FIELD_NUMBER: _ClassVar[int]
    GIT_REMOTE_FIELD_NUMBER: _ClassVar[int]
    GIT_DIRTY_FIELD_NUMBER: _ClassVar[int]
    IN_GIT_REPO_FIELD_NUMBER: _ClassVar[int]
    DIFF_SHA256_FIELD_NUMBER: _ClassVar[int]
    DIFF_URI_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_FIELD_NUMBER: _ClassVar[int]
    git_commit: str
    git_branch: str
    git_remote: str
    git_dirty: bool
    in_git_repo: bool
    diff_sha256: str
    diff_uri: str
    cwd: str
    script: str
    def __init__(self, git_commit: _Optional[str] = ..., git_branch: _Optional[str] = ..., git_remote: _Optional[str] = ..., git_dirty: _Optional[bool] = ..., in_git_repo: _Optional[bool] = ..., diff_sha256: _Optional[str] = ..., diff_uri: _Optional[str] = ..., cwd: _Optional[str] = ..., script: _Optional[str] = ...) -> None: ...

class Package(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("name", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("python_version", "os", "command", "cpu_count", "cpu_model", "memory_bytes", "packages", "gpus", "gpu_driver", "cuda_version", "argv", "launcher", "nnodes", "nproc_per_node", "runstream_editable")
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_DRIVER_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    LAUNCHER_FIELD_NUMBER: _ClassVar[int]
    NNODES_FIELD_NUMBER: _ClassVar[int]
    NPROC_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    RUNSTREAM_EDITABLE_FIELD_NUMBER: _ClassVar[int]
    python_version: str
    os: str
    command: str
    cpu_count: int
    cpu_model: str
    memory_bytes: int
    packages: _containers.RepeatedCompositeFieldContainer[Package]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    gpu_driver: str
    cuda_version: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    launcher: str
    nnodes: int
    nproc_per_node: int
    runstream_editable: bool
    def __init__(self, python_version: _Optional[str] = ..., os: _Optional[str] = ..., command: _Optional[str] = ..., cpu_count: _Optional[int] = ..., cpu_model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., packages: _Optional[_Iterable[_Union[Package, _Mapping]]] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., gpu_driver: _Optional[str] = ..., cuda_version: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., launcher: _Optional[str] = ..., nnodes: _Optional[int] = ..., nproc_per_node: _Optional[int] = ..., runstream_editable: _Optional[bool] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("key", "value", "type")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    type: ParamType
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., type: _Optional[_Union[ParamType, str]] = ...) -> None: ...

class Params(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[Param]
    def __init__(self, params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ...) -> None: ...

class MetricsBatch(_message.Message):
    __slots__ = ("keys", "key_index", "steps", "values", "ts_ms")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    KEY_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    key_index: _containers.RepeatedScalarFieldContainer[int]
    steps: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    ts_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., key_index: _Optional[_Iterable[int]] = ..., steps: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., ts_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Tags(_message.Message):
    __slots__ = ("tags",)
    TAGS_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    def __init__(self, tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("name", "uri", "size_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    size_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Input(_message.Message):
    __slots__ = ("name", "uri", "digest", "role")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    uri: str
    digest: str
    role: str
    def __init__(self, name: _Optional[str] = ..., uri: _Optional[str] = ..., digest: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class RunFinished(_message.Message):
    __slots__ = ("status", "error", "points_logged", "dropped")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    POINTS_LOGGED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    error: str
    points_logged: int
    dropped: _containers.RepeatedCompositeFieldContainer[Drop]
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., error: _Optional[str] = ..., points_logged: _Optional[int] = ..., dropped: _Optional[_Iterable[_Union[Drop, _Mapping]]] = ...) -> None: ...

class Drop(_message.Message):
    __slots__ = ("reason", "events", "points")
    REASON_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    events: int
    points: int
    def __init__(self, reason: _Optional[str] = ..., events: _Optional[int] = ..., points: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Annotation(_message.Message):
    __slots__ = ("tags", "note", "archive", "user", "host")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    note: str
    archive: ArchiveAction
    user: str
    host: str
    def __init__(self, tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., note: _Optional[str] = ..., archive: _Optional[_Union[ArchiveAction, str]] = ..., user: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...
