"""Every SQL string the query service runs, against the tables of :mod:`runstream.proto.tables`.

:class:`ClickHouseRepository` implements :class:`~runstream.query.storage.RunRepository`:
connections, error mapping and turning result rows into storage rows and domain objects.
SearchRuns' SQL is compiled by :mod:`runstream.query.search_sql`.

Rules this module keeps:

* Values reach ClickHouse only through server-side binding (``{name:Type}``
  placeholders, ``parameters={...}``); user text never becomes SQL. A query with
  variants is one template whose ``$slots`` are filled with the constant fragments
  below (:func:`runstream.query.sql.fill`), chosen by code, never built from input.
* Reads are deduplicated: tables are ReplacingMergeTree, so rows are read with
  ``FINAL`` or aggregated with ``argMax``/``min``/``max`` over their natural key (all
  idempotent under replayed inserts); metric summaries come from the
  AggregatingMergeTree ``metric_summaries`` through ``argMaxMerge``.
* One query per read, for one run or many (``run_id IN {run_ids:Array(String)}``).
* Table names are unqualified: each connection is opened on the configured database.

An embedded store (``chdb:///path``) is checked before every query: if its directory was
removed or replaced since it was opened (``rm -rf`` under a running ``runstream serve``),
the query fails with UNAVAILABLE naming the path, instead of reading an empty engine.

Thread-safety: :class:`ClickHouseRepository` is safe to share between threads. Each
thread gets its own clickhouse-connect client (a client serializes its calls, and an
HTTP session rejects concurrent queries), created on first use and closed by
:meth:`ClickHouseRepository.close`. Every method blocks on ClickHouse.
"""

from __future__ import annotations

import array
import itertools
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast, overload

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ChClient
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from clickhouse_connect.driver.query import QueryResult

from runstream.proto import tables
from runstream.proto.errors import DeadlineExceededError, RunstreamError, UnavailableError
from runstream.proto.sortkeys import (
    MAX_VALUE_KEY,
    MIN_VALUE_KEY,
    PARAM_FIRST_KEY,
    RANK_NEWEST_KEY,
    TS_SEQ_KEY,
    step_of_high,
    step_of_low,
    value_of_high,
    value_of_low,
)
from runstream.query import deadline
from runstream.query.attempts import AnnotationRow, Segment, StartRow, StatusEvent
from runstream.query.downsample import Bucket
from runstream.query.filters import Clause, OrderBy
from runstream.query.models import (
    Artifact,
    CodeVersion,
    Drop,
    Environment,
    ExperimentInfo,
    FirstNonFinite,
    Gpu,
    IngestPartition,
    Input,
    LineageMatch,
    MetricSummary,
    Package,
    Param,
    ParamConflict,
    RankDeparture,
    RankNonFinite,
    Tag,
)
from runstream.query.ranks import Distribution
from runstream.query.search_sql import ARCHIVED_RUNS, SCOPE, compile_search, keyset_value
from runstream.query.sql import fill
from runstream.query.storage import (
    AccountRow,
    EnvelopeRows,
    PointRows,
    RankRow,
    SearchRow,
    StatusRow,
    StepRange,
)
from runstream.query.tokens import PointCursor

T = TypeVar("T")

# ClickHouse errors (by name) that mean "nothing was ever written here", not a broken query.
_NOT_CREATED = frozenset({"UNKNOWN_TABLE", "UNKNOWN_DATABASE"})
# ... and those that mean the query ran out of its time.
_PAST_DEADLINE = frozenset({"TIMEOUT_EXCEEDED", "TOO_SLOW", "QUERY_WAS_CANCELLED"})
#: Every query runs read-only (readonly=2 still lets a query set its own limits) and is
#: capped at this many seconds, or the RPC's remaining deadline if sooner.
DEFAULT_MAX_EXECUTION_S = 60.0
_READ_SETTINGS: Mapping[str, Any] = {"readonly": 2}
#: A streamed read (ExportMetricHistory) runs on one thread: it reads one series in order
#: and is paced by the client anyway; more threads only multiply its buffers (16 parallel
#: exports held about 50 MB each with the default threads).
_STREAM_SETTINGS: Mapping[str, Any] = {"max_threads": 1}

# --- SQL, in the order the methods below use it -----------------------------------------

RUN_EXISTS_SQL = """
SELECT 1 FROM (
    (SELECT 1 FROM runs WHERE run_id = {run_id:String} LIMIT 1)
    UNION ALL (SELECT 1 FROM run_status WHERE run_id = {run_id:String} LIMIT 1)
    UNION ALL (SELECT 1 FROM metrics WHERE run_id = {run_id:String} LIMIT 1)
) LIMIT 1
"""

# What a RunStarted records, past the (run_id, rank) key and the envelope.
_RUN_STARTED = tuple(c for c in tables.RUNS.column_names
                     if c not in ("run_id", "rank", "producer_id", "seq", "ts_ms"))
# The latest RunStarted of each rank (argMax by ts_ms over the (run_id, rank) key), and
# its first one: a restarted rank keeps its original start time.
RANK_ROWS_SQL = fill("""
SELECT run_id, rank, argMax(tuple($columns), ts_ms) AS latest, min(ts_ms) AS start_ms
FROM runs
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, rank
ORDER BY run_id, rank
""", columns=", ".join(_RUN_STARTED))

# Latest status per (run, rank): argMax over (ts_ms, seq); duplicates of a status row
# share both, so replays change nothing.
STATUSES_SQL = fill("""
WITH $ts_seq AS ts_seq
SELECT run_id, rank,
    argMax(experiment, ts_seq), argMax(status, ts_seq), argMax(error, ts_seq),
    min(ts_ms), max(ts_ms)
FROM run_status
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, rank
ORDER BY run_id, rank
""", ts_seq=TS_SEQ_KEY)

# One value per key: the lowest rank's (rank 0 when it logged the key), and of its values
# the first logged (params are immutable: later values are conflicts, below).
PARAMS_SQL = fill("""
SELECT run_id, key, argMin(value, $first), argMin(type, $first)
FROM param_values FINAL
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, key
ORDER BY run_id, key
""", first=PARAM_FIRST_KEY)

# Every value of the (run, key, rank)s that have more than one, first value first.
PARAM_CONFLICTS_SQL = """
SELECT run_id, key, rank, value, type, producer_id, ts_ms
FROM param_values FINAL
WHERE run_id IN {run_ids:Array(String)} AND (run_id, key, rank) IN (
    SELECT run_id, key, rank FROM param_values FINAL
    WHERE run_id IN {run_ids:Array(String)}
    GROUP BY run_id, key, rank HAVING count() > 1)
ORDER BY run_id, key, rank, ts_ms, producer_id, seq
"""

# Each producer's account, from its RunFinished (the run's own status rows that are not
# RUNNING; the consumer's own rows carry none): the row with its highest seq.
ACCOUNTS_SQL = f"""
SELECT run_id, rank, producer_id, argMax(points_logged, seq), argMax(drop_reasons, seq),
    argMax(drop_events, seq), argMax(drop_points, seq)
FROM run_status FINAL
WHERE run_id IN {{run_ids:Array(String)}} AND status != 'RUNNING'
    AND producer_id != '{tables.CONSUMER_PRODUCER_ID}'
GROUP BY run_id, rank, producer_id
ORDER BY run_id, rank, producer_id
"""  # noqa: S608 (a constant producer id)

TAGS_SQL = """
SELECT run_id, key, value
FROM tags FINAL
WHERE run_id IN {run_ids:Array(String)}
ORDER BY run_id, key
"""

# Artifacts are keyed (name, rank): identical content logged by several ranks is
# listed once; ranks that logged different content under one name are all listed.
ARTIFACTS_SQL = """
SELECT name, uri, size_bytes, sha256
FROM artifacts FINAL
WHERE run_id = {run_id:String}
GROUP BY name, uri, size_bytes, sha256
ORDER BY name, min(rank), uri
"""

INPUTS_SQL = """
SELECT run_id, name, uri, digest, role
FROM inputs FINAL
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, name, uri, digest, role
ORDER BY run_id, name, uri, min(rank), role
"""

# Merging the per-rank states over all ranks: argMax picks the value at the highest
# (step, ts_ms) of any rank. $keys: all keys, or only some.
SUMMARIES_SQL = """
SELECT run_id, key, argMaxMerge(last), max(last_step), min(min), max(max)
FROM metric_summaries
WHERE run_id IN {run_ids:Array(String)}$keys
GROUP BY run_id, key
ORDER BY run_id, key
"""
_SOME_KEYS = " AND key IN {keys:Array(String)}"

# The lowest step at which each run reached its min and its max (NaN never wins).
BEST_STEPS_SQL = """
SELECT run_id, key,
    argMin(step, (value, step)), argMax(step, (value, -step))
FROM metrics
WHERE run_id IN {run_ids:Array(String)} AND key IN {keys:Array(String)} AND NOT isNaN(value)
GROUP BY run_id, key
"""

# Points in (rank, step, ts_ms, producer_id, seq, idx) order; FINAL collapses replays
# (same producer_id, seq, idx). The redundant `rank >=` lets the primary key prune.
_POINTS = """
SELECT rank, step, value, ts_ms, producer_id, seq, idx
FROM metrics FINAL
WHERE $run AND key = {key:String}$ranks$steps$after
ORDER BY rank, step, ts_ms, producer_id, seq, idx
LIMIT {limit:UInt32}
"""
_SOME_RANKS = " AND rank IN {ranks:Array(UInt32)}"
# A step range (GetMetricHistory's start_step / end_step, inclusive).
_STEP_RANGE = " AND step >= {start_step:Int64} AND step <= {end_step:Int64}"
_POINTS_AFTER = """
    AND rank >= {after_rank:UInt32}
    AND (rank, step, ts_ms, producer_id, seq, idx) > ({after_rank:UInt32}, {after_step:Int64},
        {after_ts_ms:Int64}, {after_producer_id:String}, {after_seq:UInt64}, {after_idx:UInt32})"""
# One run's points, or a fork's history: the steps in (after, to] of each run of the
# chain (runstream.query.attempts.fork_segments; each run once, steps disjoint).
_ONE_RUN = "run_id = {run_id:String}"
#: The runs of a fork's segments (_SEGMENTS without their steps).
_SEGMENT_RUNS = "run_id IN {seg_runs:Array(String)}"
_SEGMENTS = _SEGMENT_RUNS + """
    AND step > transform(toString(run_id), {seg_runs:Array(String)}, {seg_after:Array(Int64)},
        toInt64(0))
    AND step <= transform(toString(run_id), {seg_runs:Array(String)}, {seg_to:Array(Int64)},
        toInt64(0))"""
#: (rank filter?, after a cursor?) -> the query.
POINTS_SQL: Mapping[tuple[bool, bool], str] = {
    (some_ranks, after): fill(_POINTS, run=_ONE_RUN, ranks=_SOME_RANKS if some_ranks else "",
                              after=_POINTS_AFTER if after else "", steps="")
    for some_ranks in (False, True)
    for after in (False, True)
}
#: The same over a fork's segments.
FORK_POINTS_SQL: Mapping[tuple[bool, bool], str] = {
    (some_ranks, after): fill(_POINTS, run=_SEGMENTS, ranks=_SOME_RANKS if some_ranks else "",
                              after=_POINTS_AFTER if after else "", steps="")
    for some_ranks in (False, True)
    for after in (False, True)
}
# ExportMetricHistory: the same points in the same order, every one, read as a stream
# (the order is the table's sorting key, so ClickHouse reads in order and never holds
# the whole series). Only the columns sent.
_EXPORT_POINTS = """
SELECT rank, step, value, ts_ms
FROM metrics FINAL
WHERE $run AND key = {key:String}$ranks
ORDER BY rank, step, ts_ms, producer_id, seq, idx
"""
#: rank filter? -> the query.
EXPORT_POINTS_SQL: Mapping[bool, str] = {
    some_ranks: fill(_EXPORT_POINTS, run=_ONE_RUN, ranks=_SOME_RANKS if some_ranks else "")
    for some_ranks in (False, True)
}
FORK_EXPORT_POINTS_SQL: Mapping[bool, str] = {
    some_ranks: fill(_EXPORT_POINTS, run=_SEGMENTS, ranks=_SOME_RANKS if some_ranks else "")
    for some_ranks in (False, True)
}

# A series is one key of one run, all ranks or some ($ranks); aggregated, per (rank,
# step) each rank's latest value at the step (idempotent under replays), then $agg
# across ranks, as rank 0.
_SERIES_WHERE = "$run AND key = {key:String}$ranks$steps"
# Each rank's latest value at each step ($where: the series' points) as (rank, step, v, t).
# Almost every rank logs each step once, and its points are read as they are; only the
# ranks that logged some step more than once (a replay not merged away yet, or a value
# logged again) are grouped per (rank, step) to keep the latest point (argMax by ts_ms,
# seq, idx). {repeated} holds those ranks' keys ($rank_key: the rank, or series and rank),
# found first by REPEATED_RANKS_SQL in the same request (a step logged again between the
# two reads counts twice until the next read). Grouping every rank per (rank, step) cost
# 4-5 s against 0.7-0.9 s this way and 0.25 s for one scan, at 1,024 ranks x 10k steps
# (timed by hand in chdb; deploy/bench/bench_growth.py's ranks table measures it).
_RANK_STEP_VALUES = """
        SELECT $cols rank, step, value AS v, ts_ms AS t
        FROM metrics
        WHERE $where AND $rank_key NOT IN {repeated:Array(UInt64)}
        UNION ALL
        SELECT $cols rank, step, argMax(value, (ts_ms, seq, idx)) AS v, max(ts_ms) AS t
        FROM metrics
        WHERE $where AND $rank_key IN {repeated:Array(UInt64)}
        GROUP BY $group rank, step"""
#: The ranks ($rank_key) of the series matching $series (run_id, key and rank conditions)
#: that may have logged a step more than once, from what the metric_summaries view counted
#: at insert (tables.METRIC_SUMMARIES): a (run, key, rank) whose points outnumber its
#: distinct steps, or with rows written before those columns. Exact in the safe direction:
#: a rank left out logged each of its steps once (every point inserted is counted in
#: points and its step is in the bitmap); a rank listed may have none left (a replay that
#: a merge has collapsed since still counts twice), so REPEATED_RANKS_SQL decides on its
#: points. Grouped by the table's key first: a fork's segments hold disjoint steps of each
#: run, so a rank clean in each run is clean in their union. At 1,024 ranks x 10k steps
#: this merges ~1,024 small states, where the check on the points reads all 10M steps.
#: Read at every request, never kept: a step logged again while a request runs (or whose
#: summaries row lands just after its points) counts twice in that request only.
SUSPECT_RANKS_SQL = """
SELECT DISTINCT $rank_key AS k FROM metric_summaries
WHERE $series
GROUP BY run_id, key, rank
HAVING min(counted) = 0 OR sum(points) != groupBitmapMerge(steps)
"""
#: The ranks ($rank_key) among the suspects of the points matching $where with a step
#: logged more than once: more points than distinct steps, counted exactly by a bitmap of
#: the steps (the cast to UInt64 is one-to-one), half the cost of uniqExact's hash set: 215
#: against 402 ms for all ranks at 1,024 ranks x 10k steps (bench_growth's fill,
#: alternated by hand in chdb).
REPEATED_RANKS_SQL = """
SELECT $rank_key AS k FROM metrics
WHERE $where AND $rank_key IN {suspects:Array(UInt64)}
GROUP BY k
HAVING count() != groupBitmap(toUInt64(step))
"""
_RANK_KEY = "toUInt64(rank)"
#: The metrics table's identity and engine, and the names of its parts that hold the
#: points matching $where. Parts are immutable and a table never reuses a part's name (an
#: insert, a merge and a mutation each make a new one; a table made again has a new uuid),
#: so while these are the same, so are those points and what REPEATED_RANKS_SQL finds in
#: them: it is read again only when they change. (This read takes ~15 ms at 1,024 ranks x
#: 10k steps, and the check on the points of every rank 160-215 ms, as it is for a series
#: of an older store, whose ranks are all suspects; SUSPECT_RANKS_SQL takes ~8 ms, so it
#: is read at every request and this only when it lists suspects.) Only for a local
#: table: over a Distributed one, _part is each shard's name, and two shards' parts may
#: share one, so a new part could leave the set the same; once a repository has seen a
#: Distributed metrics table it no longer reads this.
SERIES_PARTS_SQL = """
SELECT 0, toString(uuid), engine FROM system.tables
WHERE database = {database:String} AND name = 'metrics'
UNION ALL
SELECT DISTINCT 1, _part, '' FROM metrics WHERE $where
"""
#: Checks kept per repository (least recently used dropped first).
REPEATED_MEMO_SIZE = 512
_AGGREGATED = fill("""(
    SELECT toUInt32(0) AS rank, step, $agg AS value, max(t) AS ts_ms FROM ($rank_steps
    )
    GROUP BY step
)""", agg="$agg", rank_steps=fill(_RANK_STEP_VALUES, cols="", group="", where="$where",
                                 rank_key=_RANK_KEY))

# A mean that does not overflow: avg sums in Float64, so two values of 1.797e308 gave inf.
# When the plain avg is not finite, the values are averaged scaled down by 2^-600 (exact)
# and scaled back up; genuine inf/NaN inputs stay inf/NaN that way too, and values that
# do not overflow keep their plain avg bit for bit. materialize() stops ClickHouse from
# taking the constant factor out of avg (optimize_arithmetic_operations_in_aggregate_
# functions), which would bring the overflow back.
def stable_avg(x: str) -> str:
    """SQL of the mean of the Float64 expression ``x`` over a group, without overflow."""
    return (f"if(isFinite(avg({x})), avg({x}),"
            f" avg({x} * materialize(exp2(-600))) * exp2(600))")


_AGG_FUNCS = {"mean": stable_avg("v"), "min": "min(v)", "max": "max(v)"}
_AVG_VALUE = stable_avg("value")

RANGE_SQL = """
SELECT min(step), max(step), count()
FROM $source
WHERE $where
"""

# One row per (rank, bucket): its extremes with where they were, its centroid, first and
# last. The extremes' tie-break (lowest step among equal values) is one packed key: argMin
# over it, with plain columns as payload, is several times faster than over (value, step)
# tuples with tuple payloads. NaN never gets here (filtered).
BUCKETS_SQL = """
WITH $min_key AS min_key, $max_key AS max_key
SELECT rank, intDiv(step - {lo:Int64}, {width:Int64}) AS bucket, count() AS n,
    min(value) AS lo_v, max(value) AS hi_v,
    argMin(step, min_key), argMin(value, min_key), argMin(ts_ms, min_key),
    argMax(step, max_key), argMax(value, max_key), argMax(ts_ms, max_key),
    avg(toFloat64(step)) AS avg_step, $avg_value AS avg_v,
    min(step), argMin(value, step), argMin(ts_ms, step),
    max(step), argMax(value, step), argMax(ts_ms, step)
FROM $source
WHERE $where
GROUP BY rank, bucket
ORDER BY rank, bucket
"""

# The same ranges and buckets read from metric_blocks (tables.METRIC_BLOCKS) instead of
# the points, for a series of one run (no fork, no aggregate across ranks; $blocks:
# _blocks_from) and a bucket grid of whole blocks (each series' first step and width
# multiples of BLOCK_STEPS, as downsample.bucket_grid makes them): the blocks' states
# merged per bucket, the columns of BUCKETS_SQL (and MULTI_BUCKETS_SQL with $series), the
# steps and values decoded from the blocks' packed keys (lo_v / hi_v are the extremes'
# values: a zero's sign is the only way they can differ from min(value) / max(value)).
BLOCK_RANGE_SQL = fill("""
SELECT $series AS s, $first_step, $last_step, sum(n)
FROM $blocks
GROUP BY s
""", series="$series", blocks="$blocks", first_step=step_of_high("min(first_key)"),
    last_step=step_of_high("max(last_key)"))
BLOCK_BUCKETS_SQL = fill("""
SELECT s, rank, bucket, cnt, $min_v, $max_v,
    $min_s, $min_v, min_t, $max_s, $max_v, max_t,
    ss / cnt, if(isFinite(sv / cnt), sv / cnt, sc / cnt * exp2(600)),
    $first_s, $first_v, first_t, $last_s, $last_v, last_t
FROM (
    SELECT s, rank, bucket, sum(n) AS cnt, sum(sum_step) AS ss, sum(sum_value) AS sv,
        sum(sum_scaled) AS sc,
        min(min_key) AS mk, argMinMerge(min_ts) AS min_t,
        max(max_key) AS xk, argMaxMerge(max_ts) AS max_t,
        min(first_key) AS fk, argMinMerge(first_ts) AS first_t,
        max(last_key) AS lk, argMaxMerge(last_ts) AS last_t
    FROM (
        SELECT *, $series AS s,
            intDiv(block * $block - arrayElement({series_lo:Array(Int64)}, s + 1),
                arrayElement({series_width:Array(Int64)}, s + 1)) AS bucket
        FROM $blocks
    )
    GROUP BY s, rank, bucket
)
ORDER BY s, rank, bucket
""", series="$series", blocks="$blocks", block=str(tables.BLOCK_STEPS),
    min_v=value_of_high("mk"), min_s=step_of_low("mk"), max_v=value_of_high("xk"),
    max_s=step_of_low("xk", negated=True), first_s=step_of_high("fk"),
    first_v=value_of_low("fk"), last_s=step_of_high("lk"), last_v=value_of_low("lk"))
_ONE_SERIES = "toUInt32(0)"


def _blocks_serve(aggregate: str, segments: Sequence[Segment]) -> bool:
    """Whether metric_blocks holds what a series' range and buckets read
    (:func:`tables.series_block_steps`; a step range reads the blocks inside it and the
    points of the blocks it cuts: :func:`_blocks_from`)."""
    return tables.series_block_steps(aggregate, bool(segments)) > 0


# The blocks of a step range: those inside it, and the points of the (at most two) blocks
# it cuts aggregated into blocks as the view aggregates them. {full_lo} / {full_hi}: the
# first and last block inside the range (:func:`_add_block_steps`).
_RANGE_BLOCKS = fill("""(
    SELECT $columns FROM metric_blocks
    WHERE $where AND block >= {full_lo:Int64} AND block <= {full_hi:Int64}
    UNION ALL
    $edges
)""", columns=", ".join(tables.METRIC_BLOCKS.column_names), where="$where",
    edges=tables.blocks_select(fill("""(
        SELECT run_id, key, rank, step, value, ts_ms FROM metrics
        WHERE $where$steps AND (step < {full_lo:Int64} * $block
            OR step >= ({full_hi:Int64} + 1) * $block))""", where="$where",
        steps=_STEP_RANGE, block=str(tables.BLOCK_STEPS))))


def _blocks_from(where: str, steps: StepRange | None) -> str:
    """The $blocks of BLOCK_RANGE_SQL / BLOCK_BUCKETS_SQL: the blocks of the series in
    ``where``, every step or only ``steps``."""
    if steps is None:
        return f"metric_blocks WHERE {where}"
    return fill(_RANGE_BLOCKS, where=where)


def _add_block_steps(params: dict[str, Any], steps: StepRange | None) -> None:
    """Bind a step range and the blocks wholly inside it."""
    if steps is not None:
        _add_steps(params, steps)
        start, end = steps
        params["full_lo"] = -(-start // tables.BLOCK_STEPS)
        params["full_hi"] = (end + 1) // tables.BLOCK_STEPS - 1


def _whole_blocks(lo: int, width: int) -> bool:
    """Whether buckets of ``width`` steps from ``lo`` are each made of whole blocks."""
    return lo >= 0 and lo % tables.BLOCK_STEPS == 0 and width % tables.BLOCK_STEPS == 0


AGGREGATE_PAGE_SQL = """
SELECT step, value, ts_ms FROM $source
WHERE step > {after_step:Int64}
ORDER BY step
LIMIT {limit:UInt32}
"""
# ExportMetricHistory with an aggregate: every aggregated step, as a stream.
AGGREGATE_EXPORT_SQL = """
SELECT step, value, ts_ms FROM $source
ORDER BY step
"""

SERIES_TIPS_SQL = """
SELECT key, rank, max(step) FROM metrics
WHERE run_id = {run_id:String}
GROUP BY key, rank
"""

# FollowRun: points with a step above their series' cursor ($after).
NEW_POINTS_SQL = """
SELECT key, rank, step, value, ts_ms
FROM metrics FINAL
WHERE run_id = {run_id:String}$keys$ranks
    AND $after
ORDER BY step, key, rank, ts_ms, producer_id, seq, idx
LIMIT {limit:UInt32}
"""
_FOLLOWED_KEYS = " AND key IN {keys:Array(String)}"
_AFTER_FROM_STEP = "step > {from_step:Int64}"
# Per (key, rank) cursors: a series not seen yet starts after from_step.
_AFTER_CURSORS = """step > transform(concat(toString(key), '\\n', toString(rank)),
        {cursor_series:Array(String)}, {cursor_steps:Array(Int64)}, {from_step:Int64})"""
# Points stored per (rank, producer): GetRun sums them per rank, FollowRun matches them
# against each producer's account. metric_counts holds one row per (event, key), replays
# collapsed, and is inserted after the batch's metrics rows: counted = readable.
PRODUCER_POINTS_SQL = """
SELECT rank, producer_id, sum(points)
FROM metric_counts FINAL
WHERE run_id = {run_id:String}
GROUP BY rank, producer_id
"""

# Runs counted as SearchRuns lists them by default: archived ones left out (an experiment
# whose runs are all archived is listed with 0 runs); the last start is over every run.
EXPERIMENTS_SQL = fill("""
SELECT experiment, countIf(run_id NOT IN ($archived)) AS runs, max(start_ms) FROM (
    WITH $rank_newest AS rank_newest
    SELECT run_id, argMin(experiment, rank_newest) AS experiment, min(ts_ms) AS start_ms
    FROM runs
    GROUP BY run_id
)
GROUP BY experiment
ORDER BY experiment
LIMIT {limit:UInt32}
""", rank_newest=RANK_NEWEST_KEY, archived=ARCHIVED_RUNS)

# The latest row per (consumer, source, topic, partition), every column of the table.
_INGEST_KEY = tuple(c.strip() for c in tables.INGEST_PROGRESS.order_by.split(","))
INGEST_SQL = fill("""
SELECT $columns
FROM ingest_progress
WHERE ts_ms >= {since_ms:Int64}
GROUP BY $key
ORDER BY $key
""", key=", ".join(_INGEST_KEY), columns=", ".join(
    c if c in _INGEST_KEY else "max(ts_ms)" if c == "ts_ms" else f"argMax({c}, ts_ms)"
    for c in tables.INGEST_PROGRESS.column_names
))

# --- attempts, forks, annotations, lineage (runstream.query.attempts) ----------------------

# Every RunStarted of these runs (FINAL: a replay is one row), in start order.
RUN_STARTS_SQL = """
SELECT run_id, rank, world_size, local_rank, node, restart, resume, producer_id, seq, ts_ms
FROM run_starts FINAL
WHERE run_id IN {run_ids:Array(String)}
ORDER BY run_id, ts_ms, rank, producer_id, seq
"""

# Every status row of these runs, not only each rank's latest: attempts need them all.
STATUS_EVENTS_SQL = """
SELECT run_id, rank, experiment, status, error, producer_id, seq, ts_ms
FROM run_status FINAL
WHERE run_id IN {run_ids:Array(String)}
ORDER BY run_id, ts_ms, seq
"""

# Each run's fork: the lowest rank's newest RunStarted that names one (a resumed fork
# need not repeat it); "" / 0 when none does.
FORKS_SQL = fill("""
WITH $rank_newest AS rank_newest
SELECT run_id, argMaxIf(fork_run_id, bitNot(rank_newest), fork_run_id != ''),
    argMaxIf(fork_step, bitNot(rank_newest), fork_run_id != '')
FROM runs
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id
""", rank_newest=RANK_NEWEST_KEY)

ANNOTATIONS_SQL = """
SELECT run_id, tag_keys, tag_values, note, archive, user, host, ts_ms
FROM annotations FINAL
WHERE run_id IN {run_ids:Array(String)}
ORDER BY run_id, ts_ms, producer_id, seq
"""

# How many runs the experiments searched hold, and the store. Restricting a search to an
# experiment's runs (search_sql.SCOPE) makes it follow the experiment's size, but costs
# ~1.8x when the experiment is the whole store (a set of every run id, probed in every
# subquery) and about breaks even at a quarter of it (deploy/bench/bench_growth.py):
# SearchRuns scopes when the experiments hold at most 1/SCOPE_SHARE of the runs. Counts
# of run_experiments (replays not yet merged count twice: an estimate is enough).
SCOPE_SIZE_SQL = """SELECT
    (SELECT count() FROM run_experiments WHERE experiment IN {experiments:Array(String)}),
    (SELECT count() FROM run_experiments)"""
SCOPE_SHARE = 10

# Which of these runs are archived (as search_sql.ARCHIVED_RUNS decides, for fewer runs).
ARCHIVED_SQL = """
SELECT run_id FROM annotations
WHERE run_id IN {run_ids:Array(String)} AND archive != ''
GROUP BY run_id HAVING argMax(archive, tuple(ts_ms, producer_id, seq)) = 'ARCHIVE'
"""

# GetLineage: runs whose artifacts have this content (a name logged by several ranks:
# once, with its lowest rank and first time), and runs that used it as an input.
PRODUCED_BY_SQL = """
SELECT run_id, name, min(rank), uri, size_bytes, min(ts_ms) AS first_ms
FROM artifacts FINAL
WHERE sha256 = {sha256:String}
GROUP BY run_id, name, uri, size_bytes
ORDER BY first_ms, run_id, name
"""
USED_BY_SQL = """
SELECT run_id, name, min(rank), uri, min(ts_ms) AS first_ms
FROM inputs FINAL
WHERE digest IN {digests:Array(String)}
GROUP BY run_id, name, uri
ORDER BY first_ms, run_id, name
"""

# CompareRuns of forks: per (fork, key) the summary of its whole history, read from the
# points of each run of its chain within its segment (owners: the fork each segment
# belongs to; one point may be in several forks' histories). As SUMMARIES_SQL and
# BEST_STEPS_SQL give for a run's own points: last at the highest (step, ts_ms), min,
# max, and the lowest step at the min and at the max (NaN never wins those).
FORK_SUMMARIES_SQL = """
SELECT owner, key, argMax(value, tuple(step, ts_ms)), max(step), min(value), max(value),
    argMinIf(step, tuple(value, step), NOT isNaN(value)),
    argMaxIf(step, tuple(value, -step), NOT isNaN(value))
FROM (
    SELECT arrayJoin(arrayFilter(
            (seg_owner, seg_run, seg_after, seg_to) -> seg_run = toString(run_id)
                AND step > seg_after AND step <= seg_to,
            {owners:Array(String)}, {seg_runs:Array(String)}, {seg_after:Array(Int64)},
            {seg_to:Array(Int64)})) AS owner,
        key, step, value, ts_ms
    FROM metrics
    WHERE run_id IN {seg_runs:Array(String)}$keys
)
GROUP BY owner, key
ORDER BY owner, key
"""


# --- GetRankHealth (runstream.query.ranks) ---------------------------------------------
# Per (rank, key) of the asked keys, the finite values' count, p50/p95 and maximum; FINAL
# collapses replayed points (same producer_id, seq, idx). quantiles() keeps at most 8192
# values per group (exact below that), so a long run costs bounded memory.
RANK_VALUE_STATS_SQL = """
SELECT rank, key, countIf(isFinite(value)),
    quantilesIf(0.5, 0.95)(value, isFinite(value)), maxIf(value, isFinite(value))
FROM metrics FINAL
WHERE run_id = {run_id:String} AND key IN {keys:Array(String)} AND ts_ms >= {since_ms:Int64}
GROUP BY rank, key
ORDER BY rank, key
"""

# Per (rank, step) of the key: the rank's first timestamp at the step (min: idempotent
# under replays), kept for the windows over the step (the median over the ranks that
# logged it, their count) that GetRankHealth and GetRankLag compute the lag with.
FIRST_TS_SQL = """
SELECT rank, step, min(ts_ms) AS first_ms
FROM metrics
WHERE run_id = {run_id:String} AND key = {key:String} AND ts_ms >= {since_ms:Int64}
GROUP BY rank, step
"""

# Lag: per step of the key, each rank's first timestamp minus the median over the ranks
# that logged the step, then per rank its percentiles over the steps that two ranks or
# more logged.
RANK_LAGS_SQL = fill("""
SELECT rank, count(), quantiles(0.5, 0.95)(lag_ms), max(lag_ms) FROM (
    SELECT rank, first_ms - median(first_ms) OVER (PARTITION BY step) AS lag_ms,
        count() OVER (PARTITION BY step) AS ranks_at_step
    FROM ($first_ts)
)
WHERE ranks_at_step > 1
GROUP BY rank
ORDER BY rank
""", first_ts=FIRST_TS_SQL)

# The first NaN/inf of every (rank, key) of the run: the lowest step holding one and
# its value (min/argMin: idempotent under replays).
FIRST_NON_FINITE_SQL = """
SELECT rank, key, min(step) AS first_step, argMin(value, tuple(step, ts_ms, seq, idx))
FROM metrics
WHERE run_id = {run_id:String} AND ts_ms >= {since_ms:Int64} AND NOT isFinite(value)
GROUP BY rank, key
ORDER BY rank, first_step, key
LIMIT {limit:UInt32}
"""
#: At most this many (rank, key) first non-finite values per GetRankHealth.
MAX_NON_FINITE = 10_000

# Last sign of life per rank: heartbeats, points and the run's own status rows.
RANK_LAST_SEEN_SQL = """
SELECT rank, max(last_ms)
FROM rank_activity
WHERE run_id = {run_id:String}
GROUP BY rank
"""

# The key with the most points (system/* metrics left out: their steps count samples,
# not training steps), for the lag when the step-time key was not logged.
BUSIEST_KEY_SQL = """
SELECT key, sum(points) AS n
FROM metric_counts FINAL
WHERE run_id = {run_id:String} AND ts_ms >= {since_ms:Int64} AND NOT startsWith(key, 'system/')
GROUP BY key
ORDER BY n DESC, key
LIMIT 1
"""


# --- the web UI's reads (GetMetricHistories, GetRankEnvelope, GetRankLag, SearchRuns
# columns, ListRunKeys) ----------------------------------------------------------------------

# Several (run, key) series at once: the same points and aggregates as _SERIES_WHERE and
# _AGGREGATED, grouped by series too: run i's key j is series i * n_keys + j (run_index and
# key_index are 0, 1, ...: transform runs on the dictionary of a LowCardinality column, so
# numbering the rows costs far less than grouping by the two strings).
_MULTI_WHERE = "run_id IN {run_ids:Array(String)} AND key IN {keys:Array(String)}$ranks$steps"
_SERIES_INDEX = """(transform(run_id, {run_ids:Array(String)}, {run_index:Array(UInt32)},
        toUInt32(0)) * {n_keys:UInt32}
    + transform(key, {keys:Array(String)}, {key_index:Array(UInt32)}, toUInt32(0)))"""
#: A series' rank as one number (series << 32 | rank), for {repeated}.
_MULTI_RANK_KEY = fill("bitOr(bitShiftLeft(toUInt64($series), 32), toUInt64(rank))",
                      series=_SERIES_INDEX)
_MULTI_AGGREGATED = fill("""(
    SELECT series, toUInt32(0) AS rank, step, $agg AS value, max(t) AS ts_ms FROM ($rank_steps
    )
    GROUP BY series, step
)""", agg="$agg", rank_steps=fill(_RANK_STEP_VALUES, cols="$series AS series,",
                                 group="series,", where="$where", rank_key=_MULTI_RANK_KEY))
MULTI_RANGE_SQL = """
SELECT $series AS s, min(step) AS lo, max(step) AS hi, count() AS n
FROM $source
WHERE $where
GROUP BY s
"""
# BUCKETS_SQL over several series, each with its own first step and width (arrays indexed
# by series + 1).
MULTI_BUCKETS_SQL = """
WITH $min_key AS min_key, $max_key AS max_key
SELECT $series AS s, rank,
    intDiv(step - arrayElement({series_lo:Array(Int64)}, s + 1),
        arrayElement({series_width:Array(Int64)}, s + 1)) AS bucket,
    count() AS n,
    min(value) AS lo_v, max(value) AS hi_v,
    argMin(step, min_key), argMin(value, min_key), argMin(ts_ms, min_key),
    argMax(step, max_key), argMax(value, max_key), argMax(ts_ms, max_key),
    avg(toFloat64(step)) AS avg_step, $avg_value AS avg_v,
    min(step), argMin(value, step), argMin(ts_ms, step),
    max(step), argMax(value, step), argMax(ts_ms, step)
FROM $source
WHERE $where
GROUP BY s, rank, bucket
ORDER BY s, rank, bucket
"""
# Which of these runs exist (as RUN_EXISTS_SQL decides for one).
RUNS_EXISTING_SQL = """
SELECT run_id FROM (
    SELECT run_id FROM runs WHERE run_id IN {run_ids:Array(String)}
    UNION ALL SELECT run_id FROM run_status WHERE run_id IN {run_ids:Array(String)}
    UNION ALL SELECT toString(run_id) AS run_id FROM metrics
        WHERE run_id IN {run_ids:Array(String)}
)
GROUP BY run_id
"""

# Each rank's latest value at each step of one key (as _AGGREGATED takes it).
_RANK_STEPS_WHERE = "run_id = {run_id:String} AND key = {key:String}$steps"
_RANK_STEPS = fill("($rank_steps\n)", rank_steps=fill(
    _RANK_STEP_VALUES, cols="", group="", where=_RANK_STEPS_WHERE, rank_key=_RANK_KEY))
# The envelope per step (mean, min, max over ranks and the lowest rank at each extreme),
# then per bucket of steps (width as downsample.bucket_width: ceil(span / max_points)):
# mean of the means, min of the mins and max of the maxes with the rank and first step of
# each, the most ranks at a step, and the steps in all.
ENVELOPE_SQL = """
SELECT min(step), avg(mean_v), min(min_v), argMin(min_r, tuple(min_v, step)),
    max(max_v), argMax(max_r, tuple(max_v, -step)), max(n), min(total)
FROM (
    SELECT step, mean_v, min_v, min_r, max_v, max_r, n, count() OVER () AS total,
        intDiv(step - min(step) OVER (), greatest(toInt64(1), intDiv(
            max(step) OVER () - min(step) OVER () + {max_points:Int64}, {max_points:Int64})))
            AS bucket
    FROM (
        SELECT step, $mean AS mean_v, min(v) AS min_v, argMin(rank, tuple(v, rank)) AS min_r,
            max(v) AS max_v, argMax(rank, tuple(v, -toInt64(rank))) AS max_r, count() AS n
        FROM $rank_steps
        WHERE isFinite(v)
        GROUP BY step
    )
)
GROUP BY bucket
ORDER BY bucket
"""
#: A rank departs at a step (of 3 ranks or more) when |v - median| is over
#: DEPARTURE_MADS x the larger of the step's median absolute deviation across ranks and
#: the median of that over the series (the run's usual spread: one noisy step's small MAD
#: does not count), with a floor of 1e-6 x |median| (and 1e-12): for DEPARTURE_RUN of its
#: steps in a row. Its departure is the first step of its first such run.
DEPARTURE_MADS = 6
DEPARTURE_RUN = 3
# Per rank, in one pass: at how many steps (of two ranks or more) it holds the min and the
# max, and its departure. Gaps and islands: a flagged row's island is its number among the
# rank's steps (rn) less the flagged rows up to it, constant along consecutive steps;
# unflagged rows are island -1.
RANK_SPREAD_SQL = f"""
SELECT rank, sum(lo_n), sum(hi_n), countIf(departs), minIf(at, departs),
    argMinIf(at_v, at, departs), argMinIf(at_med, at, departs)
FROM (
    SELECT rank, island, countIf(is_lo) AS lo_n, countIf(is_hi) AS hi_n,
        island >= 0 AND count() >= {DEPARTURE_RUN} AS departs,
        min(step) AS at, argMin(v, step) AS at_v, argMin(med, step) AS at_med
    FROM (
        SELECT rank, step, v, med, is_lo, is_hi,
            if(flag, rn - sum(toInt64(flag)) OVER (PARTITION BY rank ORDER BY step),
               toInt64(-1)) AS island
        FROM (
            SELECT rank, step, v, med, toInt64(rn) AS rn, n > 1 AND v = lo AS is_lo,
                n > 1 AND v = hi AS is_hi,
                n >= 3 AND abs(v - med) > {DEPARTURE_MADS} * greatest(mad,
                    median(mad) OVER (), 0.000001 * abs(med), 0.000000000001) AS flag
            FROM (
                SELECT rank, step, v, med, rn, n, lo, hi,
                    median(abs(v - med)) OVER (PARTITION BY step) AS mad
                FROM (
                    SELECT rank, step, v, median(v) OVER (PARTITION BY step) AS med,
                        min(v) OVER (PARTITION BY step) AS lo,
                        max(v) OVER (PARTITION BY step) AS hi,
                        count() OVER (PARTITION BY step) AS n,
                        row_number() OVER (PARTITION BY rank ORDER BY step) AS rn
                    FROM $rank_steps
                    WHERE isFinite(v)
                )
            )
        )
    )
    GROUP BY rank, island
)
GROUP BY rank
ORDER BY rank
"""  # noqa: S608 (two constants)
# The first NaN/inf of one key on each rank (as FIRST_NON_FINITE_SQL for every key).
KEY_NON_FINITE_SQL = """
SELECT rank, min(step), argMin(value, tuple(step, ts_ms, seq, idx))
FROM metrics
WHERE run_id = {run_id:String} AND key = {key:String} AND NOT isFinite(value)$steps
GROUP BY rank
ORDER BY rank
"""

# GetRankLag: per (rank, step) the lag of RANK_LAGS_SQL (steps two ranks or more logged),
# then per rank its mean over buckets of steps (width: ceil(span / max_steps)).
RANK_LAG_SQL = fill("""
SELECT rank, bucket, min(lo), min(width), avg(lag_ms) FROM (
    SELECT rank, lag_ms, lo,
        greatest(toInt64(1), intDiv(hi - lo + {max_steps:Int64}, {max_steps:Int64})) AS width,
        intDiv(step - lo, width) AS bucket
    FROM (
        SELECT rank, step, first_ms - median(first_ms) OVER (PARTITION BY step) AS lag_ms,
            count() OVER (PARTITION BY step) AS ranks_at_step,
            min(step) OVER () AS lo, max(step) OVER () AS hi
        FROM ($first_ts)
    )
    WHERE ranks_at_step > 1
)
GROUP BY rank, bucket
ORDER BY rank, bucket
""", first_ts=FIRST_TS_SQL)

# SearchRuns columns: the page's runs' values of some params (as PARAMS_SQL: the lowest
# rank's first value) and tags.
PARAM_COLUMNS_SQL = fill("""
SELECT run_id, key, argMin(value, $first)
FROM param_values FINAL
WHERE run_id IN {run_ids:Array(String)} AND key IN {keys:Array(String)}
GROUP BY run_id, key
""", first=PARAM_FIRST_KEY)
TAG_COLUMNS_SQL = """
SELECT run_id, key, value
FROM tags FINAL
WHERE run_id IN {run_ids:Array(String)} AND key IN {keys:Array(String)}
"""

# ListRunKeys: the keys of each kind, sorted, at most {limit} each; $scope: only the runs
# of some experiments (search_sql.SCOPE).
RUN_KEYS_SQL = """
SELECT kind, key FROM (
    SELECT 'params' AS kind, key FROM param_values$scope GROUP BY key
    UNION ALL SELECT 'metrics' AS kind, toString(key) AS key FROM metric_summaries$scope
        GROUP BY key
    UNION ALL SELECT 'tags' AS kind, key FROM tags$scope GROUP BY key
)
ORDER BY kind, key
LIMIT {limit:UInt32} BY kind
"""


class ClickHouseRepository:
    """Deduplicated reads of Runstream's ClickHouse tables.

    ``dsn`` is ``chdb:///abs/path`` (embedded engine; one path per process) or
    ``http(s)://host:port``; ``database`` holds the tables. Connections open lazily,
    one per calling thread. ClickHouse connection failures raise
    :class:`UnavailableError`; other ClickHouse errors :class:`RunstreamError` (INTERNAL).
    """

    def __init__(
        self, dsn: str, database: str, *, settings: Mapping[str, Any] | None = None
    ) -> None:
        self.dsn = dsn
        self.database = database
        self._settings = dict(settings or {})
        self._local = threading.local()
        self._lock = threading.Lock()
        # _repeated_ranks' checks by series and its parts (SERIES_PARTS_SQL), under the lock.
        self._repeated: OrderedDict[tuple[str, str, frozenset[str]], list[int]] = OrderedDict()
        # Whether metrics was found to be a Distributed table (no check is kept over it, so
        # its parts are not read again); a store does not turn one into a local table.
        self._distributed_metrics = False
        self._clients: list[ChClient] = []
        self._closed = False
        # An embedded store's directory, its (st_dev, st_ino) once seen, and whether its
        # store-id file (tables.STORE_MARKER, written by the consumer) was there then.
        self._store_dir = dsn[len("chdb://"):].split("?")[0] if dsn.startswith("chdb:") else ""
        self._store_inode: tuple[int, int] | None = None
        self._store_marked = False
        self._note_store()

    # --- connections and errors ---

    def _note_store(self) -> None:
        if not self._store_dir or self._store_inode is not None:
            return
        try:
            st = os.stat(self._store_dir)
        except OSError:
            return  # not created yet: noted at the first connection
        marked = os.path.exists(os.path.join(self._store_dir, tables.STORE_MARKER))
        with self._lock:
            if self._store_inode is None:
                self._store_inode = (st.st_dev, st.st_ino)
                self._store_marked = marked

    def check_store(self) -> None:
        """Raise UnavailableError if the embedded store's directory was removed or replaced
        since this repository first saw it, or lost the consumer's store-id file (never for
        a ClickHouse server). A stat or two; thread-safe; the query server's store watch
        calls it too."""
        if self._store_inode is None:
            return
        try:
            st = os.stat(self._store_dir)
            # A directory recreated at once may reuse the inode; the marker is not recreated.
            same = (st.st_dev, st.st_ino) == self._store_inode and (
                not self._store_marked
                or os.path.exists(os.path.join(self._store_dir, tables.STORE_MARKER)))
        except OSError:
            same = False
        if not same:
            raise UnavailableError(
                f"the embedded ClickHouse store {self._store_dir} was removed or replaced while"
                " this process had it open; nothing can be read from it or stored in it any"
                " more. Restart the process (runstream serve): what is still in Kafka is"
                " ingested again"
            )

    def _connect(self) -> ChClient:
        kwargs: dict[str, Any] = {
            "dsn": self.dsn, "database": self.database, "settings": self._settings,
        }
        if not self.dsn.startswith("chdb:"):
            # One HTTP session rejects concurrent queries; sessions buy us nothing here.
            kwargs["autogenerate_session_id"] = False
        try:
            client = clickhouse_connect.get_client(**kwargs)
        except ClickHouseError as e:
            raise self._error(e, f"cannot open ClickHouse {self.dsn}") from e
        self._note_store()
        return client

    def _error(self, e: ClickHouseError, what: str) -> RunstreamError:
        name = getattr(e, "name", None)
        if name in _PAST_DEADLINE:
            return DeadlineExceededError(f"{what}: the query ran past its deadline")
        if isinstance(e, OperationalError):
            return UnavailableError(f"{what}: {e}")
        if name in _NOT_CREATED:
            return UnavailableError(
                f"the Runstream tables are not in ClickHouse database {self.database!r} yet"
                " (the consumer creates them when it starts)"
            )
        return RunstreamError(f"{what}: {e}")

    def _client(self) -> ChClient:
        client: ChClient | None = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise UnavailableError("the query repository is closed")
            client = self._connect()
            with self._lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def _execute(self, sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        """Run a read with the deadline of the RPC being served; raises ClickHouseError
        (UnavailableError if the embedded store was removed: :meth:`check_store`)."""
        self.check_store()
        return self._client().query(sql, parameters=dict(parameters),
                                    settings=_read_settings())

    def _stream(self, sql: str, parameters: Mapping[str, Any]) -> Iterator[tuple[list[Any], ...]]:
        """The result of a read as it arrives, one driver block at a time, each column a
        list of Python values. The query stays open (holding this thread's connection)
        until the generator is exhausted or closed; close it before the next query on
        this thread."""
        self.check_store()
        try:
            with self._client().query_column_block_stream(
                sql, parameters=dict(parameters), settings={**_read_settings(), **_STREAM_SETTINGS}
            ) as stream:
                for block in stream:
                    yield tuple(c.tolist() if isinstance(c, array.array) else list(c)
                                for c in block)
        except ClickHouseError as e:
            raise self._error(e, "ClickHouse query failed") from e

    def _query(self, sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        try:
            return self._execute(sql, parameters)
        except ClickHouseError as e:
            raise self._error(e, "ClickHouse query failed") from e

    def _query_or_none(self, sql: str, parameters: Mapping[str, Any]) -> QueryResult | None:
        """The query's result, or None if its table does not exist (yet)."""
        try:
            return self._execute(sql, parameters)
        except ClickHouseError as e:
            if getattr(e, "name", None) in _NOT_CREATED:
                return None
            raise self._error(e, "ClickHouse query failed") from e

    def _rows(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._query(sql, parameters).result_rows

    def _columns(self, sql: str, parameters: Mapping[str, Any], width: int) -> list[list[Any]]:
        # Straight to columns: row_count or result_rows would first build one tuple per row.
        columns = self._query(sql, parameters).result_columns
        if not columns or not len(columns[0]):
            return [[] for _ in range(width)]
        return [c if isinstance(c, list) else list(c) for c in columns]

    def _column_blocks(
        self, sql: str, parameters: Mapping[str, Any], width: int
    ) -> list[list[Sequence[Any]]]:
        """Each result column as the driver's blocks (numbers come as ``array.array``),
        not yet turned into Python objects."""
        result = self._query(sql, parameters)
        out: list[list[Sequence[Any]]] = [[] for _ in range(width)]
        try:
            with result.column_block_stream as stream:
                for block in stream:
                    for column, part in zip(out, block, strict=True):
                        column.append(part)
        except ClickHouseError as e:
            raise self._error(e, "ClickHouse query failed") from e
        return out

    def close(self) -> None:
        """Close every connection; later calls raise UnavailableError. Idempotent."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # --- runs ---

    def run_exists(self, run_id: str) -> bool:
        return bool(self._rows(RUN_EXISTS_SQL, {"run_id": run_id}))

    def rank_rows(self, run_ids: Sequence[str]) -> list[RankRow]:
        """The latest RunStarted of every rank of these runs, by (run_id, rank)."""
        out = []
        for run_id, rank, latest, start_ms in self._rows(RANK_ROWS_SQL,
                                                          {"run_ids": list(run_ids)}):
            r = dict(zip(_RUN_STARTED, latest, strict=True))
            gpus = r["gpus"]
            gpu_memory = list(r["gpu_memory_bytes"])
            gpu_memory += [0] * max(0, len(gpus) - len(gpu_memory))
            out.append(RankRow(
                run_id=run_id,
                rank=int(rank),
                experiment=r["experiment"],
                name=r["name"],
                world_size=int(r["world_size"]),
                local_rank=int(r["local_rank"]),
                node=r["node"],
                code=CodeVersion(
                    git_commit=r["git_commit"],
                    git_branch=r["git_branch"],
                    git_remote=r["git_remote"],
                    git_dirty=bool(r["git_dirty"]),
                    in_git_repo=bool(r["in_git_repo"]),
                    diff_sha256=r["git_diff_sha256"],
                    diff_uri=r["git_diff_uri"],
                    cwd=r["cwd"],
                    script=r["script"],
                ),
                env=Environment(
                    python_version=r["python_version"],
                    os=r["os"],
                    command=r["command"],
                    cpu_count=int(r["cpu_count"]),
                    cpu_model=r["cpu_model"],
                    memory_bytes=int(r["memory_bytes"]),
                    packages=tuple(Package(name=k, version=v)
                                   for k, v in sorted(dict(r["packages"]).items())),
                    gpus=tuple(Gpu(name=g, memory_bytes=int(m))
                               for g, m in zip(gpus, gpu_memory, strict=False)),
                    gpu_driver=r["gpu_driver"],
                    cuda_version=r["cuda_version"],
                    argv=tuple(r["argv"]),
                    launcher=r["launcher"],
                    nnodes=int(r["nnodes"]),
                    nproc_per_node=int(r["nproc_per_node"]),
                    runstream_editable=bool(r["runstream_editable"]),
                ),
                start_ms=int(start_ms),
            ))
        return out

    def statuses(self, run_ids: Sequence[str]) -> list[StatusRow]:
        if not run_ids:
            return []
        return [
            StatusRow(run_id=run_id, rank=int(r), experiment=experiment, status=status,
                      error=error, first_ms=int(first_ms), last_ms=int(last_ms))
            for run_id, r, experiment, status, error, first_ms, last_ms
            in self._rows(STATUSES_SQL, {"run_ids": list(run_ids)})
        ]

    def params(self, run_ids: Sequence[str]) -> dict[str, list[Param]]:
        out: dict[str, list[Param]] = {r: [] for r in run_ids}
        for run_id, k, v, t in self._rows(PARAMS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Param(key=k, value=v, type=t))
        return out

    def param_conflicts(self, run_ids: Sequence[str]) -> dict[str, list[ParamConflict]]:
        """Per run, every value logged for a (key, rank) after its first, by key, rank, time."""
        out: dict[str, list[ParamConflict]] = {r: [] for r in run_ids}
        first: tuple[str, str, int] | None = None
        for run_id, k, rank, v, t, producer, ts in self._rows(PARAM_CONFLICTS_SQL,
                                                              {"run_ids": list(run_ids)}):
            group = (run_id, k, int(rank))
            if group != first:
                first = group  # the param's own value
                continue
            out.setdefault(run_id, []).append(ParamConflict(
                key=k, rank=int(rank), value=v, type=t, producer_id=producer, ts_ms=int(ts)))
        return out

    def accounts(self, run_ids: Sequence[str]) -> list[AccountRow]:
        """Each finished producer's account, by (run_id, rank, producer_id)."""
        return [
            AccountRow(run_id=run_id, rank=int(rank), producer_id=producer,
                       points_logged=int(logged),
                       dropped=tuple(Drop(reason=r, events=int(e), points=int(n))
                                     for r, e, n in zip(reasons, events, points, strict=True)))
            for run_id, rank, producer, logged, reasons, events, points
            in self._rows(ACCOUNTS_SQL, {"run_ids": list(run_ids)})
        ]

    def tags(self, run_ids: Sequence[str]) -> dict[str, list[Tag]]:
        out: dict[str, list[Tag]] = {r: [] for r in run_ids}
        for run_id, k, v in self._rows(TAGS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Tag(key=k, value=v))
        return out

    def artifacts(self, run_id: str) -> list[Artifact]:
        return [Artifact(name=n, uri=u, size_bytes=int(s), sha256=h)
                for n, u, s, h in self._rows(ARTIFACTS_SQL, {"run_id": run_id})]

    def inputs(self, run_ids: Sequence[str]) -> dict[str, list[Input]]:
        out: dict[str, list[Input]] = {r: [] for r in run_ids}
        for run_id, n, u, d, role in self._rows(INPUTS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Input(name=n, uri=u, digest=d, role=role))
        return out

    def metric_summaries(
        self, run_ids: Sequence[str], keys: Sequence[str] = ()
    ) -> dict[str, list[MetricSummary]]:
        """Per run, the summary of each key (all keys, or only ``keys``), by key."""
        params: dict[str, Any] = {"run_ids": list(run_ids)}
        if keys:
            params["keys"] = list(keys)
        sql = fill(SUMMARIES_SQL, keys=_SOME_KEYS if keys else "")
        out: dict[str, list[MetricSummary]] = {r: [] for r in run_ids}
        for run_id, k, last, step, lo, hi in self._rows(sql, params):
            out.setdefault(run_id, []).append(MetricSummary(
                key=k, last=float(last), last_step=int(step), min=float(lo), max=float(hi)))
        return out

    def best_steps(
        self, run_ids: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(run_id, key) -> (lowest step at the min, lowest step at the max)."""
        if not keys:
            return {}
        rows = self._rows(BEST_STEPS_SQL, {"run_ids": list(run_ids), "keys": list(keys)})
        return {(r, k): (int(a), int(b)) for r, k, a, b in rows}

    # --- SearchRuns ---

    def search(
        self,
        experiments: Sequence[str],
        clauses: Sequence[Clause],
        order_by: Sequence[OrderBy],
        after: Sequence[Any] | None,
        limit: int,
        *,
        view: str = "ACTIVE_ONLY",
    ) -> list[SearchRow]:
        """Runs matching every clause, in order_by order then newest start first; archived
        runs only as ``view`` says ("ACTIVE_ONLY", "ARCHIVED_ONLY", "ALL")."""
        compiled = compile_search(experiments, clauses, order_by, after, limit, view=view,
                                  scoped=bool(experiments) and self._scope_pays(experiments))
        width = len(compiled.keyset)
        out = []
        for row in self._rows(compiled.sql, compiled.parameters):
            run_id, experiment, name, world_size, start_ms, status, end_ms = row[:7]
            keys = [*row[7:], int(start_ms), run_id]
            out.append(SearchRow(
                run_id=run_id, experiment=experiment, name=name, world_size=int(world_size),
                start_ms=int(start_ms), status=status, end_ms=int(end_ms),
                keyset=tuple(keyset_value(v) for v in keys[:width]),
            ))
        return out

    def _scope_pays(self, experiments: Sequence[str]) -> bool:
        """Whether the experiments searched hold at most 1/SCOPE_SHARE of the store's runs
        (two cheap counts: a primary-key range and a table's row count)."""
        (inside, total), = self._rows(SCOPE_SIZE_SQL, {"experiments": list(experiments)})
        return int(inside) * SCOPE_SHARE <= int(total)

    # --- GetMetricHistory: every point, downsampling buckets, aggregates across ranks ---

    def metric_points(
        self,
        run_id: str,
        key: str,
        ranks: Sequence[int],
        after: PointCursor | None,
        limit: int,
        *,
        segments: Sequence[Segment] = (),
        steps: StepRange | None = None,
    ) -> PointRows:
        """A page of points; ``segments``: a fork's history (else the run's own points);
        ``steps``: only steps in this inclusive range."""
        params: dict[str, Any] = {"run_id": run_id, "key": key, "limit": limit}
        if ranks:
            params["ranks"] = list(ranks)
        _add_segments(params, segments)
        _add_steps(params, steps)
        if after is not None:
            params.update(
                after_rank=after.rank,
                after_step=after.step,
                after_ts_ms=after.ts_ms,
                after_producer_id=after.producer_id,
                after_seq=after.seq,
                after_idx=after.idx,
            )
        sql = (FORK_POINTS_SQL if segments else POINTS_SQL)[(bool(ranks), after is not None)]
        if steps is not None:
            sql = fill(_POINTS, run=_SEGMENTS if segments else _ONE_RUN,
                       ranks=_SOME_RANKS if ranks else "",
                       after=_POINTS_AFTER if after is not None else "", steps=_STEP_RANGE)
        r, s, v, t, p, q, i = self._column_blocks(sql, params, 7)
        # The identity columns only serve the page's cursor: they stay in blocks, read by
        # index, never converted point by point.
        return PointRows(ranks=_flat(r), steps=_flat(s), values=_flat(v), ts_ms=_flat(t),
                         producer_ids=_Blocks(p), seqs=_Blocks(q), idxs=_Blocks(i))

    def _series(self, run_id: str, key: str, ranks: Sequence[int], aggregate: str,
                segments: Sequence[Segment] = (), steps: StepRange | None = None,
                ) -> tuple[str, str, dict[str, Any]]:
        """(source, where-on-source, parameters) of one (possibly aggregated) series: the
        run's own points, or a fork's history over ``segments``."""
        params: dict[str, Any] = {"run_id": run_id, "key": key}
        if ranks:
            params["ranks"] = list(ranks)
        _add_segments(params, segments)
        where = fill(_SERIES_WHERE, run=_SEGMENTS if segments else _ONE_RUN,
                     ranks=_SOME_RANKS if ranks else "", steps=_STEP_RANGE if steps else "")
        _add_steps(params, steps)
        if aggregate:
            series = fill(_SERIES_WHERE, run=_SEGMENT_RUNS if segments else _ONE_RUN,
                          ranks=_SOME_RANKS if ranks else "", steps="")
            params["repeated"] = self._repeated_ranks(where, series, _RANK_KEY, params)
            source = fill(_AGGREGATED, agg=_AGG_FUNCS[aggregate], where=where)
            return source, "NOT isNaN(value)", params
        return "metrics", where + " AND NOT isNaN(value)", params

    @contextmanager
    def shared_reads(self) -> Iterator[None]:
        """See :meth:`UiStore.shared_reads`: a per-thread memo of :meth:`_repeated_ranks`
        (a downsampled aggregate reads its range, then its buckets; the envelope and the
        rank spread read the same steps), dropped when the outermost block ends."""
        outer = getattr(self._local, "repeated", None)
        if outer is None:
            self._local.repeated = {}
        try:
            yield
        finally:
            if outer is None:
                self._local.repeated = None

    def _repeated_ranks(self, where: str, summaries_where: str, rank_key: str,
                        params: Mapping[str, Any]) -> list[int]:
        """{repeated} of _RANK_STEP_VALUES: the ranks (``rank_key``) of the points matching
        ``where`` that logged some step more than once. The suspects come from the series'
        summaries (SUSPECT_RANKS_SQL; ``summaries_where``: the same run, key and rank
        conditions, without steps), and only their points are read (REPEATED_RANKS_SQL).
        Read once per shared_reads block; the read of the points is kept across requests
        while the parts holding those points are the same (SERIES_PARTS_SQL)."""
        memo: dict[str, list[int]] | None = getattr(self._local, "repeated", None)
        key = repr((where, rank_key, sorted(params.items())))
        if memo is not None and key in memo:
            return memo[key]
        # Sorted: DISTINCT's order varies, and the suspects are part of the kept check's key.
        suspects = sorted(int(k) for (k,) in self._rows(
            fill(SUSPECT_RANKS_SQL, series=summaries_where, rank_key=rank_key), params))
        ranks = self._repeated_among(where, rank_key, {**params, "suspects": suspects}
                                     ) if suspects else []
        if memo is not None:
            memo[key] = ranks
        return ranks

    def _repeated_among(self, where: str, rank_key: str, params: Mapping[str, Any]
                        ) -> list[int]:
        """REPEATED_RANKS_SQL over the suspects in ``params``, kept while the parts holding
        the points matching ``where`` are the same (on a local table only)."""
        sql = fill(REPEATED_RANKS_SQL, where=where, rank_key=rank_key)
        held = [] if self._distributed_metrics else self._rows(
            fill(SERIES_PARTS_SQL, where=where), {**params, "database": self.database})
        table, engine = next(((name, e) for kind, name, e in held if kind == 0), ("", ""))
        kept = engine.endswith("MergeTree")  # a local table (not Distributed)
        if engine.startswith("Distributed"):
            self._distributed_metrics = True
        series = (repr((sql, sorted(params.items()))), table,
                  frozenset(name for kind, name, _ in held if kind == 1))
        if kept:
            with self._lock:
                ranks = self._repeated.get(series)
                if ranks is not None:
                    self._repeated.move_to_end(series)
                    return ranks
        # Parts read before the check: a part written in between is in the check and not
        # in the key, so the next read sees other parts and checks again.
        ranks = [int(k) for (k,) in self._rows(sql, params)]
        if kept:
            with self._lock:
                self._repeated[series] = ranks
                while len(self._repeated) > REPEATED_MEMO_SIZE:
                    self._repeated.popitem(last=False)
        return ranks

    def series_range(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, *,
        segments: Sequence[Segment] = (), steps: StepRange | None = None,
    ) -> tuple[int, int, int]:
        """(min step, max step, point count) of the series' non-NaN points; count 0 if none.
        ``steps``: only steps in this inclusive range (every method below takes it too)."""
        if _blocks_serve(aggregate, segments):
            params: dict[str, Any] = {"run_id": run_id, "key": key, "ranks": list(ranks)}
            _add_block_steps(params, steps)
            rows = self._rows(fill(BLOCK_RANGE_SQL, series=_ONE_SERIES,
                                   blocks=_blocks_from(_one_series_blocks(ranks), steps)),
                              params)
            return (int(rows[0][1]), int(rows[0][2]), int(rows[0][3])) if rows else (0, 0, 0)
        source, where, params = self._series(run_id, key, ranks, aggregate, segments, steps)
        row = self._rows(fill(RANGE_SQL, source=source, where=where), params)[0]
        return int(row[0]), int(row[1]), int(row[2])

    def buckets(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, lo: int, width: int,
        *, segments: Sequence[Segment] = (), steps: StepRange | None = None,
    ) -> list[Bucket]:
        """Buckets of ``width`` steps from step ``lo``, per rank (rank 0 when aggregated)."""
        if _blocks_serve(aggregate, segments) and _whole_blocks(lo, width):
            params: dict[str, Any] = {"run_id": run_id, "key": key, "ranks": list(ranks),
                                      "series_lo": [lo], "series_width": [width]}
            _add_block_steps(params, steps)
            return [_bucket(row[1:]) for row in self._rows(
                fill(BLOCK_BUCKETS_SQL, series=_ONE_SERIES,
                     blocks=_blocks_from(_one_series_blocks(ranks), steps)), params)]
        source, where, params = self._series(run_id, key, ranks, aggregate, segments, steps)
        params.update(lo=lo, width=width)
        return [_bucket(row) for row in self._rows(
            fill(BUCKETS_SQL, min_key=MIN_VALUE_KEY, max_key=MAX_VALUE_KEY, source=source,
                 where=where, avg_value=_AVG_VALUE), params)]

    def aggregate_points(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, after_step: int,
        limit: int, *, segments: Sequence[Segment] = (), steps: StepRange | None = None,
    ) -> tuple[list[int], list[float], list[int]]:
        """Steps, aggregated values and latest ts_ms after ``after_step``, by step."""
        source, _, params = self._series(run_id, key, ranks, aggregate, segments, steps)
        params.update(after_step=after_step, limit=limit)
        at, values, ts = self._columns(fill(AGGREGATE_PAGE_SQL, source=source), params, 3)
        return at, values, ts

    def export_points(
        self, run_id: str, key: str, ranks: Sequence[int], *, segments: Sequence[Segment] = ()
    ) -> Iterator[tuple[list[int], list[int], list[float], list[int]]]:
        """Every point of the series as :meth:`metric_points` orders them, streamed:
        (ranks, steps, values, ts_ms) per ClickHouse block. Close it before the thread's
        next query."""
        params: dict[str, Any] = {"run_id": run_id, "key": key}
        if ranks:
            params["ranks"] = list(ranks)
        _add_segments(params, segments)
        sql = (FORK_EXPORT_POINTS_SQL if segments else EXPORT_POINTS_SQL)[bool(ranks)]
        return cast(Iterator[tuple[list[int], list[int], list[float], list[int]]],
                    self._stream(sql, params))

    def export_aggregate(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, *,
        segments: Sequence[Segment] = (),
    ) -> Iterator[tuple[list[int], list[float], list[int]]]:
        """Every (step, aggregated value, latest ts_ms) of the series by step, streamed
        per block, as :meth:`aggregate_points` computes them."""
        source, _, params = self._series(run_id, key, ranks, aggregate, segments)
        return cast(Iterator[tuple[list[int], list[float], list[int]]],
                    self._stream(fill(AGGREGATE_EXPORT_SQL, source=source), params))

    # --- FollowRun ---

    def series_tips(self, run_id: str) -> dict[tuple[str, int], int]:
        """The highest step stored so far of every (key, rank) of a run."""
        return {(k, int(r)): int(s) for k, r, s in self._rows(SERIES_TIPS_SQL, {"run_id": run_id})}

    def producer_points(self, run_id: str) -> dict[tuple[int, str], int]:
        """(rank, producer_id) -> metric points of a run in the store."""
        return {(int(r), p): int(n) for r, p, n
                in self._rows(PRODUCER_POINTS_SQL, {"run_id": run_id})}

    def new_points(
        self,
        run_id: str,
        keys: Sequence[str],
        ranks: Sequence[int],
        cursors: Mapping[tuple[str, int], int],
        from_step: int,
        limit: int,
    ) -> tuple[list[str], list[int], list[int], list[float], list[int]]:
        """Points with step above their (key, rank)'s cursor (else above ``from_step``),
        by step: (keys, ranks, steps, values, ts_ms)."""
        params: dict[str, Any] = {"run_id": run_id, "from_step": from_step, "limit": limit}
        if keys:
            params["keys"] = list(keys)
        if ranks:
            params["ranks"] = list(ranks)
        if cursors:
            params["cursor_series"] = [f"{k}\n{r}" for k, r in cursors]
            params["cursor_steps"] = list(cursors.values())
        sql = fill(NEW_POINTS_SQL, keys=_FOLLOWED_KEYS if keys else "",
                   ranks=_SOME_RANKS if ranks else "",
                   after=_AFTER_CURSORS if cursors else _AFTER_FROM_STEP)
        k, r, s, v, t = self._columns(sql, params, 5)
        return k, r, s, v, t

    # --- listings ---

    def experiments(self, limit: int) -> list[ExperimentInfo]:
        return [ExperimentInfo(experiment=e, run_count=int(n), last_start_ms=int(t))
                for e, n, t in self._rows(EXPERIMENTS_SQL, {"limit": limit})]

    def ingest_progress(self, since_ms: int) -> list[IngestPartition]:
        """Latest row per (consumer, source, topic, partition) since ``since_ms``; [] if the
        consumer has not created ``ingest_progress`` yet."""
        result = self._query_or_none(INGEST_SQL, {"since_ms": since_ms})
        if result is None:
            return []
        names = tables.INGEST_PROGRESS.column_names
        return [IngestPartition(**dict(zip(names, row, strict=True)))
                for row in result.result_rows]

    # --- attempts, forks, annotations, lineage ---

    def run_starts(self, run_ids: Sequence[str]) -> dict[str, list[StartRow]]:
        """Every RunStarted of these runs, in start order."""
        out: dict[str, list[StartRow]] = {r: [] for r in run_ids}
        if not run_ids:
            return out
        for run_id, rank, ws, local, node, restart, resume, producer, seq, ts in self._rows(
                RUN_STARTS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(StartRow(
                run_id=run_id, rank=int(rank), world_size=int(ws), local_rank=int(local),
                node=node, restart=int(restart), resume=bool(resume), producer_id=producer,
                seq=int(seq), ts_ms=int(ts)))
        return out

    def status_events(self, run_ids: Sequence[str]) -> dict[str, list[StatusEvent]]:
        """Every status row of these runs, by (ts_ms, seq)."""
        out: dict[str, list[StatusEvent]] = {r: [] for r in run_ids}
        if not run_ids:
            return out
        for run_id, rank, experiment, status, error, producer, seq, ts in self._rows(
                STATUS_EVENTS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(StatusEvent(
                run_id=run_id, rank=int(rank), experiment=experiment, status=status, error=error,
                producer_id=producer, seq=int(seq), ts_ms=int(ts)))
        return out

    def forks(self, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """run id -> (fork_run_id, fork_step) of the runs among these that are forks."""
        if not run_ids:
            return {}
        return {r: (p, int(step)) for r, p, step
                in self._rows(FORKS_SQL, {"run_ids": list(run_ids)}) if p}

    def annotations(self, run_ids: Sequence[str]) -> dict[str, list[AnnotationRow]]:
        """Every after-the-fact change of these runs, oldest first."""
        out: dict[str, list[AnnotationRow]] = {r: [] for r in run_ids}
        if not run_ids:
            return out
        for run_id, keys, values, note, archive, user, host, ts in self._rows(
                ANNOTATIONS_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(AnnotationRow(
                run_id=run_id, tags=tuple(zip(keys, values, strict=False)), note=note,
                archive=archive, user=user, host=host, ts_ms=int(ts)))
        return out

    def archived(self, run_ids: Sequence[str]) -> set[str]:
        """The runs among these that are archived."""
        if not run_ids:
            return set()
        return {r for (r,) in self._rows(ARCHIVED_SQL, {"run_ids": list(run_ids)})}

    def produced_by(self, sha256: str) -> list[LineageMatch]:
        """The artifacts with this content, oldest first (``run`` unset)."""
        return [LineageMatch(run_id=r, name=n, rank=int(k), uri=u, size_bytes=int(b),
                             ts_ms=int(t))
                for r, n, k, u, b, t in self._rows(PRODUCED_BY_SQL, {"sha256": sha256})]

    def used_by(self, digests: Sequence[str]) -> list[LineageMatch]:
        """The inputs whose digest is one of ``digests``, oldest first."""
        return [LineageMatch(run_id=r, name=n, rank=int(k), uri=u, ts_ms=int(t))
                for r, n, k, u, t in self._rows(USED_BY_SQL, {"digests": list(digests)})]

    def fork_summaries(
        self, segments: Mapping[str, Sequence[Segment]], keys: Sequence[str] = ()
    ) -> dict[str, list[tuple[MetricSummary, tuple[int, int]]]]:
        """Per fork, each key's summary over its whole history (all keys, or only
        ``keys``), by key, with (lowest step at the min, lowest step at the max)."""
        out: dict[str, list[tuple[MetricSummary, tuple[int, int]]]] = {r: [] for r in segments}
        pairs = [(owner, s) for owner, segs in segments.items() for s in segs]
        if not pairs:
            return out
        params: dict[str, Any] = {"owners": [o for o, _ in pairs]}
        _add_segments(params, [s for _, s in pairs])
        if keys:
            params["keys"] = list(keys)
        sql = fill(FORK_SUMMARIES_SQL, keys=_SOME_KEYS if keys else "")
        for owner, k, last, step, lo, hi, at_min, at_max in self._rows(sql, params):
            out.setdefault(owner, []).append((
                MetricSummary(key=k, last=float(last), last_step=int(step), min=float(lo),
                              max=float(hi)), (int(at_min), int(at_max))))
        return out

    # --- GetRankHealth ---

    def rank_value_stats(self, run_id: str, keys: Sequence[str], since_ms: int = 0
                         ) -> dict[tuple[int, str], Distribution]:
        """(rank, key) -> the distribution of its finite values, for each of ``keys``."""
        if not keys:
            return {}
        rows = self._rows(RANK_VALUE_STATS_SQL, {"run_id": run_id, "keys": list(keys),
                                                 "since_ms": since_ms})
        return {(int(r), k): Distribution(count=int(n), p50=float(q[0]), p95=float(q[1]),
                                          max=float(hi))
                for r, k, n, q, hi in rows}

    def rank_lags(self, run_id: str, key: str, since_ms: int = 0) -> dict[int, Distribution]:
        """rank -> its lag behind the median rank (ms) over the steps of ``key``."""
        rows = self._rows(RANK_LAGS_SQL, {"run_id": run_id, "key": key, "since_ms": since_ms})
        return {int(r): Distribution(count=int(n), p50=float(q[0]), p95=float(q[1]),
                                     max=float(hi))
                for r, n, q, hi in rows}

    def first_non_finite(self, run_id: str, since_ms: int = 0
                         ) -> dict[int, list[FirstNonFinite]]:
        """rank -> the first NaN/inf of each of its keys, by step then key."""
        out: dict[int, list[FirstNonFinite]] = {}
        for r, k, step, value in self._rows(FIRST_NON_FINITE_SQL, {
                "run_id": run_id, "since_ms": since_ms, "limit": MAX_NON_FINITE}):
            out.setdefault(int(r), []).append(
                FirstNonFinite(key=k, step=int(step), value=float(value)))
        return out

    def rank_last_seen(self, run_id: str) -> dict[int, int]:
        """rank -> its last heartbeat, point or status (epoch ms, the producer's clock)."""
        return {int(r): int(t) for r, t in self._rows(RANK_LAST_SEEN_SQL, {"run_id": run_id})}

    def busiest_key(self, run_id: str, since_ms: int = 0) -> str:
        """The run's key with the most points, system/* left out; "" if none."""
        rows = self._rows(BUSIEST_KEY_SQL, {"run_id": run_id, "since_ms": since_ms})
        return str(rows[0][0]) if rows else ""


    # --- the web UI's reads ---

    def _multi_series(self, run_ids: Sequence[str], keys: Sequence[str], ranks: Sequence[int],
                      aggregate: str, steps: StepRange | None
                      ) -> tuple[str, str, str, dict[str, Any]]:
        """(source, where-on-source, series-number expression, parameters) of several
        series (see _SERIES_INDEX)."""
        params: dict[str, Any] = {
            "run_ids": list(run_ids), "keys": list(keys), "n_keys": len(keys),
            "run_index": list(range(len(run_ids))), "key_index": list(range(len(keys)))}
        if ranks:
            params["ranks"] = list(ranks)
        _add_steps(params, steps)
        where = fill(_MULTI_WHERE, ranks=_SOME_RANKS if ranks else "",
                     steps=_STEP_RANGE if steps else "")
        if aggregate:
            params["repeated"] = self._repeated_ranks(
                where, fill(_MULTI_WHERE, ranks=_SOME_RANKS if ranks else "", steps=""),
                _MULTI_RANK_KEY, params)
            source = fill(_MULTI_AGGREGATED, agg=_AGG_FUNCS[aggregate], where=where,
                          series=_SERIES_INDEX)
            return source, "NOT isNaN(value)", "series", params
        return "metrics", where + " AND NOT isNaN(value)", _SERIES_INDEX, params

    def series_ranges(
        self, run_ids: Sequence[str], keys: Sequence[str], ranks: Sequence[int], aggregate: str,
        *, steps: StepRange | None = None,
    ) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(run_id, key) -> :meth:`series_range` of every (run, key) with a non-NaN point,
        in one query."""
        if not run_ids or not keys:
            return {}
        source, where, series, params = self._multi_series(run_ids, keys, ranks, aggregate,
                                                           steps)
        if _blocks_serve(aggregate, ()):
            _add_block_steps(params, steps)
            sql = fill(BLOCK_RANGE_SQL, series=series,
                       blocks=_blocks_from(_multi_series_blocks(ranks), steps))
        else:
            sql = fill(MULTI_RANGE_SQL, source=source, where=where, series=series)
        return {(run_ids[int(i) // len(keys)], keys[int(i) % len(keys)]):
                (int(lo), int(hi), int(n)) for i, lo, hi, n in self._rows(sql, params)}

    def series_buckets(
        self, bounds: Mapping[tuple[str, str], tuple[int, int]], ranks: Sequence[int],
        aggregate: str, *, steps: StepRange | None = None,
        read: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> dict[tuple[str, str], list[Bucket]]:
        """(run_id, key) -> :meth:`buckets` of each series in ``bounds`` ((run_id, key) ->
        (first step, width)), in one query. ``read``: the run ids and keys that
        :meth:`series_ranges` read in the same :meth:`shared_reads` block; an aggregate then
        reads the same series (those without points cost nothing), so both share one
        repeated-rank check."""
        out: dict[tuple[str, str], list[Bucket]] = {series: [] for series in bounds}
        if not bounds:
            return out
        if aggregate and all(r in read[0] and k in read[1] for r, k in bounds):
            return self._series_buckets(bounds, ranks, aggregate, steps, blocks=False,
                                        every=(list(read[0]), list(read[1])))
        if _blocks_serve(aggregate, ()):
            whole = {name: b for name, b in bounds.items() if _whole_blocks(*b)}
            if whole:
                out.update(self._series_buckets(whole, ranks, aggregate, steps, blocks=True))
            # The rest reads the points of its runs x keys (a block series among them is
            # scanned for nothing: GetMetricHistories rarely mixes both).
            rest = {name: b for name, b in bounds.items() if name not in whole}
            if rest:
                out.update(self._series_buckets(rest, ranks, aggregate, steps, blocks=False))
            return out
        return self._series_buckets(bounds, ranks, aggregate, steps, blocks=False)

    def _series_buckets(
        self, bounds: Mapping[tuple[str, str], tuple[int, int]], ranks: Sequence[int],
        aggregate: str, steps: StepRange | None, *, blocks: bool,
        every: tuple[list[str], list[str]] | None = None,
    ) -> dict[tuple[str, str], list[Bucket]]:
        out: dict[tuple[str, str], list[Bucket]] = {series: [] for series in bounds}
        run_ids, keys = every or (sorted({r for r, _ in bounds}),
                                  sorted({k for _, k in bounds}))
        source, where, series, params = self._multi_series(run_ids, keys, ranks, aggregate,
                                                           steps)
        lo = [0] * (len(run_ids) * len(keys))
        width = [1] * len(lo)
        names = [(r, k) for r in run_ids for k in keys]
        for i, name in enumerate(names):
            if name in bounds:
                lo[i], width[i] = bounds[name]
        params.update(series_lo=lo, series_width=width)
        if blocks:
            _add_block_steps(params, steps)
        sql = (fill(BLOCK_BUCKETS_SQL, series=series,
                    blocks=_blocks_from(_multi_series_blocks(ranks), steps))
               if blocks else
               fill(MULTI_BUCKETS_SQL, min_key=MIN_VALUE_KEY, max_key=MAX_VALUE_KEY,
                    source=source, where=where, avg_value=_AVG_VALUE, series=series))
        for row in self._rows(sql, params):
            name = names[int(row[0])]
            if name in out:
                out[name].append(_bucket(row[1:]))
        return out

    def existing_runs(self, run_ids: Sequence[str]) -> set[str]:
        """The runs among these that exist (as :meth:`run_exists` says for one)."""
        if not run_ids:
            return set()
        return {str(r) for (r,) in self._rows(RUNS_EXISTING_SQL, {"run_ids": list(run_ids)})}

    def _rank_steps(self, run_id: str, key: str, steps: StepRange | None
                    ) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {"run_id": run_id, "key": key}
        _add_steps(params, steps)
        step_range = _STEP_RANGE if steps else ""
        params["repeated"] = self._repeated_ranks(
            fill(_RANK_STEPS_WHERE, steps=step_range), fill(_RANK_STEPS_WHERE, steps=""),
            _RANK_KEY, params)
        return fill(_RANK_STEPS, steps=step_range), params

    def envelope(self, run_id: str, key: str, max_points: int, *,
                 steps: StepRange | None = None) -> EnvelopeRows:
        """The cross-rank envelope of one key in at most ``max_points`` step buckets."""
        rank_steps, params = self._rank_steps(run_id, key, steps)
        params["max_points"] = max_points
        out = EnvelopeRows()
        for first, mean, lo, lo_r, hi, hi_r, n, total in self._rows(
                fill(ENVELOPE_SQL, mean=stable_avg("v"), rank_steps=rank_steps), params):
            out.steps.append(int(first))
            out.mean.append(float(mean))
            out.min.append(float(lo))
            out.min_rank.append(int(lo_r))
            out.max.append(float(hi))
            out.max_rank.append(int(hi_r))
            out.count.append(int(n))
            out.total_steps = int(total)
        return out

    def rank_spread(self, run_id: str, key: str, *, steps: StepRange | None = None
                    ) -> tuple[dict[int, tuple[int, int]], list[RankDeparture]]:
        """(rank -> (steps at which it holds the min, the max), each rank's first departure
        (RANK_SPREAD_SQL says when a rank departs), by rank) of every rank with a finite
        value of the key, in one query."""
        rank_steps, params = self._rank_steps(run_id, key, steps)
        extremes: dict[int, tuple[int, int]] = {}
        departures = []
        for r, lo_n, hi_n, departs, at, v, med in self._rows(
                fill(RANK_SPREAD_SQL, rank_steps=rank_steps), params):
            extremes[int(r)] = (int(lo_n), int(hi_n))
            if departs:
                departures.append(RankDeparture(rank=int(r), step=int(at), value=float(v),
                                                median=float(med)))
        return extremes, departures

    def key_non_finite(self, run_id: str, key: str, *, steps: StepRange | None = None
                       ) -> list[RankNonFinite]:
        """Each rank's first NaN/inf of the key, by rank."""
        params: dict[str, Any] = {"run_id": run_id, "key": key}
        _add_steps(params, steps)
        sql = fill(KEY_NON_FINITE_SQL, steps=_STEP_RANGE if steps else "")
        return [RankNonFinite(rank=int(r), step=int(s), value=float(v))
                for r, s, v in self._rows(sql, params)]

    def rank_lag_cells(self, run_id: str, key: str, max_steps: int, since_ms: int = 0
                       ) -> list[tuple[int, int, float]]:
        """(rank, first step of its bucket, mean lag ms) of every non-empty cell, by rank
        then step."""
        return [(int(r), int(lo) + int(b) * int(w), float(lag)) for r, b, lo, w, lag in self._rows(
            RANK_LAG_SQL, {"run_id": run_id, "key": key, "max_steps": max_steps,
                           "since_ms": since_ms})]

    def column_values(
        self, run_ids: Sequence[str], params: Sequence[str], tags: Sequence[str]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        """(run_id -> param key -> value, run_id -> tag key -> value) of these runs, for
        these keys: one query per kind (none for a kind without keys)."""
        found: list[dict[str, dict[str, str]]] = []
        for sql, keys in ((PARAM_COLUMNS_SQL, params), (TAG_COLUMNS_SQL, tags)):
            out: dict[str, dict[str, str]] = {}
            if keys and run_ids:
                for run_id, k, v in self._rows(sql, {"run_ids": list(run_ids),
                                                     "keys": list(keys)}):
                    out.setdefault(run_id, {})[k] = v
            found.append(out)
        return found[0], found[1]

    def run_keys(self, experiments: Sequence[str], limit: int) -> dict[str, list[str]]:
        """"params" / "metrics" / "tags" -> the keys used by runs of these experiments
        (none = all), sorted, at most ``limit`` each."""
        params: dict[str, Any] = {"limit": limit}
        scope = ""
        if experiments:
            params["experiments"] = list(experiments)
            scope = f" WHERE {SCOPE}"
        out: dict[str, list[str]] = {"params": [], "metrics": [], "tags": []}
        for kind, key in self._rows(fill(RUN_KEYS_SQL, scope=scope), params):
            out[kind].append(key)
        return out


def _one_series_blocks(ranks: Sequence[int]) -> str:
    """_SERIES_WHERE of a run's own series over every step (metric_blocks has its columns;
    _blocks_from adds a step range)."""
    return fill(_SERIES_WHERE, run=_ONE_RUN, ranks=_SOME_RANKS if ranks else "", steps="")


def _multi_series_blocks(ranks: Sequence[int]) -> str:
    """_MULTI_WHERE over every step, as :func:`_one_series_blocks`."""
    return fill(_MULTI_WHERE, ranks=_SOME_RANKS if ranks else "", steps="")


def _bucket(row: Sequence[Any]) -> Bucket:
    """A Bucket from a row of BUCKETS_SQL's columns."""
    (rank, bucket, n, lo_v, hi_v, min_s, min_v, min_t, max_s, max_v, max_t, avg_step,
     avg_v, first_s, first_v, first_t, last_s, last_v, last_t) = row
    return Bucket(
        int(rank), int(bucket), int(n), float(lo_v), float(hi_v),
        (int(min_s), float(min_v), int(min_t)), (int(max_s), float(max_v), int(max_t)),
        float(avg_step), float(avg_v), (int(first_s), float(first_v), int(first_t)),
        (int(last_s), float(last_v), int(last_t)),
    )

def _add_steps(params: dict[str, Any], steps: StepRange | None) -> None:
    """Bind an inclusive step range."""
    if steps is not None:
        params["start_step"], params["end_step"] = steps


def _add_segments(params: dict[str, Any], segments: Sequence[Segment]) -> None:
    """Bind a fork's segments (run ids and their step bounds) as three parallel arrays."""
    if segments:
        params["seg_runs"] = [s.run_id for s in segments]
        params["seg_after"] = [s.after_step for s in segments]
        params["seg_to"] = [s.to_step for s in segments]


def _read_settings() -> dict[str, Any]:
    """Settings of a read: read-only, capped at the RPC's remaining deadline (or
    DEFAULT_MAX_EXECUTION_S, whichever is sooner)."""
    left = deadline.remaining_s()
    limit_s = DEFAULT_MAX_EXECUTION_S if left is None else min(left, DEFAULT_MAX_EXECUTION_S)
    return {**_READ_SETTINGS, "max_execution_time": max(1, math.ceil(limit_s))}


def _flat(blocks: Sequence[Sequence[Any]]) -> list[Any]:
    """One list from a column's blocks; arrays are joined first (a memcpy), then turned
    into Python numbers in one C loop."""
    arrays = [b for b in blocks if isinstance(b, array.array)]
    if arrays and len(arrays) == len(blocks):
        joined = array.array(arrays[0].typecode)
        for a in arrays:
            joined.extend(a)
        return joined.tolist()
    return list(itertools.chain.from_iterable(blocks))


class _Blocks(Sequence[T]):
    """A column left in its driver blocks, indexed without copying (read-only)."""

    def __init__(self, blocks: Sequence[Sequence[T]]) -> None:
        self._blocks = blocks
        self._len = sum(len(b) for b in blocks)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[T]: ...

    def __getitem__(self, i: int | slice) -> T | Sequence[T]:
        if isinstance(i, slice):
            return list(itertools.chain.from_iterable(self._blocks))[i]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(i)
        for b in self._blocks:
            if i < len(b):
                return b[i]
            i -= len(b)
        raise IndexError(i)
