"""The ClickHouse tables Runstream writes (single node); the contract the query service reads.

Every table is a ReplacingMergeTree whose ORDER BY is the natural key of what it
stores, so an at-least-once replay of the same events collapses to one row; readers
use FINAL (or argMax over the key) to see deduplicated data. Inserts also carry an
``insert_deduplication_token`` (``non_replicated_deduplication_window`` is set, since it
defaults to 0 = off on non-replicated tables).

Metric points are identified by (producer_id, seq, idx): the producer incarnation,
the event's sequence number and the point's index in the event. A replayed point
has the same identity and is deduplicated; a second value logged at the same step is
a different point and is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runstream.proto.errors import InvalidArgumentError

DEDUP_WINDOW = 10_000
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, ClickHouse type [codec])
    engine: str
    order_by: str
    # Computed by ClickHouse (MATERIALIZED), never inserted: (name, type and expression).
    computed: tuple[tuple[str, str], ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        """The columns an insert supplies, in order."""
        return tuple(c for c, _ in self.columns)

    def ddl(self, database: str) -> str:
        cols = ",\n  ".join(f"`{c}` {t}" for c, t in (*self.columns, *self.computed))
        return (
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{self.name}` (\n  {cols}\n)"
            f" ENGINE = {self.engine} ORDER BY ({self.order_by})"
            f" SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
        )


_ENVELOPE = (("producer_id", "String"), ("seq", "UInt64"), ("ts_ms", "Int64"))

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
        *_ENVELOPE,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank",
)

# One row per status change per rank: RUNNING at start, then FINISHED/FAILED/KILLED.
RUN_STATUS = Table(
    "run_status",
    (
        ("run_id", "String"), ("rank", "UInt32"), ("experiment", "String"),
        ("status", "LowCardinality(String)"), ("error", "String"), *_ENVELOPE,
    ),
    "ReplacingMergeTree",
    "run_id, rank, producer_id, seq",
)

HEARTBEATS = Table(
    "heartbeats",
    (("run_id", "String"), ("rank", "UInt32"), ("ts_ms", "Int64")),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank",
)

PARAMS = Table(
    "params",
    (
        ("run_id", "String"), ("key", "String"), ("value", "String"),
        ("type", "LowCardinality(String)"), ("rank", "UInt32"), *_ENVELOPE,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, key, rank",
)

# One row per (run, key): every rank may set the same tag, so the latest wins, and among
# equal timestamps the highest rank; `ver` makes that choice independent of insert order.
TAGS = Table(
    "tags",
    (("run_id", "String"), ("key", "String"), ("value", "String"), ("rank", "UInt32"), *_ENVELOPE),
    "ReplacingMergeTree(ver)",
    "run_id, key",
    (("ver", "UInt64 MATERIALIZED toUInt64(greatest(ts_ms, 0)) * 1048576 + rank"),),
)

ARTIFACTS = Table(
    "artifacts",
    (
        ("run_id", "String"), ("name", "String"), ("rank", "UInt32"), ("uri", "String"),
        ("size_bytes", "UInt64"), ("sha256", "String"), *_ENVELOPE,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, name, rank",
)

INPUTS = Table(
    "inputs",
    (
        ("run_id", "String"), ("name", "String"), ("rank", "UInt32"), ("uri", "String"),
        ("digest", "String"), ("role", "LowCardinality(String)"), *_ENVELOPE,
    ),
    "ReplacingMergeTree(ts_ms)",
    "run_id, rank, name, uri",
)

METRICS = Table(
    "metrics",
    (
        ("run_id", "String"), ("key", "LowCardinality(String)"), ("rank", "UInt32"),
        ("step", "Int64 CODEC(Delta, ZSTD(1))"), ("value", "Float64 CODEC(ZSTD(1))"),
        ("ts_ms", "Int64 CODEC(Delta, ZSTD(1))"), ("producer_id", "LowCardinality(String)"),
        ("seq", "UInt64 CODEC(Delta, ZSTD(1))"), ("idx", "UInt32 CODEC(Delta, ZSTD(1))"),
    ),
    "ReplacingMergeTree",
    "run_id, key, rank, step, producer_id, seq, idx",
)

TABLES: tuple[Table, ...] = (RUNS, RUN_STATUS, HEARTBEATS, PARAMS, TAGS, ARTIFACTS, INPUTS, METRICS)

# Latest/min/max per (run, key, rank), maintained on insert so summaries never scan points.
# All three aggregates are idempotent, so a replayed point changes nothing.
METRIC_SUMMARIES = "metric_summaries"


def summary_ddl(database: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{METRIC_SUMMARIES}` (\n"
        "  `run_id` String, `key` LowCardinality(String), `rank` UInt32,\n"
        "  `last` AggregateFunction(argMax, Float64, Tuple(Int64, Int64)),\n"
        "  `last_step` SimpleAggregateFunction(max, Int64),\n"
        "  `min` SimpleAggregateFunction(min, Float64),\n"
        "  `max` SimpleAggregateFunction(max, Float64)\n"
        ") ENGINE = AggregatingMergeTree ORDER BY (run_id, key, rank)",
        # The database name is checked by all_ddl; no user text reaches this SQL.
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS `{database}`.`{METRIC_SUMMARIES}_mv`"  # noqa: S608
        f" TO `{database}`.`{METRIC_SUMMARIES}` AS SELECT run_id, key, rank,"
        " argMaxState(value, (step, ts_ms)) AS last, max(step) AS last_step,"
        " min(value) AS min, max(value) AS max"
        f" FROM `{database}`.`{METRICS.name}` GROUP BY run_id, key, rank",
    ]


def all_ddl(database: str) -> list[str]:
    """Statements that create the database and every table; safe to run repeatedly.

    Raises InvalidArgumentError unless ``database`` is a plain identifier.
    """
    if not _IDENTIFIER.fullmatch(database):
        raise InvalidArgumentError(f"database name {database[:80]!r} is not [A-Za-z_][A-Za-z0-9_]*")
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        *(t.ddl(database) for t in TABLES),
        *summary_ddl(database),
    ]
