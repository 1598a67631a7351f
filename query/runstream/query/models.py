"""Domain objects the query service returns and the query client hands to callers.

Plain frozen dataclasses with no gRPC and no ClickHouse in them, so the service, the
servicer, the client and the CLI share one vocabulary. Statuses and param types are the
names of the ``RunStatus`` / ``ParamType`` enums in ``events.proto`` ("RUNNING",
"FINISHED", ...: :mod:`runstream.proto.status`; "STRING", "INT", ...). Times are epoch
milliseconds (``*_ms``); an ``end_ms`` of 0 means "still running". Instances are
immutable and safe to share between threads (``MetricHistory`` holds lists: treat them as
read-only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """One run's headline: rank 0 owns the status; ``start_ms`` is the earliest rank start.

    ``status``, ``end_ms`` and ``world_size`` describe the run's latest attempt (see
    :class:`Attempt`); ``attempts`` counts them. ``archived``: hidden from searches by
    ``runstream archive``. A fork names its parent run and the last step inherited from
    it (``fork_run_id`` "" and ``fork_step`` 0: not a fork).
    """

    run_id: str
    experiment: str
    name: str
    status: str
    start_ms: int
    end_ms: int
    world_size: int
    archived: bool = False
    fork_run_id: str = ""
    fork_step: int = 0
    attempts: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop:
    """What producers dropped for one reason: events, and metric points among them."""

    reason: str
    events: int
    points: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RankInfo:
    """One rank (process) of a run: where it ran, its own latest status, and the account
    of its metric points: ``points_logged`` (accepted by log(), summed over the
    ``producers_finished`` producers whose RunFinished arrived; 0 before), ``points_stored``
    (in the store now) and ``dropped`` (by reason, summed over those producers)."""

    rank: int
    local_rank: int
    node: str
    status: str
    start_ms: int
    end_ms: int
    error: str
    points_logged: int = 0
    points_stored: int = 0
    dropped: tuple[Drop, ...] = ()
    producers_finished: int = 0
    #: The attempt (:class:`Attempt`) this entry describes.
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One start of a run's job: a launcher restart or a resume starts a new one under the
    same run id, numbered 0, 1, ... in start order (:mod:`runstream.query.attempts`).
    ``status`` is its worst rank's (CRASHED > FAILED > KILLED > RUNNING > FINISHED; an
    attempt still RUNNING when a later one started is CRASHED); ``start_ms`` its first
    rank's start, ``end_ms`` its last rank's end (0 while running); ``error`` the first
    error one of its ranks reported (what caused the restart)."""

    attempt: int
    restart: int = 0
    resume: bool = False
    world_size: int = 0
    ranks: tuple[int, ...] = ()
    status: str = ""
    start_ms: int = 0
    end_ms: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """A note kept with a run (``runstream note``): who wrote it, from where, when."""

    text: str
    user: str = ""
    host: str = ""
    ts_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One change made to a run after the fact: "tag k=v", "note", "archive", "restore"."""

    ts_ms: int
    user: str
    host: str
    what: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSummary:
    """A metric over all ranks: ``last`` is the value at the highest (step, ts_ms)."""

    key: str
    last: float
    last_step: int
    min: float
    max: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A hyperparameter as text; ``type`` ("STRING", "INT", "FLOAT", "BOOL") says how to read it."""

    key: str
    value: str
    type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamConflict:
    """A value logged for a param of ``rank`` after its first value, which stays the
    param: who logged it (``producer_id``) and when (``ts_ms``, epoch ms)."""

    key: str
    rank: int
    value: str
    type: str
    producer_id: str
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Tag:
    key: str
    value: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """A file or directory a run produced; ``sha256`` is hex."""

    name: str
    uri: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Input:
    """A data set or file a run consumed; ``role`` is "train", "validation", ..."""

    name: str
    uri: str
    digest: str
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CodeVersion:
    """The code a run executed; when dirty, ``diff_sha256`` (hex) and ``diff_uri`` locate
    the stored ``git diff HEAD``. ``cwd`` and ``script`` are relative to the repository
    root ("" when not recorded: runs of older SDKs)."""

    git_commit: str = ""
    git_branch: str = ""
    git_remote: str = ""
    git_dirty: bool = False
    in_git_repo: bool = False
    diff_sha256: str = ""
    diff_uri: str = ""
    cwd: str = ""
    script: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Package:
    name: str
    version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Gpu:
    name: str
    memory_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Environment:
    """Where a run executed. ``memory_bytes`` is the node's physical memory; packages are
    sorted by name. ``argv``, ``launcher`` ("torchrun", "slurm", "openmpi", "pmi",
    "none") and its shape (``nnodes``, ``nproc_per_node``; 0 = not stated) say how the
    process was started; they are empty for runs of older SDKs."""

    python_version: str = ""
    os: str = ""
    command: str = ""
    cpu_count: int = 0
    cpu_model: str = ""
    memory_bytes: int = 0
    packages: tuple[Package, ...] = ()
    gpus: tuple[Gpu, ...] = ()
    gpu_driver: str = ""
    cuda_version: str = ""
    argv: tuple[str, ...] = ()
    launcher: str = ""
    nnodes: int = 0
    nproc_per_node: int = 0
    runstream_editable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """Everything recorded for one run. Sequences are sorted (by key, name or rank)."""

    info: RunInfo
    params: tuple[Param, ...] = ()
    tags: tuple[Tag, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    inputs: tuple[Input, ...] = ()
    metrics: tuple[MetricSummary, ...] = ()
    ranks: tuple[RankInfo, ...] = ()
    code: CodeVersion = field(default_factory=CodeVersion)
    env: Environment = field(default_factory=Environment)
    #: Values logged for a param after its first one (by key, rank, time): params are
    #: immutable, so these were refused, and are shown beside the param.
    param_conflicts: tuple[ParamConflict, ...] = ()
    #: Every attempt, oldest first; ``info`` and ``ranks`` describe the latest (unless
    #: asked for all attempts: then ``ranks`` lists every attempt's, by attempt and rank).
    attempts: tuple[Attempt, ...] = ()
    #: Notes, oldest first, and every change made after the fact, oldest first.
    notes: tuple[Note, ...] = ()
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageMatch:
    """A run that logged an artifact (or used it as an input): the artifact's name there,
    the rank that logged it, where it is stored and when; ``run`` is the run as
    :meth:`~runstream.query.service.QueryService.get_run` returns it (producers only)."""

    run_id: str
    name: str
    rank: int
    uri: str
    size_bytes: int = 0
    ts_ms: int = 0
    run: Run | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """GetLineage: the runs that produced content with a digest, and those that used it,
    oldest first."""

    produced_by: tuple[LineageMatch, ...] = ()
    used_by: tuple[LineageMatch, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPage:
    """One page of runs, newest start first; ``next_page_token`` is "" on the last page.

    ``columns`` (when asked for) is parallel to ``runs``: per run, "params.X" / "tags.X"
    -> str and "metrics.X" -> float (the run's latest value of X); a value the run lacks
    has no entry.
    """

    runs: tuple[RunInfo, ...]
    next_page_token: str = ""
    columns: tuple[Mapping[str, str | float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricHistory:
    """Points of one metric, columnar: point i is (ranks[i], steps[i], values[i], ts_ms[i]).

    Ordered by (rank, step, ts_ms) and deduplicated. ``next_page_token`` is "" when
    every point is here.
    """

    run_id: str
    key: str
    ranks: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    ts_ms: list[int] = field(default_factory=list)
    next_page_token: str = ""
    #: Set when downsampled: the extremes and size of the bucket each point stands for.
    downsampled: bool = False
    min_values: list[float] = field(default_factory=list)
    max_values: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)
    #: Points in the whole (downsampled) series.
    total_points: int = 0
    #: "" (per rank) or "mean" / "min" / "max" across ranks; then ``ranks`` is empty.
    aggregate: str = ""

    def __len__(self) -> int:
        return len(self.steps)


#: Aggregates of GetMetricHistory across ranks ("" = none).
AGGREGATES = ("", "mean", "min", "max")
#: Goals of a compared metric.
MINIMIZE = "minimize"
MAXIMIZE = "maximize"


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparedField:
    """One compared field; ``values[i]`` belongs to the i-th compared run ("" = absent)."""

    section: str
    key: str
    values: tuple[str, ...]
    differs: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricStats:
    """One run's summary of a compared metric; ``present`` False means never logged."""

    present: bool
    last: float = 0.0
    last_step: int = 0
    min: float = 0.0
    max: float = 0.0
    best: float = 0.0
    best_step: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparedMetric:
    """A metric across the compared runs; ``best_run`` indexes the runs (-1 = none)."""

    key: str
    goal: str
    stats: tuple[MetricStats, ...]
    best_run: int
    differs: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """CompareRuns' answer: fields (differing first) and metrics, runs in request order."""

    runs: tuple[RunInfo, ...]
    fields: tuple[ComparedField, ...]
    metrics: tuple[ComparedMetric, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PointsUpdate:
    """FollowRun: new points, columnar; point i's key is ``keys[key_index[i]]``."""

    keys: tuple[str, ...]
    key_index: list[int]
    ranks: list[int]
    steps: list[int]
    values: list[float]
    ts_ms: list[int]
    live: bool = False

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusUpdate:
    """FollowRun: a rank's status changed (or is reported for the first time)."""

    rank: int
    status: str
    error: str
    ts_ms: int
    live: bool = False


FollowUpdate = PointsUpdate | StatusUpdate


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentInfo:
    experiment: str
    run_count: int
    last_start_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestPartition:
    """The latest progress report of one consumer's source partition (ts_ms: when sent)."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstNonFinite:
    """The first non-finite value (NaN, inf or -inf) of one key on one rank, and its step."""

    key: str
    step: int
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RankHealth:
    """One rank as GetRankHealth sees it (:mod:`runstream.query.ranks` says how).

    ``last_seen_ms``: its last heartbeat, point or status (epoch ms; 0 never). ``steps``:
    points of the step-time key, whose percentiles are ``step_time_p50_s`` /
    ``step_time_p95_s`` (seconds; 0 if none). ``lag_*_ms``: per step of the lag key,
    this rank's first timestamp minus the median rank's, percentiles over steps
    (negative = ahead). ``data_wait_p50_s``: median data-loading wait (seconds);
    ``device_memory_max_bytes``: the highest device memory seen. ``problems``: what is
    wrong, in words; empty = healthy.
    """

    rank: int
    node: str = ""
    status: str = ""
    last_seen_ms: int = 0
    steps: int = 0
    step_time_p50_s: float = 0.0
    step_time_p95_s: float = 0.0
    lag_p50_ms: float = 0.0
    lag_p95_ms: float = 0.0
    lag_max_ms: float = 0.0
    data_wait_p50_s: float = 0.0
    device_memory_max_bytes: int = 0
    first_non_finite: tuple[FirstNonFinite, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RankHealthReport:
    """GetRankHealth: every rank of the run's latest attempt, by rank; the median over
    ranks of ``step_time_p50_s``; the lag key used ("" if none); the ranks with any
    problem, slowest first; and the attempt described."""

    ranks: tuple[RankHealth, ...] = ()
    median_step_time_p50_s: float = 0.0
    lag_key: str = ""
    suspects: tuple[int, ...] = ()
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RankDeparture:
    """The first step at which a rank departs from the others (see
    :meth:`~runstream.query.service.QueryService.rank_envelope`): its value there and the
    median over ranks."""

    rank: int
    step: int
    value: float
    median: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RankNonFinite:
    """The first NaN/inf of a key on one rank."""

    rank: int
    step: int
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RankEnvelope:
    """GetRankEnvelope: a key's spread across ranks, per step (or bucket of steps from
    ``steps[i]`` when ``downsampled``), columnar. Over each rank's latest finite value at a
    step: ``mean`` (bucket: mean of means), ``min``/``max`` (bucket: min of mins, max of
    maxes) and the rank holding each (``min_rank``/``max_rank``), ``count`` the ranks
    reporting (bucket: the most at one step). ``total_steps``: steps in the range before
    bucketing. ``outlier_rank`` -1 = none."""

    run_id: str
    key: str
    ranks: tuple[int, ...] = ()
    steps: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    min_rank: list[int] = field(default_factory=list)
    max_rank: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    downsampled: bool = False
    total_steps: int = 0
    outlier_rank: int = -1
    departures: tuple[RankDeparture, ...] = ()
    first_non_finite: tuple[RankNonFinite, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RankLag:
    """GetRankLag: ``lag_ms[i][j]`` is rank ``ranks[i]``'s mean, over the step bucket
    starting at ``steps[j]``, of its first ts_ms at a step minus the median over ranks of
    the first ts_ms at that step (ms; NaN: no point of the rank in the bucket)."""

    run_id: str
    key: str
    ranks: tuple[int, ...] = ()
    steps: list[int] = field(default_factory=list)
    lag_ms: list[list[float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunKeys:
    """ListRunKeys: the param, metric and tag keys runs use, sorted, at most 1,000 each
    (``truncated``: a list was cut)."""

    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    truncated: bool = False
