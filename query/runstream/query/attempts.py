"""A run's starts, as the launcher means them: attempts (restarts, resumes) and forks.

Pure functions over rows the repository reads (no SQL, no gRPC); thread-safe.

**Attempts.** Every RunStarted is kept (``run_starts``). In start order (ts_ms, then
rank), a start joins the current attempt unless its rank already started in it, or its
``restart`` (the launcher's restart count) or ``resume`` differs from the attempt's;
then it opens a new attempt. The ranks of one launch start close together, and a
restart or a resume starts every rank again, so each launch is one attempt: a torchrun
elastic restart that shrinks 4 -> 2 workers gives attempt 0 (ranks 0-3, restart 0) and
attempt 1 (ranks 0-1, restart 1).

A status row belongs to the attempt of the start with its producer_id (each process has
its own). Rows of producers that sent no RunStarted - the consumer's own CRASHED /
RUNNING-again rows (``runstream-consumer``), a forked child process - belong to the
latest attempt of that rank that started at or before them (the rank's first attempt if
none did). A rank's status in an attempt is its latest row there (by ts_ms, seq); a rank
still RUNNING in an attempt that a later one superseded is CRASHED (its process is gone:
the later launch started every rank again), ended when the later attempt started. An
attempt's status is its worst rank's: CRASHED > FAILED > KILLED > RUNNING > FINISHED.

**Forks.** A run started with ``fork_run_id`` P and ``fork_step`` F reads P's points with
step <= F and its own with step > F, as one series; P may be a fork itself.
:func:`fork_segments` walks up the chain: node n with fork (p, F) contributes steps in
(F, cap], then cap = min(cap, F) and the walk continues at p; the root (a run that is no
fork, one whose parent is unknown, the 16th run up, or a run seen before: a cycle)
contributes steps <= cap. Points are never copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runstream.proto import tables
from runstream.proto.status import (
    CRASHED,
    ENDED_OR_CRASHED,
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    UNSPECIFIED,
)
from runstream.query.filters import Clause, OrderBy
from runstream.query.models import Attempt, LineageMatch, MetricSummary
from runstream.query.storage import SearchRow

#: How bad a status is, for an attempt's (its worst rank's); unknown names rank lowest.
SEVERITY: Mapping[str, int] = {CRASHED: 5, FAILED: 4, KILLED: 3, RUNNING: 2, FINISHED: 1}
#: The longest fork chain followed (the run itself included).
MAX_FORK_DEPTH = 16
#: Step bounds of a segment: every step a point can have (steps are 0..2**63-1).
MIN_STEP = -1
MAX_STEP = (1 << 63) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRow:
    """One RunStarted (a ``run_starts`` row); ``ts_ms`` is when the process started."""

    run_id: str = ""
    rank: int
    world_size: int
    local_rank: int = 0
    node: str = ""
    restart: int = 0
    resume: bool = False
    producer_id: str = ""
    seq: int = 0
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    """One ``run_status`` row (every one, not only a rank's latest)."""

    run_id: str = ""
    rank: int
    experiment: str = ""
    status: str
    error: str = ""
    producer_id: str = ""
    seq: int = 0
    ts_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RankState:
    """One rank in one attempt: its start (None: the rank reported only statuses or
    points) and its status there, with the error of that status row, when it first and
    last reported, and when it ended (0 while running)."""

    attempt: int
    rank: int
    start: StartRow | None
    status: str
    error: str
    first_ms: int
    last_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAttempts:
    """Every attempt of a run, oldest first, and every (attempt, rank) by attempt, rank."""

    attempts: tuple[Attempt, ...]
    ranks: tuple[RankState, ...]
    #: producer_id of each RunStarted -> its attempt.
    producer_attempt: Mapping[str, int] = field(default_factory=dict)

    @property
    def latest(self) -> int:
        """The latest attempt's number (0 when there is none)."""
        return len(self.attempts) - 1 if self.attempts else 0

    def ranks_of(self, attempt: int) -> tuple[RankState, ...]:
        return tuple(r for r in self.ranks if r.attempt == attempt)

    def attempt_of_producer(self, rank: int, producer_id: str) -> int:
        """The attempt that a producer's points or account belong to: its start's, else
        the rank's latest attempt (else the latest)."""
        found = self.producer_attempt.get(producer_id)
        if found is not None:
            return found
        mine = [r.attempt for r in self.ranks if r.rank == rank]
        return max(mine) if mine else self.latest


def group_starts(starts: Iterable[StartRow]) -> list[list[StartRow]]:
    """The starts grouped into attempts, oldest first (see the module docstring)."""
    out: list[list[StartRow]] = []
    ranks: set[int] = set()
    for s in sorted(starts, key=lambda s: (s.ts_ms, s.rank, s.producer_id, s.seq)):
        current = out[-1] if out else None
        if (current is None or s.rank in ranks or s.restart != current[0].restart
                or s.resume != current[0].resume):
            out.append([s])
            ranks = {s.rank}
        else:
            current.append(s)
            ranks.add(s.rank)
    return out


def _by_time(groups: Sequence[Sequence[StartRow]], rank: int, ts_ms: int) -> int:
    """The latest attempt of ``rank`` started at or before ``ts_ms`` (else its first;
    for a rank that never started, the latest attempt started by then, else 0)."""
    mine = [(min(s.ts_ms for s in g if s.rank == rank), a) for a, g in enumerate(groups)
            if any(s.rank == rank for s in g)]
    if not mine:
        mine = [(min(s.ts_ms for s in g), a) for a, g in enumerate(groups)]
    if not mine:
        return 0
    before = [a for t, a in mine if t <= ts_ms]
    return before[-1] if before else mine[0][1]


def number_attempts(starts: Iterable[StartRow], statuses: Iterable[StatusEvent]) -> RunAttempts:
    """Attempts and per-attempt rank states from every start and status row of one run.

    Without any start (runs stored before ``run_starts`` existed), each rank's first
    status row stands for its start, in one attempt.
    """
    statuses = list(statuses)
    groups = group_starts(starts)
    if not groups:
        firsts: dict[int, StatusEvent] = {}
        for st in sorted(statuses, key=lambda x: (x.ts_ms, x.seq)):
            firsts.setdefault(st.rank, st)
        if firsts:
            groups = [[StartRow(rank=r, world_size=0, producer_id=st.producer_id,
                                ts_ms=st.ts_ms) for r, st in sorted(firsts.items())]]
    producer_attempt = {s.producer_id: a for a, g in enumerate(groups) for s in g
                        if s.producer_id and s.producer_id != tables.CONSUMER_PRODUCER_ID}
    rows: dict[tuple[int, int], list[StatusEvent]] = {}
    for st in statuses:
        a = producer_attempt.get(st.producer_id)
        if a is None or all(s.rank != st.rank for s in groups[a]):
            a = _by_time(groups, st.rank, st.ts_ms)
        rows.setdefault((a, st.rank), []).append(st)
    starts_of = {(a, s.rank): s for a, g in enumerate(groups) for s in g}
    attempt_start = [min(s.ts_ms for s in g) for g in groups]
    states: list[RankState] = []
    for a, rank in sorted(starts_of.keys() | rows.keys()):
        mine = sorted(rows.get((a, rank), []), key=lambda x: (x.ts_ms, x.seq))
        start = starts_of.get((a, rank))
        latest = mine[-1] if mine else None
        status = latest.status if latest else (RUNNING if start else UNSPECIFIED)
        first_ms = mine[0].ts_ms if mine else (start.ts_ms if start else 0)
        last_ms = mine[-1].ts_ms if mine else first_ms
        end_ms = last_ms if status in ENDED_OR_CRASHED else 0
        if status == RUNNING and a + 1 < len(groups):
            status, end_ms = CRASHED, max(attempt_start[a + 1], last_ms)
        states.append(RankState(attempt=a, rank=rank, start=start, status=status,
                                error=latest.error if latest else "", first_ms=first_ms,
                                last_ms=last_ms, end_ms=end_ms))
    attempts = []
    for a, g in enumerate(groups):
        mine_states = [r for r in states if r.attempt == a]
        status = max((r.status for r in mine_states), key=lambda s: SEVERITY.get(s, 0),
                     default=UNSPECIFIED)
        errors = sorted((st.ts_ms, st.seq, st.error) for (b, _), sts in rows.items() if b == a
                        for st in sts if st.error)
        attempts.append(Attempt(
            attempt=a, restart=g[0].restart, resume=any(s.resume for s in g),
            world_size=max(s.world_size for s in g), ranks=tuple(sorted({s.rank for s in g})),
            status=status, start_ms=attempt_start[a],
            end_ms=0 if status == RUNNING else max((r.end_ms for r in mine_states), default=0),
            error=errors[0][2] if errors else "",
        ))
    return RunAttempts(attempts=tuple(attempts), ranks=tuple(states),
                       producer_attempt=producer_attempt)


def run_status(states: Sequence[RankState]) -> RankState | None:
    """The rank whose status is the run's in one attempt: rank 0, else the lowest."""
    return min(states, key=lambda r: r.rank) if states else None


# --- forks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """The steps in (``after_step``, ``to_step``] of run ``run_id``'s points."""

    run_id: str
    after_step: int = MIN_STEP
    to_step: int = MAX_STEP


def fork_segments(run_id: str, forks: Mapping[str, tuple[str, int]],
                  max_depth: int = MAX_FORK_DEPTH) -> tuple[Segment, ...]:
    """The segments of ``run_id``'s history, root first: ``forks`` maps a run to its
    (fork_run_id, fork_step) ("" or absent: not a fork). A run that is no fork is one
    segment of every step. Disjoint in steps, so points ordered by (rank, step, ...)
    across the segments are one series in that order."""
    out: list[Segment] = []
    seen = {run_id}
    node, cap = run_id, MAX_STEP
    while True:
        parent, step = forks.get(node, ("", 0))
        if not parent or parent in seen or len(out) + 1 >= max_depth:
            out.append(Segment(node, MIN_STEP, cap))
            break
        if step < cap:
            out.append(Segment(node, step, cap))
        cap = min(cap, step)
        seen.add(parent)
        node = parent
    return tuple(reversed(out))


def is_forked(segments: Sequence[Segment]) -> bool:
    """Whether the history reads any run other than its own."""
    return len(segments) > 1


# --- after-the-fact changes (annotations) --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnotationRow:
    """One ``annotations`` row: tags set, note, archive action ("", "ARCHIVE", "RESTORE"),
    who made the change, and when (epoch ms)."""

    run_id: str
    tags: tuple[tuple[str, str], ...] = ()
    note: str = ""
    archive: str = ""
    user: str = ""
    host: str = ""
    ts_ms: int = 0


class AttemptStore(Protocol):
    """The reads of attempts, forks, annotations and lineage (beside
    :class:`~runstream.query.storage.RunRepository`; ``ClickHouseRepository`` is one).
    Thread-safe; every method blocks on storage. ``segments``: a fork's history (the
    run's own points when empty)."""

    def run_starts(self, run_ids: Sequence[str]) -> dict[str, list[StartRow]]: ...
    def status_events(self, run_ids: Sequence[str]) -> dict[str, list[StatusEvent]]: ...
    def forks(self, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]: ...
    def annotations(self, run_ids: Sequence[str]) -> dict[str, list[AnnotationRow]]: ...
    def archived(self, run_ids: Sequence[str]) -> set[str]: ...
    def produced_by(self, sha256: str) -> list[LineageMatch]: ...
    def used_by(self, digests: Sequence[str]) -> list[LineageMatch]: ...

    def fork_summaries(
        self, segments: Mapping[str, Sequence[Segment]], keys: Sequence[str] = ()
    ) -> dict[str, list[tuple[MetricSummary, tuple[int, int]]]]: ...

    def export_points(
        self, run_id: str, key: str, ranks: Sequence[int], *, segments: Sequence[Segment] = ()
    ) -> Iterator[tuple[list[int], list[int], list[float], list[int]]]: ...

    def export_aggregate(
        self, run_id: str, key: str, ranks: Sequence[int], aggregate: str, *,
        segments: Sequence[Segment] = (),
    ) -> Iterator[tuple[list[int], list[float], list[int]]]: ...

    def search(
        self, experiments: Sequence[str], clauses: Sequence[Clause],
        order_by: Sequence[OrderBy], after: Sequence[Any] | None, limit: int, *,
        view: str = "ACTIVE_ONLY",
    ) -> list[SearchRow]: ...
