"""The storage boundary of the query service: the rows it reads and the repository protocol.

:class:`~runstream.query.service.QueryService` (logic, no SQL) calls a
:class:`RunRepository`; :class:`~runstream.query.repository.ClickHouseRepository` (SQL,
no logic) implements it. Both import this module, never each other. Every read is
deduplicated (replays of an event never show twice). Rows that the service assembles
into domain objects are the dataclasses below; what needs no assembly (params, tags,
artifacts, inputs, metric summaries, experiments, ingest progress) comes back as
:mod:`runstream.query.models` values. Methods that take several run ids answer for all of
them in one query, with a (possibly empty) entry for every id asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from runstream.query import filters
from runstream.query.downsample import Bucket
from runstream.query.models import (
    Artifact,
    CodeVersion,
    Drop,
    Environment,
    ExperimentInfo,
    IngestPartition,
    Input,
    MetricSummary,
    Param,
    ParamConflict,
    RankDeparture,
    RankNonFinite,
    Tag,
)
from runstream.query.tokens import PointCursor

#: An inclusive (start_step, end_step) range of steps.
StepRange = tuple[int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class RankRow:
    """One rank's latest ``runs`` row (its RunStarted), and when it first started."""

    run_id: str = ""
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
    """One rank's latest status (the row with the highest (ts_ms, seq)) and the times
    around it."""

    run_id: str
    rank: int
    experiment: str
    status: str
    error: str
    first_ms: int
    last_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRow:
    """One producer's account of a rank's metric points, from its RunFinished: points it
    accepted from log(), and what it dropped, by reason."""

    run_id: str
    rank: int
    producer_id: str
    points_logged: int
    dropped: tuple[Drop, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchRow:
    """A run as SearchRuns lists it, with rank 0's status and its keyset (sort) values."""

    run_id: str
    experiment: str
    name: str
    world_size: int
    start_ms: int
    status: str
    end_ms: int
    keyset: tuple[Any, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PointRows:
    """A page of metric points, columnar, with the identity columns that complete the sort key."""

    ranks: list[int]
    steps: list[int]
    values: list[float]
    ts_ms: list[int]
    producer_ids: Sequence[str]
    seqs: Sequence[int]
    idxs: Sequence[int]

    def cursor(self, i: int) -> PointCursor:
        """The full sort key of point ``i``."""
        return PointCursor(
            self.ranks[i], self.steps[i], self.ts_ms[i], self.producer_ids[i], self.seqs[i],
            self.idxs[i],
        )


@dataclass(slots=True)
class EnvelopeRows:
    """The cross-rank envelope of one key, per step bucket (columnar), and the steps in all."""

    steps: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    min_rank: list[int] = field(default_factory=list)
    max_rank: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    total_steps: int = 0


class RunRepository(Protocol):
    """What the service needs from storage. Thread-safe; every method blocks on storage."""

    def run_exists(self, run_id: str) -> bool: ...
    def rank_rows(self, run_ids: Sequence[str]) -> list[RankRow]: ...
    def statuses(self, run_ids: Sequence[str]) -> list[StatusRow]: ...
    def params(self, run_ids: Sequence[str]) -> dict[str, list[Param]]: ...
    def param_conflicts(self, run_ids: Sequence[str]) -> dict[str, list[ParamConflict]]: ...
    def accounts(self, run_ids: Sequence[str]) -> list[AccountRow]: ...
    def tags(self, run_ids: Sequence[str]) -> dict[str, list[Tag]]: ...
    def artifacts(self, run_id: str) -> list[Artifact]: ...
    def inputs(self, run_ids: Sequence[str]) -> dict[str, list[Input]]: ...

    def metric_summaries(
        self, run_ids: Sequence[str], keys: Sequence[str] = ()
    ) -> dict[str, list[MetricSummary]]: ...

    def best_steps(
        self, run_ids: Sequence[str], keys: Sequence[str]
    ) -> dict[tuple[str, str], tuple[int, int]]: ...

    def metric_points(
        self,
        run_id: str,
        key: str,
        ranks: Sequence[int],
        after: PointCursor | None,
        limit: int,
    ) -> PointRows: ...

    def search(
        self,
        experiments: Sequence[str],
        clauses: Sequence[filters.Clause],
        order_by: Sequence[filters.OrderBy],
        after: Sequence[Any] | None,
        limit: int,
    ) -> list[SearchRow]: ...

    def series_range(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str
    ) -> tuple[int, int, int]: ...

    def buckets(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, lo: int, width: int
    ) -> list[Bucket]: ...

    def aggregate_points(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, after_step: int,
        limit: int,
    ) -> tuple[list[int], list[float], list[int]]: ...

    def export_points(
        self, run_id: str, key: str, ranks: Sequence[int]
    ) -> Iterator[tuple[list[int], list[int], list[float], list[int]]]: ...

    def export_aggregate(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str
    ) -> Iterator[tuple[list[int], list[float], list[int]]]: ...

    def series_tips(self, run_id: str) -> dict[tuple[str, int], int]: ...
    def producer_points(self, run_id: str) -> dict[tuple[int, str], int]: ...

    def new_points(
        self,
        run_id: str,
        keys: Sequence[str],
        ranks: Sequence[int],
        cursors: Mapping[tuple[str, int], int],
        from_step: int,
        limit: int,
    ) -> tuple[list[str], list[int], list[int], list[float], list[int]]: ...

    def experiments(self, limit: int) -> list[ExperimentInfo]: ...
    def ingest_progress(self, since_ms: int) -> list[IngestPartition]: ...


class UiStore(Protocol):
    """The reads of the web UI's calls (beside :class:`RunRepository`;
    ``ClickHouseRepository`` is one): step ranges on a series' reads, several series at
    once, the cross-rank envelope and lag matrix, SearchRuns columns, the keys runs use.
    ``steps``: only steps in that inclusive range. ``segments``: a fork's history.
    Thread-safe; every method blocks on storage."""

    def shared_reads(self) -> AbstractContextManager[None]:
        """The reads of one request made inside (in this thread) share what they derive
        from the same points, computed by the first of them: the ranks that logged a step
        twice, which a cross-rank aggregate groups. Nests. (Across requests a store may
        keep it only while it is sure the points are the same: ClickHouseRepository keeps
        it while the same parts hold them.)"""
        ...

    def metric_points(
        self, run_id: str, key: str, ranks: Sequence[int], after: PointCursor | None,
        limit: int, *, segments: Sequence[Any] = (), steps: StepRange | None = None,
    ) -> PointRows: ...

    def series_range(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, *,
        segments: Sequence[Any] = (), steps: StepRange | None = None,
    ) -> tuple[int, int, int]: ...

    def buckets(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, lo: int, width: int,
        *, segments: Sequence[Any] = (), steps: StepRange | None = None,
    ) -> list[Bucket]: ...

    def aggregate_points(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, after_step: int,
        limit: int, *, segments: Sequence[Any] = (), steps: StepRange | None = None,
    ) -> tuple[list[int], list[float], list[int]]: ...

    def series_ranges(
        self, run_ids: Sequence[str], keys: Sequence[str], ranks: Sequence[int], aggregate: str,
        *, steps: StepRange | None = None,
    ) -> dict[tuple[str, str], tuple[int, int, int]]: ...

    def series_buckets(
        self, bounds: Mapping[tuple[str, str], tuple[int, int]], ranks: Sequence[int],
        aggregate: str, *, steps: StepRange | None = None,
        read: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> dict[tuple[str, str], list[Bucket]]: ...

    def existing_runs(self, run_ids: Sequence[str]) -> set[str]: ...

    def envelope(self, run_id: str, key: str, max_points: int, *,
                 steps: StepRange | None = None) -> EnvelopeRows: ...

    def rank_spread(self, run_id: str, key: str, *, steps: StepRange | None = None
                    ) -> tuple[dict[int, tuple[int, int]], list[RankDeparture]]: ...

    def key_non_finite(self, run_id: str, key: str, *, steps: StepRange | None = None
                       ) -> list[RankNonFinite]: ...

    def rank_lag_cells(self, run_id: str, key: str, max_steps: int, since_ms: int = 0
                       ) -> list[tuple[int, int, float]]: ...

    def column_values(
        self, run_ids: Sequence[str], params: Sequence[str], tags: Sequence[str]
    ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]: ...

    def run_keys(self, experiments: Sequence[str], limit: int) -> dict[str, list[str]]: ...
