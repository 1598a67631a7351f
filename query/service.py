"""The query logic: validate requests, read through a repository, assemble domain objects.

Knows nothing of gRPC (the servicer converts) and nothing of SQL (the repository owns
it). Errors are :mod:`runstream.proto.errors` classes: a bad request raises
:class:`InvalidArgumentError`, an unknown run :class:`NotFoundError`.

Thread-safety: :class:`QueryService` keeps no mutable state of its own; it is as safe
to call from many threads as its repository (``ClickHouseRepository`` is).
Every method blocks on the repository.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from runstream.proto.errors import InvalidArgumentError, NotFoundError, ValidationError
from runstream.proto.validation import MAX_EXPERIMENT_LEN, MAX_WORLD_SIZE, check_key, check_run_id
from runstream.query import tokens
from runstream.query.models import (
    TERMINAL_STATUSES,
    UNSPECIFIED,
    Artifact,
    CodeVersion,
    Environment,
    Input,
    MetricHistory,
    MetricSummary,
    Param,
    RankInfo,
    Run,
    RunInfo,
    RunPage,
    Tag,
)
from runstream.query.tokens import PointCursor, RunCursor

DEFAULT_RUNS_PAGE_SIZE = 100
MAX_RUNS_PAGE_SIZE = 1000
DEFAULT_HISTORY_PAGE_SIZE = 100_000
MAX_HISTORY_PAGE_SIZE = 1_000_000
MAX_RANKS_FILTER = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class RankRow:
    """One rank's latest ``runs`` row (its RunStarted), and when it first started."""

    rank: int
    experiment: str
    name: str
    world_size: int
    local_rank: int
    node: str
    code: CodeVersion
    env: Environment
    start_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One rank's latest status (argMax over (ts_ms, seq)) and the times around it."""

    run_id: str
    rank: int
    experiment: str
    status: str
    error: str
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRow:
    """A run as ``runs`` lists it: lowest rank's values preferred, earliest start."""

    run_id: str
    experiment: str
    name: str
    world_size: int
    start_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PointRows:
    """A page of metric points, columnar, with the identity columns that complete the sort key."""

    ranks: list[int]
    steps: list[int]
    values: list[float]
    ts_ms: list[int]
    producer_ids: list[str]
    seqs: list[int]
    idxs: list[int]

    def cursor(self, i: int) -> PointCursor:
        """The full sort key of point ``i``."""
        return PointCursor(
            self.ranks[i], self.steps[i], self.ts_ms[i], self.producer_ids[i], self.seqs[i],
            self.idxs[i],
        )


class RunRepository(Protocol):
    """What the service needs from storage; every read is deduplicated."""

    def run_exists(self, run_id: str) -> bool: ...
    def rank_rows(self, run_id: str) -> list[RankRow]: ...
    def statuses(self, run_ids: Sequence[str], *, rank: int | None = None) -> list[StatusRow]: ...
    def params(self, run_id: str) -> list[Param]: ...
    def tags(self, run_id: str) -> list[Tag]: ...
    def artifacts(self, run_id: str) -> list[Artifact]: ...
    def inputs(self, run_id: str) -> list[Input]: ...
    def metric_summaries(self, run_id: str) -> list[MetricSummary]: ...

    def search_runs(
        self, experiment: str, after: RunCursor | None, limit: int
    ) -> list[RunRow]: ...

    def metric_points(
        self,
        run_id: str,
        key: str,
        ranks: Sequence[int],
        after: PointCursor | None,
        limit: int,
    ) -> PointRows: ...


# --- request validation (pure) -------------------------------------------------------


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` or raise InvalidArgumentError (1..64 of [A-Za-z0-9._-])."""
    try:
        check_run_id(run_id)
    except ValidationError as e:
        raise InvalidArgumentError(str(e)) from e
    return run_id


def validate_metric_key(key: str) -> str:
    try:
        check_key("metric", key)
    except ValidationError as e:
        raise InvalidArgumentError(str(e)) from e
    return key


def validate_experiment(experiment: str) -> str:
    """"" (all experiments) or a name of at most 256 characters."""
    if len(experiment) > MAX_EXPERIMENT_LEN:
        raise InvalidArgumentError(
            f"experiment is {len(experiment)} characters, over the limit of {MAX_EXPERIMENT_LEN}"
        )
    return experiment


def page_size_or_default(page_size: int, default: int, maximum: int) -> int:
    """0 means ``default``; otherwise 1..``maximum`` or InvalidArgumentError."""
    if page_size == 0:
        return default
    if not 1 <= page_size <= maximum:
        raise InvalidArgumentError(f"page_size {page_size} out of range 1..{maximum} (0 = default)")
    return page_size


def validate_ranks(ranks: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct ranks, each 0..MAX_WORLD_SIZE-1."""
    out = sorted(set(ranks))
    if len(out) > MAX_RANKS_FILTER:
        raise InvalidArgumentError(f"{len(out)} ranks in the filter, over {MAX_RANKS_FILTER}")
    for rank in out:
        if not 0 <= rank < MAX_WORLD_SIZE:
            raise InvalidArgumentError(f"rank {rank} out of range 0..{MAX_WORLD_SIZE - 1}")
    return tuple(out)


# --- assembly (pure) -------------------------------------------------------------------


def run_end_ms(status: StatusRow | None) -> int:
    """When the rank reached a terminal status; 0 while it runs (or has no status yet)."""
    if status is None or status.status not in TERMINAL_STATUSES:
        return 0
    return status.last_ms


def assemble_run_info(
    run_id: str, ranks: Sequence[RankRow], statuses: Sequence[StatusRow]
) -> RunInfo:
    """RunInfo from per-rank rows: lowest rank's metadata, rank 0's status, earliest start."""
    by_rank = sorted(ranks, key=lambda r: r.rank)
    status0 = next((s for s in statuses if s.rank == 0), None)
    head = by_rank[0] if by_rank else None
    starts = [r.start_ms for r in by_rank] or [s.first_ms for s in statuses]
    return RunInfo(
        run_id=run_id,
        experiment=head.experiment if head else (statuses[0].experiment if statuses else ""),
        name=head.name if head else "",
        status=status0.status if status0 else UNSPECIFIED,
        start_ms=min(starts) if starts else 0,
        end_ms=run_end_ms(status0),
        world_size=head.world_size if head else 0,
    )


def assemble_ranks(ranks: Sequence[RankRow], statuses: Sequence[StatusRow]) -> tuple[RankInfo, ...]:
    """One RankInfo per rank seen in either ``runs`` or ``run_status``, by rank."""
    rows = {r.rank: r for r in ranks}
    status = {s.rank: s for s in statuses}
    out = []
    for rank in sorted(rows.keys() | status.keys()):
        row, st = rows.get(rank), status.get(rank)
        out.append(
            RankInfo(
                rank=rank,
                local_rank=row.local_rank if row else 0,
                node=row.node if row else "",
                status=st.status if st else UNSPECIFIED,
                start_ms=row.start_ms if row else (st.first_ms if st else 0),
                end_ms=run_end_ms(st),
                error=st.error if st else "",
            )
        )
    return tuple(out)


class QueryService:
    """Answers GetRun, SearchRuns and GetMetricHistory from a :class:`RunRepository`.

    Thread-safe when the repository is; each call blocks on storage.
    """

    def __init__(self, repository: RunRepository) -> None:
        self._repo = repository

    @property
    def repository(self) -> RunRepository:
        return self._repo

    def get_run(self, run_id: str) -> Run:
        """Everything recorded for one run. NotFoundError if no rank has reported it."""
        validate_run_id(run_id)
        ranks = self._repo.rank_rows(run_id)
        statuses = self._repo.statuses([run_id])
        if not ranks and not statuses and not self._repo.run_exists(run_id):
            raise NotFoundError(f"run {run_id!r} not found")
        head = min(ranks, key=lambda r: r.rank) if ranks else None
        return Run(
            info=assemble_run_info(run_id, ranks, statuses),
            params=tuple(self._repo.params(run_id)),
            tags=tuple(self._repo.tags(run_id)),
            artifacts=tuple(self._repo.artifacts(run_id)),
            inputs=tuple(self._repo.inputs(run_id)),
            metrics=tuple(self._repo.metric_summaries(run_id)),
            ranks=assemble_ranks(ranks, statuses),
            code=head.code if head else CodeVersion(),
            env=head.env if head else Environment(),
        )

    def search_runs(
        self, experiment: str = "", page_size: int = 0, page_token: str = ""
    ) -> RunPage:
        """Runs of one experiment ("" = all), newest start first, keyset-paged.

        ``page_size`` 0 = 100, else 1..1000. A malformed token, or one from a request
        with another experiment, raises InvalidArgumentError.
        """
        validate_experiment(experiment)
        limit = page_size_or_default(page_size, DEFAULT_RUNS_PAGE_SIZE, MAX_RUNS_PAGE_SIZE)
        after = tokens.decode_runs_token(page_token, experiment)
        rows = self._repo.search_runs(experiment, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        status0 = {s.run_id: s for s in self._repo.statuses([r.run_id for r in rows], rank=0)}
        runs = tuple(
            RunInfo(
                run_id=r.run_id,
                experiment=r.experiment,
                name=r.name,
                status=status0[r.run_id].status if r.run_id in status0 else UNSPECIFIED,
                start_ms=r.start_ms,
                end_ms=run_end_ms(status0.get(r.run_id)),
                world_size=r.world_size,
            )
            for r in rows
        )
        token = ""
        if more:
            last = RunCursor(rows[-1].start_ms, rows[-1].run_id)
            token = tokens.encode_runs_token(experiment, last)
        return RunPage(runs=runs, next_page_token=token)

    def metric_history(
        self,
        run_id: str,
        key: str,
        ranks: Iterable[int] = (),
        page_size: int = 0,
        page_token: str = "",
    ) -> MetricHistory:
        """One page of a metric's points ordered by (rank, step, ts_ms), deduplicated.

        ``ranks`` empty = all ranks. ``page_size`` 0 = 100,000, else 1..1,000,000.
        NotFoundError for an unknown run; a known run without this key gives no points.
        """
        validate_run_id(run_id)
        validate_metric_key(key)
        rank_filter = validate_ranks(ranks)
        limit = page_size_or_default(page_size, DEFAULT_HISTORY_PAGE_SIZE, MAX_HISTORY_PAGE_SIZE)
        after = tokens.decode_history_token(page_token, run_id, key, rank_filter)
        page = self._repo.metric_points(run_id, key, rank_filter, after, limit + 1)
        if not page.steps and after is None and not self._repo.run_exists(run_id):
            raise NotFoundError(f"run {run_id!r} not found")
        token = ""
        if len(page.steps) > limit:
            token = tokens.encode_history_token(run_id, key, rank_filter, page.cursor(limit - 1))
        return MetricHistory(
            run_id=run_id,
            key=key,
            ranks=page.ranks[:limit],
            steps=page.steps[:limit],
            values=page.values[:limit],
            ts_ms=page.ts_ms[:limit],
            next_page_token=token,
        )

