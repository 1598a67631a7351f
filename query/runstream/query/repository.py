"""Every SQL string the query service runs, against the tables of :mod:`runstream.proto.tables`.

Rules this module keeps:

* Values reach ClickHouse only through server-side binding (``{name:Type}``
  placeholders, ``parameters={...}``); user text never becomes SQL. The few SQL
  variants are chosen from constant fragments by code, never built from input.
* Reads are deduplicated: tables are ReplacingMergeTree, so rows are read with
  ``FINAL`` or aggregated with ``argMax``/``min``/``max`` over their natural key (all
  idempotent under replayed inserts); metric summaries come from the
  AggregatingMergeTree ``metric_summaries`` through ``argMaxMerge``.
* Table names are unqualified: each connection is opened on the configured database.

Thread-safety: :class:`ClickHouseRepository` is safe to share between threads. Each
thread gets its own clickhouse-connect client (a client serializes its calls, and an
HTTP session rejects concurrent queries), created on first use and closed by
:meth:`ClickHouseRepository.close`. Every method blocks on ClickHouse.
"""

from __future__ import annotations

import array
import itertools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ChClient
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from clickhouse_connect.driver.query import QueryResult

from runstream.proto.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    RunstreamError,
    UnavailableError,
)
from runstream.query import deadline
from runstream.query.downsample import Bucket
from runstream.query.filters import LIST_OPS, Agg, Clause, Kind, Op, OrderBy
from runstream.query.models import (
    TERMINAL_STATUSES,
    Artifact,
    CodeVersion,
    Environment,
    ExperimentInfo,
    Gpu,
    IngestPartition,
    Input,
    MetricSummary,
    Package,
    Param,
    Tag,
)
from runstream.query.service import PointRows, RankRow, RunRow, SearchRow, StatusRow
from runstream.query.tokens import PointCursor, RunCursor

T = TypeVar("T")

# ClickHouse errors that mean "nothing was ever written here", not a broken query.
_NOT_CREATED = frozenset({"UNKNOWN_TABLE", "UNKNOWN_DATABASE"})
_TIMEOUT_CODES = frozenset({159, 160, 394})  # TIMEOUT_EXCEEDED, TOO_SLOW, QUERY_WAS_CANCELLED
#: Every query runs read-only (readonly=2 still lets a query set its own limits) and is
#: capped at this many seconds, or the RPC's remaining deadline if sooner.
DEFAULT_MAX_EXECUTION_S = 60.0
_READ_SETTINGS: Mapping[str, Any] = {"readonly": 2}

# --- SQL -------------------------------------------------------------------------------

RUN_EXISTS_SQL = """
SELECT 1 FROM (
    (SELECT 1 FROM runs WHERE run_id = {run_id:String} LIMIT 1)
    UNION ALL (SELECT 1 FROM run_status WHERE run_id = {run_id:String} LIMIT 1)
    UNION ALL (SELECT 1 FROM metrics WHERE run_id = {run_id:String} LIMIT 1)
) LIMIT 1
"""

# The latest RunStarted of each rank (argMax by ts_ms over the (run_id, rank) key), and
# its first one: a restarted rank keeps its original start time.
RANK_ROWS_SQL = """
SELECT
    rank,
    argMax(
        (experiment, name, world_size, local_rank, node,
         git_commit, git_branch, git_remote, git_dirty, in_git_repo,
         python_version, os, command, cpu_count,
         git_diff_sha256, git_diff_uri, cpu_model, memory_bytes, packages, gpus,
         gpu_memory_bytes, gpu_driver, cuda_version),
        ts_ms) AS latest,
    min(ts_ms) AS start_ms,
    run_id
FROM runs
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, rank
ORDER BY run_id, rank
"""

# Latest status per (run, rank): argMax over (ts_ms, seq); duplicates of a status row
# share both, so replays change nothing.
_STATUS_SELECT = """
SELECT
    run_id,
    rank,
    argMax(experiment, (ts_ms, seq)) AS latest_experiment,
    argMax(status, (ts_ms, seq)) AS latest_status,
    argMax(error, (ts_ms, seq)) AS latest_error,
    min(ts_ms) AS first_ms,
    max(ts_ms) AS last_ms
FROM run_status
WHERE run_id IN {run_ids:Array(String)}
"""
_STATUS_GROUP = "\nGROUP BY run_id, rank\nORDER BY run_id, rank\n"
STATUSES_SQL = _STATUS_SELECT + _STATUS_GROUP
STATUSES_OF_RANK_SQL = _STATUS_SELECT + "    AND rank = {rank:UInt32}" + _STATUS_GROUP

# One value per key: the lowest rank's (rank 0 when it logged the key).
PARAMS_SQL = """
SELECT key, argMin(value, rank) AS rank0_value, argMin(type, rank) AS rank0_type
FROM params FINAL
WHERE run_id = {run_id:String}
GROUP BY key
ORDER BY key
"""

TAGS_SQL = """
SELECT key, value
FROM tags FINAL
WHERE run_id = {run_id:String}
ORDER BY key
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
SELECT name, uri, digest, role
FROM inputs FINAL
WHERE run_id = {run_id:String}
GROUP BY name, uri, digest, role
ORDER BY name, uri, min(rank), role
"""

# Merging the per-rank states over all ranks: argMax picks the value at the highest
# (step, ts_ms) of any rank.
METRIC_SUMMARIES_SQL = """
SELECT key, argMaxMerge(last) AS last_value, max(last_step) AS max_step,
       min(min) AS min_value, max(max) AS max_value
FROM metric_summaries
WHERE run_id = {run_id:String}
GROUP BY key
ORDER BY key
"""

# Runs newest start first; the keyset condition is on the (start_ms, run_id) sort key.
_SEARCH_SELECT = """
SELECT
    run_id,
    argMin(experiment, (rank, -ts_ms)) AS run_experiment,
    argMin(name, (rank, -ts_ms)) AS run_name,
    argMin(world_size, (rank, -ts_ms)) AS run_world_size,
    min(ts_ms) AS start_ms
FROM runs
WHERE ({experiment:String} = '' OR experiment = {experiment:String})
GROUP BY run_id
"""
_SEARCH_AFTER = """HAVING (start_ms, run_id) < ({after_start_ms:Int64}, {after_run_id:String})
"""
_SEARCH_ORDER = """ORDER BY start_ms DESC, run_id DESC
LIMIT {limit:UInt32}
"""
SEARCH_RUNS_SQL = _SEARCH_SELECT + _SEARCH_ORDER
SEARCH_RUNS_AFTER_SQL = _SEARCH_SELECT + _SEARCH_AFTER + _SEARCH_ORDER

# Points in (rank, step, ts_ms, producer_id, seq, idx) order; FINAL collapses replays
# (same producer_id, seq, idx). The redundant `rank >=` lets the primary key prune.
_POINTS_SELECT = """
SELECT rank, step, value, ts_ms, producer_id, seq, idx
FROM metrics FINAL
WHERE run_id = {run_id:String} AND key = {key:String}
"""
_POINTS_RANKS = "    AND rank IN {ranks:Array(UInt32)}\n"
_POINTS_AFTER = """    AND rank >= {after_rank:UInt32}
    AND (rank, step, ts_ms, producer_id, seq, idx) > ({after_rank:UInt32}, {after_step:Int64},
        {after_ts_ms:Int64}, {after_producer_id:String}, {after_seq:UInt64}, {after_idx:UInt32})
"""
_POINTS_ORDER = """ORDER BY rank, step, ts_ms, producer_id, seq, idx
LIMIT {limit:UInt32}
"""
POINTS_SQL: Mapping[tuple[bool, bool], str] = {
    (has_ranks, has_after): (
        _POINTS_SELECT
        + (_POINTS_RANKS if has_ranks else "")
        + (_POINTS_AFTER if has_after else "")
        + _POINTS_ORDER
    )
    for has_ranks in (False, True)
    for has_after in (False, True)
}


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
        self._clients: list[ChClient] = []
        self._closed = False

    # --- connections ---

    def _connect(self) -> ChClient:
        kwargs: dict[str, Any] = {
            "dsn": self.dsn, "database": self.database, "settings": self._settings,
        }
        if not self.dsn.startswith("chdb:"):
            # One HTTP session rejects concurrent queries; sessions buy us nothing here.
            kwargs["autogenerate_session_id"] = False
        try:
            return clickhouse_connect.get_client(**kwargs)
        except ClickHouseError as e:
            raise self._error(e, f"cannot open ClickHouse {self.dsn}") from e

    def _error(self, e: ClickHouseError, what: str) -> RunstreamError:
        if getattr(e, "code", None) in _TIMEOUT_CODES:
            return DeadlineExceededError(f"{what}: the query ran past its deadline")
        if isinstance(e, OperationalError):
            return UnavailableError(f"{what}: {e}")
        if getattr(e, "name", None) in _NOT_CREATED or getattr(e, "code", None) in {60, 81}:
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

    def _query(self, sql: str, parameters: Mapping[str, Any]) -> QueryResult:
        left = deadline.remaining_s()
        limit_s = DEFAULT_MAX_EXECUTION_S if left is None else min(left, DEFAULT_MAX_EXECUTION_S)
        settings = {**_READ_SETTINGS, "max_execution_time": max(1, math.ceil(limit_s))}
        try:
            return self._client().query(sql, parameters=dict(parameters), settings=settings)
        except ClickHouseError as e:
            raise self._error(e, "ClickHouse query failed") from e

    def _is_missing_table(self, sql: str, parameters: Mapping[str, Any]) -> QueryResult | None:
        """The query's result, or None if its table does not exist (yet)."""
        try:
            return self._client().query(
                sql, parameters=dict(parameters), settings=dict(_READ_SETTINGS)
            )
        except ClickHouseError as e:
            if getattr(e, "name", None) in _NOT_CREATED or getattr(e, "code", None) in {60, 81}:
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

    def _map(self, sql: str, parameters: Mapping[str, Any], row: Callable[..., T]) -> list[T]:
        return [row(*r) for r in self._rows(sql, parameters)]

    def close(self) -> None:
        """Close every connection; later calls raise UnavailableError. Idempotent."""
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # --- reads ---

    def run_exists(self, run_id: str) -> bool:
        return bool(self._rows(RUN_EXISTS_SQL, {"run_id": run_id}))

    def rank_rows(self, run_id: str) -> list[RankRow]:
        return self.rank_rows_of([run_id])

    def rank_rows_of(self, run_ids: Sequence[str]) -> list[RankRow]:
        """The latest RunStarted of every rank of these runs, by (run_id, rank)."""
        out = []
        for rank, latest, start_ms, run_id in self._rows(RANK_ROWS_SQL, {"run_ids": run_ids}):
            (experiment, name, world_size, local_rank, node, git_commit, git_branch, git_remote,
             git_dirty, in_git_repo, python_version, os_name, command, cpu_count,
             diff_sha256, diff_uri, cpu_model, memory_bytes, packages, gpus, gpu_memory,
             gpu_driver, cuda_version) = latest
            gpu_memory = list(gpu_memory) + [0] * max(0, len(gpus) - len(gpu_memory))
            out.append(
                RankRow(
                    run_id=run_id,
                    rank=int(rank),
                    experiment=experiment,
                    name=name,
                    world_size=int(world_size),
                    local_rank=int(local_rank),
                    node=node,
                    code=CodeVersion(
                        git_commit=git_commit,
                        git_branch=git_branch,
                        git_remote=git_remote,
                        git_dirty=bool(git_dirty),
                        in_git_repo=bool(in_git_repo),
                        diff_sha256=diff_sha256,
                        diff_uri=diff_uri,
                    ),
                    env=Environment(
                        python_version=python_version,
                        os=os_name,
                        command=command,
                        cpu_count=int(cpu_count),
                        cpu_model=cpu_model,
                        memory_bytes=int(memory_bytes),
                        packages=tuple(
                            Package(name=k, version=v) for k, v in sorted(dict(packages).items())
                        ),
                        gpus=tuple(
                            Gpu(name=g, memory_bytes=int(m))
                            for g, m in zip(gpus, gpu_memory, strict=False)
                        ),
                        gpu_driver=gpu_driver,
                        cuda_version=cuda_version,
                    ),
                    start_ms=int(start_ms),
                )
            )
        return out

    def statuses(self, run_ids: Sequence[str], *, rank: int | None = None) -> list[StatusRow]:
        if not run_ids:
            return []
        params: dict[str, Any]
        if rank is None:
            sql, params = STATUSES_SQL, {"run_ids": list(run_ids)}
        else:
            sql, params = STATUSES_OF_RANK_SQL, {"run_ids": list(run_ids), "rank": rank}
        return [
            StatusRow(
                run_id=run_id,
                rank=int(r),
                experiment=experiment,
                status=status,
                error=error,
                first_ms=int(first_ms),
                last_ms=int(last_ms),
            )
            for run_id, r, experiment, status, error, first_ms, last_ms in self._rows(sql, params)
        ]

    def params(self, run_id: str) -> list[Param]:
        return self._map(
            PARAMS_SQL, {"run_id": run_id}, lambda k, v, t: Param(key=k, value=v, type=t)
        )

    def tags(self, run_id: str) -> list[Tag]:
        return self._map(TAGS_SQL, {"run_id": run_id}, lambda k, v: Tag(key=k, value=v))

    def artifacts(self, run_id: str) -> list[Artifact]:
        return self._map(
            ARTIFACTS_SQL,
            {"run_id": run_id},
            lambda n, u, s, h: Artifact(name=n, uri=u, size_bytes=int(s), sha256=h),
        )

    def inputs(self, run_id: str) -> list[Input]:
        return self._map(
            INPUTS_SQL,
            {"run_id": run_id},
            lambda n, u, d, r: Input(name=n, uri=u, digest=d, role=r),
        )

    def metric_summaries(self, run_id: str) -> list[MetricSummary]:
        return self._map(
            METRIC_SUMMARIES_SQL,
            {"run_id": run_id},
            lambda k, last, step, lo, hi: MetricSummary(
                key=k, last=float(last), last_step=int(step), min=float(lo), max=float(hi)
            ),
        )

    def search_runs(self, experiment: str, after: RunCursor | None, limit: int) -> list[RunRow]:
        params: dict[str, Any] = {"experiment": experiment, "limit": limit}
        sql = SEARCH_RUNS_SQL
        if after is not None:
            sql = SEARCH_RUNS_AFTER_SQL
            params.update(after_start_ms=after.start_ms, after_run_id=after.run_id)
        return self._map(
            sql,
            params,
            lambda run_id, exp, name, ws, start: RunRow(
                run_id=run_id, experiment=exp, name=name, world_size=int(ws), start_ms=int(start)
            ),
        )

    def metric_points(
        self,
        run_id: str,
        key: str,
        ranks: Sequence[int],
        after: PointCursor | None,
        limit: int,
    ) -> PointRows:
        params: dict[str, Any] = {"run_id": run_id, "key": key, "limit": limit}
        if ranks:
            params["ranks"] = list(ranks)
        if after is not None:
            params.update(
                after_rank=after.rank,
                after_step=after.step,
                after_ts_ms=after.ts_ms,
                after_producer_id=after.producer_id,
                after_seq=after.seq,
                after_idx=after.idx,
            )
        sql = POINTS_SQL[(bool(ranks), after is not None)]
        r, s, v, t, p, q, i = self._column_blocks(sql, params, 7)
        # The identity columns only serve the page's cursor: they stay in blocks, read by
        # index, never converted point by point.
        return PointRows(ranks=_flat(r), steps=_flat(s), values=_flat(v), ts_ms=_flat(t),
                         producer_ids=_Blocks(p), seqs=_Blocks(q), idxs=_Blocks(i))

    # --- SearchRuns ---

    def search(
        self,
        experiments: Sequence[str],
        clauses: Sequence[Clause],
        order_by: Sequence[OrderBy],
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[SearchRow]:
        """Runs matching every clause, in order_by order then newest start first."""
        compiled = compile_search(experiments, clauses, order_by, after, limit)
        width = len(compiled.keyset)
        out = []
        for row in self._rows(compiled.sql, compiled.parameters):
            run_id, experiment, name, world_size, start_ms, status, end_ms = row[:7]
            keys = [*row[7:], int(start_ms), run_id]
            out.append(SearchRow(
                run_id=run_id, experiment=experiment, name=name, world_size=int(world_size),
                start_ms=int(start_ms), status=status, end_ms=int(end_ms),
                keyset=tuple(_plain(v) for v in keys[:width]),
            ))
        return out

    # --- GetMetricHistory downsampling and aggregates ---

    def _series(self, run_id: str, key: str, ranks: Sequence[int],
                aggregate: str) -> tuple[str, str, dict[str, Any]]:
        """(source, where-on-source, parameters) of one (possibly aggregated) series."""
        params: dict[str, Any] = {"run_id": run_id, "key": key}
        ranks_sql = ""
        if ranks:
            params["ranks"] = list(ranks)
            ranks_sql = _RANKS_WHERE
        where = _SERIES_WHERE.format(ranks=ranks_sql)
        if aggregate:
            source = _AGG_SOURCE.format(agg=_AGG_FUNCS[aggregate], where=where)
            return source, "NOT isNaN(value)", params
        return "metrics", where + " AND NOT isNaN(value)", params

    def series_range(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str
    ) -> tuple[int, int, int]:
        """(min step, max step, point count) of the series' non-NaN points; count 0 if none."""
        source, where, params = self._series(run_id, key, ranks, aggregate)
        row = self._rows(_RANGE_SQL.format(source=source, where=where), params)[0]
        return int(row[0]), int(row[1]), int(row[2])

    def buckets(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, lo: int, width: int
    ) -> list[Bucket]:
        """Buckets of ``width`` steps from step ``lo``, per rank (rank 0 when aggregated)."""
        source, where, params = self._series(run_id, key, ranks, aggregate)
        params.update(lo=lo, width=width)
        sql = _BUCKETS_SQL.format(source=source, where=where, min_key=_MIN_KEY, max_key=_MAX_KEY)
        out = []
        for (rank, bucket, n, lo_v, hi_v, min_s, min_v, min_t, max_s, max_v, max_t, avg_step,
             avg_v, first_s, first_v, first_t, last_s, last_v, last_t) in self._rows(sql, params):
            out.append(Bucket(
                int(rank), int(bucket), int(n), float(lo_v), float(hi_v),
                (int(min_s), float(min_v), int(min_t)), (int(max_s), float(max_v), int(max_t)),
                float(avg_step), float(avg_v), (int(first_s), float(first_v), int(first_t)),
                (int(last_s), float(last_v), int(last_t)),
            ))
        return out

    def aggregate_points(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, after_step: int,
        limit: int,
    ) -> tuple[list[int], list[float], list[int]]:
        """Steps, aggregated values and latest ts_ms after ``after_step``, by step."""
        source, _, params = self._series(run_id, key, ranks, aggregate)
        params.update(after_step=after_step, limit=limit)
        steps, values, ts = self._columns(_AGG_PAGE_SQL.format(source=source), params, 3)
        return steps, values, ts

    # --- FollowRun ---

    def series_tips(self, run_id: str) -> dict[tuple[str, int], int]:
        """The highest step stored so far of every (key, rank) of a run."""
        return {(k, int(r)): int(s) for k, r, s in self._rows(_FOLLOW_TIPS_SQL, {"run_id": run_id})}

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
        sql = _FOLLOW_SELECT.format(
            keys=_FOLLOW_KEYS if keys else "", ranks=_RANKS_WHERE if ranks else ""
        )
        if keys:
            params["keys"] = list(keys)
        if ranks:
            params["ranks"] = list(ranks)
        if cursors:
            params["cursor_series"] = [f"{k}\n{r}" for k, r in cursors]
            params["cursor_steps"] = list(cursors.values())
            sql += _FOLLOW_AFTER_EACH
        else:
            sql += _FOLLOW_AFTER_ALL
        sql += _FOLLOW_ORDER
        k, r, s, v, t = self._columns(sql, params, 5)
        return k, r, s, v, t

    # --- experiments, compare, ingestion ---

    def experiments(self, limit: int) -> list[ExperimentInfo]:
        return self._map(
            EXPERIMENTS_SQL, {"limit": limit},
            lambda e, n, t: ExperimentInfo(experiment=e, run_count=int(n), last_start_ms=int(t)),
        )

    def params_of(self, run_ids: Sequence[str]) -> dict[str, list[Param]]:
        out: dict[str, list[Param]] = {r: [] for r in run_ids}
        for run_id, k, v, t in self._rows(PARAMS_OF_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Param(key=k, value=v, type=t))
        return out

    def tags_of(self, run_ids: Sequence[str]) -> dict[str, list[Tag]]:
        out: dict[str, list[Tag]] = {r: [] for r in run_ids}
        for run_id, k, v in self._rows(TAGS_OF_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Tag(key=k, value=v))
        return out

    def inputs_of(self, run_ids: Sequence[str]) -> dict[str, list[Input]]:
        out: dict[str, list[Input]] = {r: [] for r in run_ids}
        for run_id, n, u, d, role in self._rows(INPUTS_OF_SQL, {"run_ids": list(run_ids)}):
            out.setdefault(run_id, []).append(Input(name=n, uri=u, digest=d, role=role))
        return out

    def summaries_of(
        self, run_ids: Sequence[str], keys: Sequence[str]
    ) -> dict[str, list[MetricSummary]]:
        params: dict[str, Any] = {"run_ids": list(run_ids)}
        if keys:
            params["keys"] = list(keys)
        sql = SUMMARIES_OF_SQL.format(keys=" AND key IN {keys:Array(String)}" if keys else "")
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

    def ingest_progress(self, since_ms: int) -> list[IngestPartition]:
        """Latest row per (consumer, source, topic, partition) since ``since_ms``; [] if the
        consumer has not created ``ingest_progress`` yet."""
        result = self._is_missing_table(INGEST_SQL, {"since_ms": since_ms})
        if result is None:
            return []
        return [
            IngestPartition(
                consumer_id=c, source=s, topic=t, partition=int(p), committed_offset=int(co),
                end_offset=int(eo), lag=int(lag), points_total=int(pt), points_per_s=float(pps),
                batch_latency_ms=float(bl), ts_ms=int(ts),
            )
            for c, s, t, p, co, eo, lag, pt, pps, bl, ts in result.result_rows
        ]


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


def _plain(value: Any) -> Any:
    """A keyset value as JSON keeps it (bool -> int; floats stay floats)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        return value
    return str(value)


# --- SearchRuns: a parsed filter compiled from constant fragments ------------------------
#
# Every name and value of the filter is a bound parameter ({c<i>_k:String}, ...); the SQL
# text is assembled only from the constants below, chosen by the AST's enums, and from
# placeholder names generated from clause indexes, never from input. (That is why S608
# is silenced on those f-strings.)

_OPS_SQL: Mapping[Op, str] = {
    Op.EQ: "=", Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=",
    Op.LIKE: "LIKE", Op.ILIKE: "ILIKE", Op.NOT_LIKE: "NOT LIKE", Op.NOT_ILIKE: "NOT ILIKE",
    Op.IN: "IN", Op.NOT_IN: "NOT IN",
}
# Over the rows of one key among several: `{k}` is that key's placeholder.
_METRIC_AGG_IF_SQL: Mapping[Agg, str] = {
    Agg.LATEST: "argMaxMergeIf(last, key = {k})", Agg.MIN: "minIf(min, key = {k})",
    Agg.MAX: "maxIf(max, key = {k})",
}
_ATTRIBUTE_SQL: Mapping[str, str] = {
    "run_id": "r.run_id", "experiment": "r.run_experiment", "name": "r.run_name",
    "status": "run_status", "start_ms": "r.start_ms", "end_ms": "run_end_ms",
    "world_size": "r.run_world_size",
}
_ATTRIBUTE_TYPE: Mapping[str, str] = {
    "run_id": "String", "experiment": "String", "name": "String", "status": "String",
    "start_ms": "Int64", "end_ms": "Int64", "world_size": "UInt32",
}
_DATASET_SQL: Mapping[str, str] = {"name": "name", "digest": "digest", "uri": "uri", "role": "role"}

# Sort keys packed into one UInt128 (order-preserving bits of each part): argMin/argMax
# over them are much cheaper than over tuples. (rank, -ts_ms) and (ts_ms, seq):
_ORDERED_TS = "bitXor(reinterpretAsUInt64(ts_ms), 0x8000000000000000)"
_RANK_NEWEST_KEY = f"bitOr(bitShiftLeft(toUInt128(rank), 64), toUInt128(bitNot({_ORDERED_TS})))"
_TS_SEQ_KEY = f"bitOr(bitShiftLeft(toUInt128({_ORDERED_TS}), 64), toUInt128(seq))"

_SEARCH_BASE = """
SELECT
    r.run_id AS run_id, r.run_experiment AS experiment, r.run_name AS name,
    r.run_world_size AS world_size, r.start_ms AS start_ms,
    ifNull(s.status, 'RUN_STATUS_UNSPECIFIED') AS run_status,
    if(run_status IN {{terminal:Array(String)}}, ifNull(s.last_ms, 0), 0) AS run_end_ms{sort_cols}
FROM (
    WITH {rank_newest} AS rank_newest
    SELECT run_id,
        argMin(experiment, rank_newest) AS run_experiment,
        argMin(name, rank_newest) AS run_name,
        argMin(world_size, rank_newest) AS run_world_size,
        min(ts_ms) AS start_ms
    FROM runs
    {experiment_where}
    GROUP BY run_id
) AS r
LEFT JOIN (
    WITH {ts_seq} AS ts_seq
    SELECT run_id, argMax(status, ts_seq) AS status, max(ts_ms) AS last_ms
    FROM run_status
    WHERE rank = 0
    GROUP BY run_id
) AS s ON s.run_id = r.run_id{joins}
WHERE 1{where}
ORDER BY {order}
LIMIT {{limit:UInt32}}
SETTINGS join_use_nulls = 1
"""
_EXPERIMENT_WHERE = "WHERE experiment IN {experiments:Array(String)}"
# Every metric the filter and the order_by name, read in one pass over metric_summaries:
# reading the argMax states costs far more than merging them, and each pass reads the
# states of every key (keys interleave within a run's rows).
_METRICS_JOIN = """
LEFT JOIN (
    SELECT run_id{columns}
    FROM metric_summaries
    WHERE key IN {{metric_keys:Array(String)}}
    GROUP BY run_id
) AS m ON m.run_id = r.run_id"""


@dataclass(frozen=True, slots=True)
class SortColumn:
    """One column of the keyset: its SELECT alias, ClickHouse type and direction."""

    alias: str
    ch_type: str
    descending: bool


@dataclass(frozen=True, slots=True)
class CompiledSearch:
    sql: str
    parameters: dict[str, Any]
    #: The keyset, in ORDER BY order (ends with start_ms DESC, run_id DESC).
    keyset: tuple[SortColumn, ...]


def _value_param(clause: Clause, name: str, numeric: bool) -> tuple[str, Any]:
    """The placeholder text and the bound value of a clause's value(s)."""
    ch_type = "Float64" if numeric else "String"
    if clause.op in LIST_OPS:
        return f"{{{name}:Array({ch_type})}}", list(clause.values)
    return f"{{{name}:{ch_type}}}", clause.values[0]


class _MetricColumns:
    """The columns of the one metric_summaries join: (has, value) per (key, aggregate)."""

    def __init__(self, params: dict[str, Any]) -> None:
        self._params = params
        self.columns: list[str] = []
        self.keys: list[str] = []

    def add(self, name: str, key: str, agg: Agg) -> tuple[str, str]:
        """(has-the-key, aggregate) expressions, NULL for a run without metrics; ``name``
        is the placeholder prefix (``c0``, ``o1``)."""
        k = f"{name}_k"
        self._params[k] = key
        self.keys.append(key)
        placeholder = f"{{{k}:String}}"
        self.columns.append(f"countIf(key = {placeholder}) > 0 AS {name}_has")
        self.columns.append(f"{_METRIC_AGG_IF_SQL[agg].format(k=placeholder)} AS {name}_m")
        return f"m.{name}_has", f"m.{name}_m"


def _clause_sql(i: int, clause: Clause, params: dict[str, Any], metrics: _MetricColumns) -> str:
    op = _OPS_SQL[clause.op]
    field = clause.field
    k, v = f"c{i}_k", f"c{i}_v"
    if field.kind is Kind.ATTRIBUTE:
        numeric = _ATTRIBUTE_TYPE[field.name] != "String"
        placeholder, params[v] = _value_param(clause, v, numeric)
        column = _ATTRIBUTE_SQL[field.name]
        if numeric:
            column = f"toFloat64({column})"
        return f"{column} {op} {placeholder}"
    if field.kind is Kind.DATASET:
        placeholder, params[v] = _value_param(clause, v, False)
        column = _DATASET_SQL[field.name]
        return (f"r.run_id IN (SELECT run_id FROM inputs FINAL"  # noqa: S608
                f" WHERE {column} {op} {placeholder})")
    if field.kind is Kind.METRIC:
        placeholder, params[v] = _value_param(clause, v, True)
        has, value = metrics.add(f"c{i}", field.name, field.agg)
        return f"({has} AND {value} {op} {placeholder})"
    params[k] = field.name
    if field.kind is Kind.PARAM:
        placeholder, params[v] = _value_param(clause, v, clause.numeric)
        value = "toFloat64OrNull(argMin(value, rank))" if clause.numeric else "argMin(value, rank)"
        return (f"r.run_id IN (SELECT run_id FROM params FINAL WHERE key = {{{k}:String}}"  # noqa: S608
                f" GROUP BY run_id HAVING {value} {op} {placeholder})")
    # tags
    placeholder, params[v] = _value_param(clause, v, False)
    return (f"r.run_id IN (SELECT run_id FROM tags FINAL WHERE key = {{{k}:String}}"  # noqa: S608
            f" AND value {op} {placeholder})")


def _order_sql(
    j: int, item: OrderBy, params: dict[str, Any], metrics: _MetricColumns
) -> tuple[str, list[tuple[str, str]]]:
    """(join, [(expression, ClickHouse type)]) for one order-by item; expressions may be NULL."""
    field = item.field
    if field.kind is Kind.ATTRIBUTE:
        return "", [(_ATTRIBUTE_SQL[field.name], _ATTRIBUTE_TYPE[field.name])]
    if field.kind is Kind.DATASET:
        raise InvalidArgumentError("order_by on datasets.* is not supported")
    if field.kind is Kind.METRIC:
        has, value = metrics.add(f"o{j}", field.name, field.agg)
        return "", [(f"if({has} AND NOT isNaN({value}), {value}, NULL)", "Float64")]
    k = f"o{j}_k"
    params[k] = field.name
    if field.kind is Kind.PARAM:
        join = (f"\nLEFT JOIN (SELECT run_id, argMin(value, rank) AS v FROM params FINAL"  # noqa: S608
                f" WHERE key = {{{k}:String}} GROUP BY run_id) AS o{j} ON o{j}.run_id = r.run_id")
        # Numbers first, in numeric order; then text in text order.
        return join, [(f"toFloat64OrNull(o{j}.v)", "Float64"), (f"o{j}.v", "String")]
    join = (f"\nLEFT JOIN (SELECT run_id, value AS v FROM tags FINAL"  # noqa: S608
            f" WHERE key = {{{k}:String}}) AS o{j} ON o{j}.run_id = r.run_id")
    return join, [(f"o{j}.v", "String")]


_ZERO = {"Float64": "0", "String": "''", "Int64": "0", "UInt32": "0"}


def compile_search(
    experiments: Sequence[str],
    clauses: Sequence[Clause],
    order_by: Sequence[OrderBy],
    after: Sequence[Any] | None,
    limit: int,
) -> CompiledSearch:
    """The SearchRuns SQL and its parameters (pure). ``after``: keyset values of the last
    row served, as :attr:`CompiledSearch.keyset` lists them."""
    params: dict[str, Any] = {"limit": limit, "terminal": sorted(TERMINAL_STATUSES)}
    metrics = _MetricColumns(params)
    where = [_clause_sql(i, c, params, metrics) for i, c in enumerate(clauses)]
    joins: list[str] = []
    sort_cols: list[str] = []
    keyset: list[SortColumn] = []
    for j, item in enumerate(order_by):
        join, exprs = _order_sql(j, item, params, metrics)
        joins.append(join)
        for m, (expr, ch_type) in enumerate(exprs):
            # Nulls (runs without the field) sort last in either direction.
            sort_cols.append(f"isNull({expr}) AS s{j}_{m}_n")
            sort_cols.append(f"ifNull({expr}, {_ZERO[ch_type]}) AS s{j}_{m}_v")
            keyset.append(SortColumn(f"s{j}_{m}_n", "UInt8", False))
            keyset.append(SortColumn(f"s{j}_{m}_v", ch_type, item.descending))
    keyset.append(SortColumn("start_ms", "Int64", True))
    keyset.append(SortColumn("run_id", "String", True))
    if after is not None:
        if len(after) != len(keyset):
            raise InvalidArgumentError("page_token does not match this request's order_by")
        ors = []
        for idx, col in enumerate(keyset):
            value = after[idx]
            if (col.ch_type == "String") != isinstance(value, str) or (
                col.ch_type in ("UInt8", "UInt32", "Int64") and not isinstance(value, int)
            ):
                raise InvalidArgumentError(
                    "page_token is malformed; pass a token from a previous response"
                )
            params[f"a{idx}"] = value
            terms = [f"{c.alias} = {{a{i}:{c.ch_type}}}" for i, c in enumerate(keyset[:idx])]
            terms.append(f"{col.alias} {'<' if col.descending else '>'} {{a{idx}:{col.ch_type}}}")
            ors.append("(" + " AND ".join(terms) + ")")
        where.append("(" + " OR ".join(ors) + ")")
    if experiments:
        params["experiments"] = list(experiments)
    if metrics.columns:
        params["metric_keys"] = sorted(set(metrics.keys))
        joins.insert(0, _METRICS_JOIN.format(
            columns="".join(",\n        " + c for c in metrics.columns)))
    sql = _SEARCH_BASE.format(
        rank_newest=_RANK_NEWEST_KEY,
        ts_seq=_TS_SEQ_KEY,
        sort_cols="".join(",\n    " + c for c in sort_cols),
        experiment_where=_EXPERIMENT_WHERE if experiments else "",
        joins="".join(joins),
        where="".join(f"\n    AND {w}" for w in where),
        order=", ".join(f"{c.alias} {'DESC' if c.descending else 'ASC'}" for c in keyset),
    )
    return CompiledSearch(sql, params, tuple(keyset))


# --- metric history: downsampling buckets, aggregates across ranks ---------------------

_SERIES_WHERE = """run_id = {{run_id:String}} AND key = {{key:String}}{ranks}"""
_RANKS_WHERE = " AND rank IN {ranks:Array(UInt32)}"

# Per (rank, step): each rank's latest value at the step (idempotent under replays),
# then across ranks.
_AGG_SOURCE = """(
    SELECT toUInt32(0) AS rank, step, {agg}(v) AS value, max(t) AS ts_ms FROM (
        SELECT rank, step, argMax(value, (ts_ms, seq, idx)) AS v, max(ts_ms) AS t
        FROM metrics
        WHERE {where}
        GROUP BY rank, step
    )
    GROUP BY step
)"""
_AGG_FUNCS = {"mean": "avg", "min": "min", "max": "max"}

_RANGE_SQL = """
SELECT min(step), max(step), count()
FROM {source}
WHERE {where}
"""

# One row per (rank, bucket): its extremes with where they were, its centroid, first and last.
# The extremes' tie-break (lowest step among equal values) is one UInt128 sort key: the
# value's order-preserving bits above the step's. argMin over it, with plain columns as
# payload, is several times faster than over (value, step) tuples with tuple payloads.
# NaN never gets here (filtered); `value + 0.` folds -0.0 into 0.0, as tuple comparison does.
_ORDERED_VALUE = (
    "if(value < 0, bitNot(reinterpretAsUInt64(value)),"
    " bitOr(reinterpretAsUInt64(value + 0.), 0x8000000000000000))"
)
_ORDERED_STEP = "bitXor(reinterpretAsUInt64(step), 0x8000000000000000)"
#: (value, step) and (value, -step) as one comparable number each.
_MIN_KEY = f"bitOr(bitShiftLeft(toUInt128({_ORDERED_VALUE}), 64), toUInt128({_ORDERED_STEP}))"
_MAX_KEY = (f"bitOr(bitShiftLeft(toUInt128({_ORDERED_VALUE}), 64),"
            f" toUInt128(bitNot({_ORDERED_STEP})))")
_BUCKETS_SQL = """
WITH {min_key} AS min_key, {max_key} AS max_key
SELECT rank, intDiv(step - {{lo:Int64}}, {{width:Int64}}) AS bucket, count() AS n,
    min(value) AS lo_v, max(value) AS hi_v,
    argMin(step, min_key), argMin(value, min_key), argMin(ts_ms, min_key),
    argMax(step, max_key), argMax(value, max_key), argMax(ts_ms, max_key),
    avg(step) AS avg_step, avg(value) AS avg_v,
    min(step), argMin(value, step), argMin(ts_ms, step),
    max(step), argMax(value, step), argMax(ts_ms, step)
FROM {source}
WHERE {where}
GROUP BY rank, bucket
ORDER BY rank, bucket
"""

_AGG_PAGE_SQL = """
SELECT step, value, ts_ms FROM {source}
WHERE step > {{after_step:Int64}}
ORDER BY step
LIMIT {{limit:UInt32}}
"""


# --- FollowRun, experiments, compare, ingest -------------------------------------------

_FOLLOW_SELECT = """
SELECT key, rank, step, value, ts_ms
FROM metrics FINAL
WHERE run_id = {{run_id:String}}{keys}{ranks}
"""
_FOLLOW_KEYS = " AND key IN {keys:Array(String)}"
_FOLLOW_AFTER_ALL = "\n    AND step > {from_step:Int64}"
# Per (key, rank) cursors: a series not seen yet starts after from_step.
_FOLLOW_AFTER_EACH = """
    AND step > transform(concat(toString(key), '\\n', toString(rank)),
                         {cursor_series:Array(String)}, {cursor_steps:Array(Int64)},
                         {from_step:Int64})"""
_FOLLOW_ORDER = """
ORDER BY step, key, rank, ts_ms, producer_id, seq, idx
LIMIT {limit:UInt32}
"""
_FOLLOW_TIPS_SQL = """
SELECT key, rank, max(step) FROM metrics
WHERE run_id = {run_id:String}
GROUP BY key, rank
"""

EXPERIMENTS_SQL = """
SELECT experiment, count() AS runs, max(start_ms) FROM (
    SELECT run_id, argMin(experiment, (rank, -ts_ms)) AS experiment, min(ts_ms) AS start_ms
    FROM runs
    GROUP BY run_id
)
GROUP BY experiment
ORDER BY experiment
LIMIT {limit:UInt32}
"""

PARAMS_OF_SQL = """
SELECT run_id, key, argMin(value, rank), argMin(type, rank)
FROM params FINAL
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, key
ORDER BY run_id, key
"""
TAGS_OF_SQL = """
SELECT run_id, key, value FROM tags FINAL
WHERE run_id IN {run_ids:Array(String)}
ORDER BY run_id, key
"""
INPUTS_OF_SQL = """
SELECT run_id, name, uri, digest, role FROM inputs FINAL
WHERE run_id IN {run_ids:Array(String)}
GROUP BY run_id, name, uri, digest, role
ORDER BY run_id, name, uri, role
"""
SUMMARIES_OF_SQL = """
SELECT run_id, key, argMaxMerge(last), max(last_step), min(min), max(max)
FROM metric_summaries
WHERE run_id IN {{run_ids:Array(String)}}{keys}
GROUP BY run_id, key
ORDER BY run_id, key
"""
# The lowest step at which each run reached its min and its max (NaN never wins).
BEST_STEPS_SQL = """
SELECT run_id, key,
    argMin(step, (value, step)), argMax(step, (value, -step))
FROM metrics
WHERE run_id IN {run_ids:Array(String)} AND key IN {keys:Array(String)} AND NOT isNaN(value)
GROUP BY run_id, key
"""

INGEST_SQL = """
SELECT consumer_id, source, topic, partition,
    argMax(committed_offset, ts_ms), argMax(end_offset, ts_ms), argMax(lag, ts_ms),
    argMax(points_total, ts_ms), argMax(points_per_s, ts_ms),
    argMax(batch_latency_ms, ts_ms), max(ts_ms)
FROM ingest_progress
WHERE ts_ms >= {since_ms:Int64}
GROUP BY consumer_id, source, topic, partition
ORDER BY consumer_id, source, topic, partition
"""
