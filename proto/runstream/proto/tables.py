"""The ClickHouse tables: the storage contract between the consumer and the query service.

The consumer (:mod:`runstream.consumer`) creates and writes them; the query service
(:mod:`runstream.query`) reads them; ``deploy/clickhouse/print_ddl.py`` prints their DDL
for a single node or a cluster. Pure: only constants and string building, so importing
it loads neither ClickHouse nor Kafka.

Every table is a ReplacingMergeTree whose ORDER BY is the natural key of what it
stores, so an at-least-once replay of the same events collapses to one row; readers
use FINAL (or argMax over the key) to see deduplicated data. Inserts also carry an
``insert_deduplication_token`` (``non_replicated_deduplication_window`` is set, since it
defaults to 0 = off on non-replicated tables).

Metric points are identified by (producer_id, seq, idx): the producer incarnation,
the event's sequence number and the point's index in the event. A replayed point
has the same identity and is deduplicated; a second value logged at the same step is
a different point and is kept.

Params are immutable, across processes too: ``param_values`` keeps every distinct value
of a (run, key, rank), and of equal values the earliest row (``ver`` orders by ts_ms,
descending). Readers take the earliest value as the param and report the others as
conflicts. It replaced ``params`` (keyed by (run, key, rank), where the latest value
won); :func:`migration_ddl` copies an old ``params`` table's rows over at start.

The tables a search inside an experiment reads also carry the row's experiment and a
projection sorted by it (:data:`PROJECTION`), so that search reads only the experiment's
granules: an experiment's run ids are spread over the whole run_id key space.

Upgrades: tables are created with CREATE TABLE IF NOT EXISTS, so an existing store
keeps its old columns; :func:`add_columns_ddl` lists the ALTER TABLE ... ADD COLUMN
statements that bring it to these definitions (the consumer runs them at start). A
table whose ORDER BY changes gets a new name instead (ORDER BY cannot be altered).
"""

from __future__ import annotations

from dataclasses import dataclass

from runstream.proto.config import IDENTIFIER
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.sortkeys import MAX_VALUE_KEY, MIN_VALUE_KEY, STEP_VALUE_KEY

#: Insert tokens remembered per table (``non_replicated_deduplication_window`` on a single
#: node, ``replicated_deduplication_window`` on a cluster): a replay is dropped at insert
#: if its batch is among the table's last this many inserts. Each consumer inserts about
#: 1 / RUNSTREAM_CONSUMER_MAX_BATCH_AGE_S batches a second per table at most (2 by
#: default), so N consumers cover replays of the last 10,000 / (2 N) seconds: 80 min
#: for one consumer, 8 min for ten.
DEDUP_WINDOW = 10_000
#: ``replicated_deduplication_window_seconds`` of the cluster tables: Replicated tables also
#: forget tokens older than this (the server default is 3,600 s in current ClickHouse
#: releases, 7 days in older ones), which a single node never does; a week makes
#: DEDUP_WINDOW the limit in practice, as on a single node (Keeper holds at most
#: DEDUP_WINDOW block ids per table either way).
DEDUP_WINDOW_S = 604_800
_REPLICATED_SETTINGS = (f"replicated_deduplication_window = {DEDUP_WINDOW},"
                        f" replicated_deduplication_window_seconds = {DEDUP_WINDOW_S}")


#: The projection of every table a search inside an experiment reads (runs, run_status,
#: param_values, tags, artifacts, inputs, metric_summaries): the same rows sorted by
#: experiment first. The tables are ordered by run_id, and an experiment's run ids are
#: spread over the whole key space (uuid4), so ``run_id IN (its runs)`` touches nearly
#: every granule of a big store; ``experiment IN (...)`` reads only the experiment's
#: granules of the projection, so the search's cost follows the experiment's size.
#: (Rows written before the column existed hold experiment ''; the search finds them
#: through run_experiments: search_sql.SCOPE.)
PROJECTION = "by_experiment"
#: Needed for a projection of a Replacing/AggregatingMergeTree: a merge that collapses rows
#: rebuilds the projection from the merged part, so the projection holds what the table holds.
PROJECTION_SETTING = "deduplicate_merge_projection_mode = 'rebuild'"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, ClickHouse type [codec])
    engine: str
    order_by: str
    # Computed by ClickHouse (MATERIALIZED), never inserted: (name, type and expression).
    computed: tuple[tuple[str, str], ...] = ()
    #: The ORDER BY of the table's :data:`PROJECTION` (every column, the computed ones
    #: too, sorted by experiment first); "" = none.
    by_experiment: str = ""

    @property
    def projection(self) -> str:
        """``PROJECTION by_experiment (SELECT ... ORDER BY ...)``, or "" for none."""
        if not self.by_experiment:
            return ""
        computed = "".join(f", `{c}`" for c, _ in self.computed)
        return f"PROJECTION {PROJECTION} (SELECT *{computed} ORDER BY ({self.by_experiment}))"

    def settings(self, base: str) -> str:
        """``base``, with :data:`PROJECTION_SETTING` when the table has a projection."""
        return f"{base}, {PROJECTION_SETTING}" if self.by_experiment else base

    def body(self) -> str:
        """The parenthesised column list (computed columns and the projection included)."""
        parts = [f"`{c}` {t}" for c, t in (*self.columns, *self.computed)]
        if self.projection:
            parts.append(self.projection)
        return "(\n  " + ",\n  ".join(parts) + "\n)"

    @property
    def column_names(self) -> tuple[str, ...]:
        """The columns an insert supplies, in order."""
        return tuple(c for c, _ in self.columns)

    @property
    def insert_types(self) -> tuple[str, ...]:
        """The types an insert sends, in column order: the column types without codecs,
        and ``LowCardinality(T)`` sent as plain ``T`` (the server builds the dictionary in
        C++, several times faster than the driver does in Python). Giving the driver the
        types also saves it a DESCRIBE per insert."""
        out = []
        for _, spec in self.columns:
            type_name = spec.split(" CODEC(")[0]
            if type_name.startswith("LowCardinality(") and type_name.endswith(")"):
                type_name = type_name[len("LowCardinality("):-1]
            out.append(type_name)
        return tuple(out)

    def ddl(self, database: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{self.name}` {self.body()}"
            f" ENGINE = {self.engine} ORDER BY ({self.order_by})"
            " SETTINGS "
            + self.settings(f"non_replicated_deduplication_window = {DEDUP_WINDOW}")
        )


_ENVELOPE = (("producer_id", "String"), ("seq", "UInt64"), ("ts_ms", "Int64"))
# The event's experiment, on the rows of the tables a search inside an experiment reads
# (PROJECTION); last, as ALTER TABLE ... ADD COLUMN puts it in an older store.
_EXPERIMENT = ("experiment", "LowCardinality(String)")

RUNS = Table(
    "runs",
    (
        ("run_id", "String"), ("rank", "UInt32"), ("experiment", "String"), ("name", "String"),
        ("world_size", "UInt32"), ("local_rank", "UInt32"), ("node", "String"),
        ("git_commit", "String"), ("git_branch", "String"), ("git_remote", "String"),
        ("git_dirty", "Bool"), ("in_git_repo", "Bool"), ("python_version", "String"),
        ("os", "String"), ("command", "String"), ("cpu_count", "UInt32"),
        ("git_diff_sha256", "String"), ("git_diff_uri", "String"), ("cpu_model", "String"),
        ("memory_bytes", "UInt64"), ("packages", "Map(String, String)"),
        ("gpus", "Array(String)"), ("gpu_memory_bytes", "Array(UInt64)"),
        ("gpu_driver", "String"), ("cuda_version", "String"),
        # How the run was started (empty/0 in rows of older SDKs): cwd and script relative
        # to the repository root, argv as a list, the launcher and its shape.
        ("cwd", "String"), ("script", "String"), ("argv", "Array(String)"),
        ("launcher", "LowCardinality(String)"), ("nnodes", "UInt32"),
        ("nproc_per_node", "UInt32"), ("runstream_editable", "Bool"),
        *_ENVELOPE,
        # A fork's parent run and the last step inherited from it ("" / 0: not a fork).
        ("fork_run_id", "String"), ("fork_step", "Int64"),
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank",
    by_experiment="experiment, run_id, rank",
)

# Every RunStarted, one row each (runs keeps only the latest per rank): the query service
# numbers a run's attempts from these (runstream.query.attempts). restart is the
# launcher's restart count, resume whether the process asked to continue the run.
RUN_STARTS = Table(
    "run_starts",
    (
        ("run_id", "String"), ("rank", "UInt32"), ("world_size", "UInt32"),
        ("local_rank", "UInt32"), ("node", "String"), ("restart", "UInt32"),
        ("resume", "Bool"), ("launcher", "LowCardinality(String)"), *_ENVELOPE,
    ),
    "ReplacingMergeTree",
    "run_id, rank, producer_id, seq",
)

# One row per status change per rank: RUNNING at start, then FINISHED/FAILED/KILLED.
# A RunFinished row also carries its producer's account (0 and empty on other rows):
# metric points accepted from log() in all, and what was dropped, by reason (parallel
# arrays: reason, events, points). One producer sends one RunFinished, so per (run, rank,
# producer_id) the row with the highest seq holds that producer's final account.
RUN_STATUS = Table(
    "run_status",
    (
        ("run_id", "String"), ("rank", "UInt32"), ("experiment", "String"),
        ("status", "LowCardinality(String)"), ("error", "String"), *_ENVELOPE,
        ("points_logged", "UInt64"), ("drop_reasons", "Array(String)"),
        ("drop_events", "Array(UInt64)"), ("drop_points", "Array(UInt64)"),
    ),
    "ReplacingMergeTree",
    "run_id, rank, producer_id, seq",
    by_experiment="experiment, run_id, rank, producer_id, seq",
)

HEARTBEATS = Table(
    "heartbeats",
    (("run_id", "String"), ("rank", "UInt32"), ("ts_ms", "Int64")),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank",
)

# Every distinct value of a (run, key, rank), so a second process logging lr=0.2 under
# the run id and rank where lr=0.1 was logged first never replaces it. Of equal values
# the earliest row stays (ver: ts_ms descending, so replays and re-logs of the same value
# collapse onto the first). Readers: the param is the value with the lowest ts_ms
# (then producer_id, seq); the other values are conflicts shown beside it.
PARAMS = Table(
    "param_values",
    (
        ("run_id", "String"), ("key", "String"), ("value", "String"),
        ("type", "LowCardinality(String)"), ("rank", "UInt32"), *_ENVELOPE, _EXPERIMENT,
    ),
    "ReplacingMergeTree(ver)",
    "run_id, key, rank, value",
    (("ver", "UInt64 MATERIALIZED bitNot(toUInt64(greatest(ts_ms, 0)))"),),
    "experiment, run_id, key, rank, value",
)
#: The params table of stores created before param_values (ORDER BY run_id, key, rank:
#: the latest value won). Its rows are copied into param_values at start.
LEGACY_PARAMS = "params"

# One row per (run, key): every rank may set the same tag, so the latest wins, and among
# equal timestamps the highest rank; `ver` makes that choice independent of insert order.
TAGS = Table(
    "tags",
    (("run_id", "String"), ("key", "String"), ("value", "String"), ("rank", "UInt32"), *_ENVELOPE,
     _EXPERIMENT),
    "ReplacingMergeTree(ver)",
    "run_id, key",
    (("ver", "UInt64 MATERIALIZED toUInt64(greatest(ts_ms, 0)) * 1048576 + rank"),),
    "experiment, run_id, key",
)

ARTIFACTS = Table(
    "artifacts",
    (
        ("run_id", "String"), ("name", "String"), ("rank", "UInt32"), ("uri", "String"),
        ("size_bytes", "UInt64"), ("sha256", "String"), *_ENVELOPE, _EXPERIMENT,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, name, rank",
    by_experiment="experiment, run_id, name, rank",
)

INPUTS = Table(
    "inputs",
    (
        ("run_id", "String"), ("name", "String"), ("rank", "UInt32"), ("uri", "String"),
        ("digest", "String"), ("role", "LowCardinality(String)"), *_ENVELOPE, _EXPERIMENT,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank, name, uri",
    by_experiment="experiment, run_id, rank, name, uri",
)

METRICS = Table(
    "metrics",
    (
        # LowCardinality run_id: a part holds few runs, and sorting an insert on dictionary
        # codes instead of equal strings made it ~10% cheaper.
        ("run_id", "LowCardinality(String)"), ("key", "LowCardinality(String)"),
        ("rank", "UInt32"),
        # Codecs chosen by deploy/bench/bench_consumer.py on noisy training curves:
        # FPC+ZSTD beat Gorilla+ZSTD and ZSTD alone on values, DoubleDelta makes regular
        # steps nearly free. On jittery timestamps plain Delta is smaller (0.95 against
        # 1.07 B per point there), but DoubleDelta decodes faster: a cross-rank aggregate
        # of 1,024 ranks x 10k steps, which reads every point's ts_ms, took 294-317 ms
        # against 356-366 ms (bench_growth's fill, by hand). Stores made before keep Delta.
        ("step", "Int64 CODEC(DoubleDelta, ZSTD(1))"), ("value", "Float64 CODEC(FPC, ZSTD(1))"),
        ("ts_ms", "Int64 CODEC(DoubleDelta, ZSTD(1))"),
        ("producer_id", "LowCardinality(String)"),
        ("seq", "UInt64 CODEC(Delta, ZSTD(1))"), ("idx", "UInt32 CODEC(Delta, ZSTD(1))"),
        # Not read by the point queries: it feeds metric_summaries.experiment (the view).
        _EXPERIMENT,
    ),
    "ReplacingMergeTree",
    "run_id, key, rank, step, producer_id, seq, idx",
)


# One row per (metric event, key): how many points of that key the event carried. Written
# by the consumer (rows.py), keyed by the event's identity, so a replayed event collapses
# to the same row and sum(points) over FINAL is the exact point count under any replay.
METRIC_COUNTS = Table(
    "metric_counts",
    (
        ("run_id", "String"), ("key", "LowCardinality(String)"), ("rank", "UInt32"),
        ("producer_id", "LowCardinality(String)"), ("seq", "UInt64"), ("points", "UInt64"),
        ("ts_ms", "Int64"),
    ),
    "ReplacingMergeTree",
    "run_id, key, rank, producer_id, seq",
)

# Changes made to a run after the fact (runstream tag / note / archive), one row per
# Annotation event, with who made it. Tags set this way are also written to `tags`
# (rank 0), so filters and GetRun see them like any tag. archive: "", "ARCHIVE" or
# "RESTORE"; the latest non-empty one (by ts_ms) says whether the run is archived.
ANNOTATIONS = Table(
    "annotations",
    (
        ("run_id", "String"), ("experiment", "String"), ("tag_keys", "Array(String)"),
        ("tag_values", "Array(String)"), ("note", "String"),
        ("archive", "LowCardinality(String)"), ("user", "String"), ("host", "String"),
        *_ENVELOPE,
    ),
    "ReplacingMergeTree",
    "run_id, producer_id, seq",
)

TABLES: tuple[Table, ...] = (
    RUNS, RUN_STATUS, HEARTBEATS, PARAMS, TAGS, ARTIFACTS, INPUTS, METRICS, METRIC_COUNTS,
    RUN_STARTS, ANNOTATIONS,
)

#: producer_id of the status rows the consumer writes itself (CRASHED, and RUNNING again).
CONSUMER_PRODUCER_ID = "runstream-consumer"

# Latest/min/max per (run, key, rank), maintained on insert so summaries never scan points.
# The latest, min and max are idempotent, so a replayed point changes none of them.
# "Latest" is the value at the highest (step, ts_ms), compared as one packed UInt128
# (step << 64 | ts_ms; validation keeps both >= 0): a Tuple key made every insert ~20%
# slower (bench_consumer).
# Readers only ever argMaxMerge(last), so they tolerate older key types too.
METRIC_SUMMARIES = "metric_summaries"
_SUMMARIES = Table(
    METRIC_SUMMARIES,
    (
        ("run_id", "String"), ("key", "LowCardinality(String)"), ("rank", "UInt32"),
        ("last", "AggregateFunction(argMax, Float64, UInt128)"),
        ("last_step", "SimpleAggregateFunction(max, Int64)"),
        ("min", "SimpleAggregateFunction(min, Float64)"),
        ("max", "SimpleAggregateFunction(max, Float64)"),
        # The run's experiment ('' for points written before the column: max() lets a
        # later point's experiment win over it).
        ("experiment", "SimpleAggregateFunction(max, String)"),
        # For the cross-rank aggregates' repeated-rank check (the repository's
        # SUSPECT_RANKS_SQL): how many points the inserts held (every point, NaN and replays
        # included: a sum, so a replay that reaches storage counts twice), a bitmap of their
        # steps, and 1 on every row the view writes (0, the default, on rows written before
        # these columns). A (run, key, rank) whose min(counted) is 1 and whose points equal
        # its distinct steps logged each step once; any other is checked on its points.
        ("points", "SimpleAggregateFunction(sum, UInt64)"),
        ("steps", "AggregateFunction(groupBitmap, UInt64)"),
        ("counted", "SimpleAggregateFunction(min, UInt8)"),
    ),
    "AggregatingMergeTree",
    "run_id, key, rank",
    by_experiment="experiment, run_id, key, rank",
)

#: Steps per block of :data:`METRIC_BLOCKS` (steps are >= 0: validation).
BLOCK_STEPS = 1024


def series_block_steps(aggregate: str, forked: bool) -> int:
    """Steps per :data:`METRIC_BLOCKS` block where the blocks hold what a series read asks
    for (a run's own points of one key, per rank, every step or a step range), else 0: an
    aggregate across ranks or a fork's segments read the points. The query service picks
    its bucket grid by it, the repository its read, so the two agree."""
    return 0 if aggregate or forked else BLOCK_STEPS

# Per (run, key, rank, block of BLOCK_STEPS steps: intDiv(step, BLOCK_STEPS)) what a
# downsampling bucket needs (runstream.query.downsample): the point count, sums for the
# centroid (sum_scaled: the values times 2^-600, for a mean whose plain sum overflows), the
# extremes with where they were (the packed keys the bucket query over points uses, so
# both pick the same point) and the first and last points, NaN values left out as the
# buckets leave them. Fed by a view from every metrics insert; a bucket made of
# whole blocks merges its blocks' states, so a 100M-point series downsampled to 1,000 reads
# ~100k rows instead of 100M points. The extremes and end points are idempotent; the count
# and sums are not: a replay that reaches storage (README "Exactly once in query results")
# stays counted twice here, where the points collapse when merged. Only bucket counts and
# centroids (LTTB's choice between a bucket's min and max) can show it. Stores made before
# it are filled at start (:func:`blocks_backfill_ddl`).
METRIC_BLOCKS = Table(
    "metric_blocks",
    (
        ("run_id", "LowCardinality(String)"), ("key", "LowCardinality(String)"),
        ("rank", "UInt32"), ("block", "Int64"),
        ("n", "SimpleAggregateFunction(sum, UInt64)"),
        ("sum_step", "SimpleAggregateFunction(sum, Float64)"),
        ("sum_value", "SimpleAggregateFunction(sum, Float64)"),
        ("sum_scaled", "SimpleAggregateFunction(sum, Float64)"),
        # The lowest / highest value's point (lowest step among equal values), and the
        # first / last point: the packed keys of runstream.proto.sortkeys, which hold the
        # step and value (decoded by the reader), with the point's ts_ms as an argMin/argMax
        # state (numeric states and plain min/max: a Tuple state cost ~7x as much to merge,
        # and every state costs the insert).
        ("min_key", "SimpleAggregateFunction(min, UInt128)"),
        ("min_ts", "AggregateFunction(argMin, Int64, UInt128)"),
        ("max_key", "SimpleAggregateFunction(max, UInt128)"),
        ("max_ts", "AggregateFunction(argMax, Int64, UInt128)"),
        ("first_key", "SimpleAggregateFunction(min, UInt128)"),
        ("first_ts", "AggregateFunction(argMin, Int64, UInt128)"),
        ("last_key", "SimpleAggregateFunction(max, UInt128)"),
        ("last_ts", "AggregateFunction(argMax, Int64, UInt128)"),
    ),
    "AggregatingMergeTree",
    "run_id, key, rank, block",
)
# The view's SELECT, and the backfill's (constants only).
_BLOCKS_SELECT = (
    f"SELECT run_id, key, rank, intDiv(step, {BLOCK_STEPS}) AS block,"  # noqa: S608
    " count() AS n, sum(toFloat64(step)) AS sum_step,"
    # materialize(): keeps ClickHouse from taking the factor out of the sum.
    " sum(value) AS sum_value, sum(value * materialize(exp2(-600))) AS sum_scaled,"
    f" min({MIN_VALUE_KEY}) AS min_key, argMinState(ts_ms, {MIN_VALUE_KEY}) AS min_ts,"
    f" max({MAX_VALUE_KEY}) AS max_key, argMaxState(ts_ms, {MAX_VALUE_KEY}) AS max_ts,"
    f" min({STEP_VALUE_KEY}) AS first_key, argMinState(ts_ms, {STEP_VALUE_KEY}) AS first_ts,"
    f" max({STEP_VALUE_KEY}) AS last_key, argMaxState(ts_ms, {STEP_VALUE_KEY}) AS last_ts"
    " FROM {source} WHERE NOT isNaN(value) GROUP BY run_id, key, rank, block"
)

# Last sign of life per (run, rank) in the producer's clock (epoch ms): heartbeats, metric
# points and status events sent by the run (not the consumer's own CRASHED/RUNNING rows).
# max() is idempotent, so replays change nothing. The liveness checker reads it.
RANK_ACTIVITY = Table(
    "rank_activity",
    (("run_id", "String"), ("rank", "UInt32"), ("last_ms", "SimpleAggregateFunction(max, Int64)")),
    "AggregatingMergeTree",
    "run_id, rank",
)

# Written every few seconds by each consumer process (runstream.consumer.progress): one row per
# (consumer, source, topic, partition); the latest row wins. Readers take rows whose
# ts_ms is recent (a consumer that stopped stops writing).
INGEST_PROGRESS = Table(
    "ingest_progress",
    (
        ("consumer_id", "String"), ("source", "LowCardinality(String)"), ("topic", "String"),
        ("partition", "Int32"), ("committed_offset", "Int64"), ("end_offset", "Int64"),
        ("lag", "Int64"), ("points_total", "UInt64"), ("points_per_s", "Float64"),
        ("batch_latency_ms", "Float64"), ("ts_ms", "Int64"),
    ),
    "ReplacingMergeTree(ts_ms)",
    "consumer_id, source, topic, partition",
)

# The identity of this store: one random id, written by the first consumer that finds
# none (concurrent first consumers may each write one; the row with the lowest
# (created_ms, store_id) is the id). Consumers commit Kafka offsets with it, and
# re-read a partition from the beginning when its offsets were committed for another
# store (a store recreated empty must not keep the offsets of the one it replaced).
STORE_IDENTITY = Table(
    "store_identity",
    (("store_id", "String"), ("created_ms", "Int64")),
    "ReplacingMergeTree",
    "store_id",
)

#: The file in an embedded (chdb) store's directory that holds its store id, written by
#: the consumer at start. Gone (or naming another store) = the directory was removed or
#: replaced under the running process; the consumer stops committing and the query
#: service stops answering.
STORE_MARKER = "runstream-store-id"

# Which runs an experiment holds, keyed by experiment: a search inside one experiment reads
# this to size the experiment against the store, and to find the rows written before the
# tables had an experiment column (`experiment = '' AND run_id IN (...)`: search_sql.SCOPE).
# Fed from every insert into `runs` by a materialized view (consumers of older versions
# feed it too during an upgrade); a replayed RunStarted collapses to the same row. Stores
# made before it are filled at start (:func:`backfill_ddl`).
RUN_EXPERIMENTS = Table(
    "run_experiments",
    (("experiment", "String"), ("run_id", "String")),
    "ReplacingMergeTree",
    "experiment, run_id",
)

#: Tables fed by materialized views (never written by the consumer itself).
AGGREGATE_TABLES: tuple[Table, ...] = (_SUMMARIES, METRIC_BLOCKS, RANK_ACTIVITY, RUN_EXPERIMENTS)
AUX_TABLES: tuple[Table, ...] = (INGEST_PROGRESS, STORE_IDENTITY)


@dataclass(frozen=True, slots=True)
class View:
    """A materialized view ``name`` that feeds ``target`` from inserts into ``source``.

    ``select`` is the SELECT with ``{source}`` where the (qualified) source table goes.
    """

    name: str
    source: str
    target: str
    select: str

    def ddl(self, database: str, *, suffix: str = "", on_cluster: str = "") -> str:
        src = f"`{database}`.`{self.source}{suffix}`"
        # Only constants and checked identifiers reach this SQL.
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS `{database}`.`{self.name}{suffix}`"
            f"{on_cluster} TO `{database}`.`{self.target}{suffix}` AS "
            + self.select.format(source=src)
        )

    def modify_ddl(self, database: str, *, suffix: str = "", on_cluster: str = "") -> str:
        """``ALTER TABLE <view> MODIFY QUERY <select>``: an existing view to this SELECT
        (atomic: no insert into the source is missed while it changes)."""
        src = f"`{database}`.`{self.source}{suffix}`"
        return (f"ALTER TABLE `{database}`.`{self.name}{suffix}`{on_cluster} MODIFY QUERY "
                + self.select.format(source=src))


VIEWS: tuple[View, ...] = (
    View(
        f"{METRIC_SUMMARIES}_mv", METRICS.name, METRIC_SUMMARIES,
        "SELECT run_id, key, rank,"
        " argMaxState(value, bitOr(bitShiftLeft(toUInt128(step), 64), toUInt128(ts_ms)))"
        " AS last, max(step) AS last_step,"
        # any(): one insert's points of a (run, key, rank) share their experiment, and
        # max(toString()) of every point cost ~8% of a metrics insert (the column's max
        # merges the rest).
        " min(value) AS min, max(value) AS max, toString(any(experiment)) AS experiment,"
        # Steps as UInt64: one-to-one on Int64 (validation keeps them >= 0 anyway).
        " count() AS points, groupBitmapState(toUInt64(step)) AS steps, toUInt8(1) AS counted"
        " FROM {source} GROUP BY run_id, key, rank",
    ),
    View(f"{METRIC_BLOCKS.name}_mv", METRICS.name, METRIC_BLOCKS.name, _BLOCKS_SELECT),
    View(
        "rank_activity_heartbeats_mv", HEARTBEATS.name, RANK_ACTIVITY.name,
        "SELECT run_id, rank, max(ts_ms) AS last_ms FROM {source} GROUP BY run_id, rank",
    ),
    View(
        "rank_activity_metrics_mv", METRICS.name, RANK_ACTIVITY.name,
        "SELECT run_id, rank, max(ts_ms) AS last_ms FROM {source} GROUP BY run_id, rank",
    ),
    View(
        f"{RUN_EXPERIMENTS.name}_mv", RUNS.name, RUN_EXPERIMENTS.name,
        "SELECT DISTINCT experiment, run_id FROM {source}",
    ),
    View(
        "rank_activity_status_mv", RUN_STATUS.name, RANK_ACTIVITY.name,
        "SELECT run_id, rank, max(ts_ms) AS last_ms FROM {source}"  # noqa: S608
        f" WHERE producer_id != '{CONSUMER_PRODUCER_ID}' GROUP BY run_id, rank",
    ),
)


def _check_identifier(what: str, name: str) -> None:
    if not IDENTIFIER.fullmatch(name):
        raise InvalidArgumentError(f"{what} {name[:80]!r} is not [A-Za-z_][A-Za-z0-9_]*")


def tables_ddl(database: str) -> list[str]:
    """The database and every table (the views' targets included), without the views."""
    _check_identifier("database name", database)
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        *(t.ddl(database) for t in (*TABLES, *AUX_TABLES, *AGGREGATE_TABLES)),
    ]


def views_ddl(database: str) -> list[str]:
    """The materialized views. In an older store, run them after :func:`add_columns_ddl`:
    ClickHouse checks a view's SELECT against its source even when the view exists."""
    _check_identifier("database name", database)
    return [v.ddl(database) for v in VIEWS]


def all_ddl(database: str) -> list[str]:
    """Statements that create the database, every table and every view; safe to run
    repeatedly (on a new store; an older one needs its columns added before the views:
    the consumer's ClickHouseSink.ensure_schema does both).

    Raises InvalidArgumentError unless ``database`` is a plain identifier.
    """
    return [*tables_ddl(database), *views_ddl(database)]


# --- upgrades of existing stores ----------------------------------------------------------


def add_columns_ddl(
    database: str, existing: dict[str, set[str]]
) -> list[str]:
    """ALTER TABLE statements adding every column (computed ones included) that a table
    of these definitions has and ``existing`` (table name -> column names, as read from
    ``system.columns``) lacks. Tables missing from ``existing`` are skipped (CREATE makes
    them whole). Idempotent (ADD COLUMN IF NOT EXISTS). Pure.

    Raises InvalidArgumentError unless ``database`` is a plain identifier.
    """
    _check_identifier("database name", database)
    out = []
    for t in (*TABLES, *AUX_TABLES, *AGGREGATE_TABLES):
        have = existing.get(t.name)
        if have is None:
            continue
        missing = [(c, ty) for c, ty in (*t.columns, *t.computed) if c not in have]
        if missing:
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS `{c}` {ty}" for c, ty in missing)
            out.append(f"ALTER TABLE `{database}`.`{t.name}` {adds}")
    return out


def upgrade_views_ddl(database: str, existing: dict[str, set[str]]) -> list[str]:
    """``MODIFY QUERY`` for every view of an older store whose columns (as
    ``system.columns`` lists a view's output) lack a column of its target table: its SELECT
    is older than the table (e.g. metric_summaries_mv before metric_summaries.experiment).
    Views missing from ``existing`` are skipped (CREATE makes them). Pure.

    Raises InvalidArgumentError unless ``database`` is a plain identifier."""
    _check_identifier("database name", database)
    targets = {t.name: set(t.column_names) for t in AGGREGATE_TABLES}
    return [v.modify_ddl(database) for v in VIEWS
            if (have := existing.get(v.name)) is not None and not targets[v.target] <= have]


def add_projections_ddl(database: str, existing: set[str], have: set[str]) -> list[str]:
    """The statements that give each table of ``existing`` (names) that lacks it (``have``:
    the tables that have a :data:`PROJECTION`) its projection: the setting a projection of
    a Replacing/AggregatingMergeTree needs, then ``ADD PROJECTION IF NOT EXISTS``. The
    projection covers the parts written from then on (and those merged); older parts are
    read from the table itself, and their rows hold experiment '' anyway (search_sql.SCOPE
    finds them). Pure.

    Raises InvalidArgumentError unless ``database`` is a plain identifier."""
    _check_identifier("database name", database)
    out = []
    for t in (*TABLES, *AGGREGATE_TABLES):
        if t.projection and t.name in existing and t.name not in have:
            out.append(f"ALTER TABLE `{database}`.`{t.name}` MODIFY SETTING {PROJECTION_SETTING}")
            out.append(f"ALTER TABLE `{database}`.`{t.name}` ADD {_if_not_exists(t.projection)}")
    return out


def _if_not_exists(projection: str) -> str:
    """``PROJECTION name (...)`` -> ``PROJECTION IF NOT EXISTS name (...)``."""
    return projection.replace("PROJECTION ", "PROJECTION IF NOT EXISTS ", 1)


#: What the legacy ``params`` table is renamed to once its rows are copied (kept, unread).
LEGACY_PARAMS_MIGRATED = "params_migrated"


def migration_ddl(database: str) -> list[str]:
    """Statements that copy the rows of the legacy ``params`` table into ``param_values``
    and then rename it ``params_migrated`` (run after :func:`all_ddl`, only while
    ``params`` exists). A crash between the two is harmless: the next start copies again,
    and a row copied twice collapses in the ReplacingMergeTree (the earliest of equal
    values stays). The legacy table never had the experiment column: the copied rows hold
    experiment '', as every row written before it (search_sql.SCOPE finds them). Raises
    InvalidArgumentError unless ``database`` is an identifier."""
    _check_identifier("database name", database)
    cols = ", ".join(f"`{c}`" for c in PARAMS.column_names if c != _EXPERIMENT[0])
    return [
        f"INSERT INTO `{database}`.`{PARAMS.name}` ({cols})"  # noqa: S608 (constants only)
        f" SELECT {cols} FROM `{database}`.`{LEGACY_PARAMS}`",
        f"RENAME TABLE `{database}`.`{LEGACY_PARAMS}`"
        f" TO `{database}`.`{LEGACY_PARAMS_MIGRATED}`",
    ]


def backfill_ddl(database: str, suffix: str = "") -> str:
    """The INSERT ... SELECT that fills ``run_experiments`` from ``runs`` in a store made
    before it (run after :func:`all_ddl`, which creates the view that feeds it from then
    on; only while ``run_experiments`` is empty and ``runs`` is not). Copying a row twice
    is harmless (ReplacingMergeTree). ``suffix``: :data:`LOCAL_SUFFIX` for one shard of a
    cluster. Raises InvalidArgumentError unless ``database`` is an identifier."""
    _check_identifier("database name", database)
    return (f"INSERT INTO `{database}`.`{RUN_EXPERIMENTS.name}{suffix}` (experiment, run_id)"  # noqa: S608
            f" SELECT DISTINCT experiment, run_id FROM `{database}`.`{RUNS.name}{suffix}`")


def blocks_select(source: str) -> str:
    """The view's SELECT of metric_blocks rows (its columns, in order) over ``source``: a
    table or a parenthesised subquery with run_id, key, rank, step, value and ts_ms."""
    return _BLOCKS_SELECT.format(source=source)


def blocks_backfill_ddl(database: str, suffix: str = "") -> str:
    """The INSERT ... SELECT that fills ``metric_blocks`` from ``metrics`` in a store made
    before it (run after :func:`views_ddl`, which creates the view that feeds it from then
    on; only while ``metric_blocks`` is empty and ``metrics`` is not). Points inserted
    between the view's creation and this copy are counted twice (extremes and end points
    stay exact: see METRIC_BLOCKS). ``suffix``: :data:`LOCAL_SUFFIX` for one shard of a
    cluster (run on one replica of each). Raises InvalidArgumentError unless ``database``
    is an identifier."""
    _check_identifier("database name", database)
    cols = ", ".join(f"`{c}`" for c in METRIC_BLOCKS.column_names)
    return (f"INSERT INTO `{database}`.`{METRIC_BLOCKS.name}{suffix}` ({cols}) "
            + blocks_select(f"`{database}`.`{METRICS.name}{suffix}`"))


# --- cluster ---------------------------------------------------------------------------

LOCAL_SUFFIX = "_local"
#: Rows of one run live on one shard, so FINAL/argMax over a natural key (which always
#: starts with run_id) see every version of a row on the same shard.
SHARDING_KEY = "cityHash64(run_id)"


def replicated_engine(engine: str, database: str, table: str) -> str:
    """``ReplacingMergeTree(ts_ms)`` -> ``ReplicatedReplacingMergeTree('<zk path>',
    '{replica}', ts_ms)``, using the ``{shard}``/``{replica}`` macros of each server."""
    name, _, args = engine.partition("(")
    args = args.rstrip(")")
    path = f"'/clickhouse/tables/{{shard}}/{database}/{table}', '{{replica}}'"
    return f"Replicated{name}({path}{', ' + args if args else ''})"


def _shard_by(table: Table) -> str:
    if "run_id" in table.column_names:
        return SHARDING_KEY
    if "store_id" in table.column_names:
        return "cityHash64(store_id)"
    return "cityHash64(consumer_id)"  # ingest_progress: one consumer's rows together


def _cluster_tables() -> tuple[Table, ...]:
    return (*TABLES, *AUX_TABLES, *AGGREGATE_TABLES)


def _on_cluster(database: str, cluster: str) -> str:
    _check_identifier("database name", database)
    _check_identifier("cluster name", cluster)
    return f" ON CLUSTER `{cluster}`"


def _cluster_tables_ddl(database: str, cluster: str, on: str) -> list[str]:
    out = [f"CREATE DATABASE IF NOT EXISTS `{database}`{on}"]
    for t in _cluster_tables():
        local = f"{t.name}{LOCAL_SUFFIX}"
        out.append(
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{local}`{on} {t.body()}"
            f" ENGINE = {replicated_engine(t.engine, database, local)}"
            f" ORDER BY ({t.order_by})"
            f" SETTINGS {t.settings(_REPLICATED_SETTINGS)}"
        )
        # The Distributed table copies the columns only (projections live on the shards).
        out.append(
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{t.name}`{on}"
            f" AS `{database}`.`{local}`"
            f" ENGINE = Distributed(`{cluster}`, `{database}`, `{local}`, {_shard_by(t)})"
        )
    return out


def _cluster_views_ddl(database: str, on: str) -> list[str]:
    return [v.ddl(database, suffix=LOCAL_SUFFIX, on_cluster=on) for v in VIEWS]


def _cluster_column_adds(database: str, on: str) -> list[str]:
    out = []
    for suffix in (LOCAL_SUFFIX, ""):
        for t in _cluster_tables():
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS `{c}` {ty}"
                             for c, ty in (*t.columns, *t.computed))
            out.append(f"ALTER TABLE `{database}`.`{t.name}{suffix}`{on} {adds}")
    return out


def _cluster_after_columns(database: str, on: str) -> list[str]:
    """Settings, projections and views' queries of the upgrade (after the columns)."""
    out = [f"ALTER TABLE `{database}`.`{t.name}{LOCAL_SUFFIX}`{on}"
           f" MODIFY SETTING {t.settings(_REPLICATED_SETTINGS)}" for t in _cluster_tables()]
    out.extend(f"ALTER TABLE `{database}`.`{t.name}{LOCAL_SUFFIX}`{on}"
               f" ADD {_if_not_exists(t.projection)}" for t in _cluster_tables() if t.projection)
    out.extend(v.modify_ddl(database, suffix=LOCAL_SUFFIX, on_cluster=on) for v in VIEWS)
    return out


def cluster_ddl(database: str, cluster: str) -> list[str]:
    """The same schema for a ClickHouse cluster: every table as ``<name>_local`` with a
    Replicated* engine on each shard, and ``<name>`` as a Distributed table over them
    (sharded by run). Views run per shard from ``*_local`` into ``*_local``. The consumer
    and the query service use the unsuffixed (Distributed) names unchanged.

    Raises InvalidArgumentError unless both names are plain identifiers.
    """
    on = _on_cluster(database, cluster)
    return [*_cluster_tables_ddl(database, cluster, on), *_cluster_views_ddl(database, on)]


def cluster_add_columns_ddl(database: str, cluster: str) -> list[str]:
    """The upgrade of a cluster made by an older :func:`cluster_ddl`: for every table,
    ``ALTER TABLE ... ON CLUSTER ... ADD COLUMN IF NOT EXISTS`` of every column (computed
    ones included), first on ``<name>_local`` and then on the Distributed ``<name>``
    (which does not follow its local table by itself); ``MODIFY SETTING`` of the
    deduplication window (count and seconds) and the projection setting on each ``_local``
    table; ``ADD PROJECTION IF NOT EXISTS`` of :data:`PROJECTION` on the ``_local`` tables
    that have one; and ``MODIFY QUERY`` of every ``_local`` view (an older view's SELECT
    lacks newer columns). Idempotent: existing
    columns are left as they are (a changed type needs the table recreated). Tables a
    cluster lacks altogether come from :func:`cluster_ddl` (all IF NOT EXISTS): run
    that first (``print_ddl.py --upgrade`` prints both). Pure.

    Raises InvalidArgumentError unless both names are plain identifiers.
    """
    on = _on_cluster(database, cluster)
    return [*_cluster_column_adds(database, on), *_cluster_after_columns(database, on)]


def cluster_upgrade_ddl(database: str, cluster: str) -> list[str]:
    """Everything that brings a cluster to these definitions, safe to run repeatedly:
    :func:`cluster_ddl`'s tables (creates what is missing), the ADD COLUMNs of
    :func:`cluster_add_columns_ddl`, cluster_ddl's views, then the rest of
    cluster_add_columns_ddl. The views come after the columns they read: ClickHouse checks
    a view's SELECT against its source even when the view exists (CREATE ... IF NOT
    EXISTS of metric_summaries_mv fails on a metrics_local without experiment)."""
    on = _on_cluster(database, cluster)
    return [*_cluster_tables_ddl(database, cluster, on), *_cluster_column_adds(database, on),
            *_cluster_views_ddl(database, on), *_cluster_after_columns(database, on)]
