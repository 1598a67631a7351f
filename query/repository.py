"""Every SQL string the query service runs, against the tables ``consumer/schema.py`` defines.

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

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import clickhouse_connect
from clickhouse_connect.driver.client import Client as ChClient
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from clickhouse_connect.driver.query import QueryResult

from runstream.proto.errors import RunstreamError, UnavailableError
from runstream.query.models import (
    Artifact,
    CodeVersion,
    Environment,
    Input,
    MetricSummary,
    Param,
    Tag,
)
from runstream.query.service import PointRows, RankRow, RunRow, StatusRow
from runstream.query.tokens import PointCursor, RunCursor

T = TypeVar("T")

# ClickHouse errors that mean "nothing was ever written here", not a broken query.
_NOT_CREATED = frozenset({"UNKNOWN_TABLE", "UNKNOWN_DATABASE"})

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
         python_version, os, command, cpu_count),
        ts_ms) AS latest,
    min(ts_ms) AS start_ms
FROM runs
WHERE run_id = {run_id:String}
GROUP BY rank
ORDER BY rank
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
        try:
            return self._client().query(sql, parameters=dict(parameters))
        except ClickHouseError as e:
            raise self._error(e, "ClickHouse query failed") from e

    def _rows(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return self._query(sql, parameters).result_rows

    def _columns(self, sql: str, parameters: Mapping[str, Any], width: int) -> list[list[Any]]:
        result = self._query(sql, parameters)
        if not result.row_count:
            return [[] for _ in range(width)]
        return [list(col) for col in result.result_columns]

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
        out = []
        for rank, latest, start_ms in self._rows(RANK_ROWS_SQL, {"run_id": run_id}):
            (experiment, name, world_size, local_rank, node, git_commit, git_branch, git_remote,
             git_dirty, in_git_repo, python_version, os_name, command, cpu_count) = latest
            out.append(
                RankRow(
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
                    ),
                    env=Environment(
                        python_version=python_version,
                        os=os_name,
                        command=command,
                        cpu_count=int(cpu_count),
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
        r, s, v, t, p, q, i = self._columns(sql, params, 7)
        return PointRows(ranks=r, steps=s, values=v, ts_ms=t, producer_ids=p, seqs=q, idxs=i)
