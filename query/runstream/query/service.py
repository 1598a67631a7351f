"""The query logic: validate requests, read through a repository, assemble domain objects.

Knows nothing of gRPC (the servicer converts) and nothing of SQL (the repository owns
it). Errors are :mod:`runstream.proto.errors` classes: a bad request raises
:class:`InvalidArgumentError`, an unknown run :class:`NotFoundError`.

Thread-safety: :class:`QueryService` keeps no mutable state of its own; it is as safe
to call from many threads as its repository (``ClickHouseRepository`` is).
Every method blocks on the repository.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from runstream.proto import config as names
from runstream.proto import tables
from runstream.proto.errors import (
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from runstream.proto.status import ENDED, UNSPECIFIED
from runstream.proto.validation import MAX_EXPERIMENT_LEN, MAX_WORLD_SIZE, check_key, check_run_id
from runstream.query import compare, filters, ranks, tokens
from runstream.query.attempts import (
    MAX_FORK_DEPTH,
    AnnotationRow,
    AttemptStore,
    RunAttempts,
    Segment,
    StartRow,
    StatusEvent,
    fork_segments,
    group_starts,
    is_forked,
    number_attempts,
    run_status,
)
from runstream.query.downsample import Bucket, bucket_grid, select_points
from runstream.query.limits import (
    DEFAULT_HISTORY_PAGE_SIZE,
    DEFAULT_LAG_STEPS,
    DEFAULT_RUNS_PAGE_SIZE,
    DEFAULT_UI_MAX_POINTS,
    INGEST_WINDOW_MS,
    MAX_COMPARED_METRICS,
    MAX_COMPARED_RUNS,
    MAX_EXPERIMENTS_FILTER,
    MAX_EXPERIMENTS_LISTED,
    MAX_EXPORT_CHUNK,
    MAX_FOLLOW_BATCH,
    MAX_FOLLOW_KEYS,
    MAX_HISTORIES_KEYS,
    MAX_HISTORIES_POINTS,
    MAX_HISTORIES_RUNS,
    MAX_HISTORIES_SERIES,
    MAX_HISTORY_PAGE_SIZE,
    MAX_LAG_STEPS,
    MAX_MAX_POINTS,
    MAX_RANKS_FILTER,
    MAX_RUN_KEYS,
    MAX_RUNS_PAGE_SIZE,
    MAX_SEARCH_COLUMNS,
    MIN_COMPARED_RUNS,
    MIN_LAG_STEPS,
    MIN_MAX_POINTS,
)
from runstream.query.models import (
    AGGREGATES,
    MAXIMIZE,
    MINIMIZE,
    Change,
    CodeVersion,
    Comparison,
    Drop,
    Environment,
    ExperimentInfo,
    FollowUpdate,
    IngestPartition,
    Lineage,
    MetricHistory,
    MetricSummary,
    Note,
    PointsUpdate,
    RankEnvelope,
    RankHealthReport,
    RankInfo,
    RankLag,
    Run,
    RunInfo,
    RunKeys,
    RunPage,
    StatusUpdate,
)
from runstream.query.storage import AccountRow, RankRow, RunRepository, StepRange, UiStore
from runstream.query.tokens import PointCursor

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
DEFAULT_MAX_FOLLOWERS = 8
DEFAULT_FOLLOW_POLL_S = 0.5
#: How long FollowRun holds back a rank's terminal status while none of the points its
#: producers reported logging arrive (dead-lettered ones never will), in seconds.
DEFAULT_FOLLOW_TAIL_WAIT_S = 30.0


# --- request validation (pure) -------------------------------------------------------


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` or raise InvalidArgumentError (1..64 of [A-Za-z0-9._-])."""
    return check_run_id(run_id, error=InvalidArgumentError)


def validate_metric_key(key: str) -> str:
    """Return ``key`` or raise InvalidArgumentError (1..250 characters)."""
    return check_key("metric", key, error=InvalidArgumentError)


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


def validate_step_range(start_step: int | None, end_step: int | None) -> StepRange | None:
    """None when both are None, else the inclusive (start, end) with None as unbounded;
    InvalidArgumentError when start_step > end_step or a bound is not an int64."""
    if start_step is None and end_step is None:
        return None
    lo = INT64_MIN if start_step is None else start_step
    hi = INT64_MAX if end_step is None else end_step
    for name, v in (("start_step", lo), ("end_step", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or not INT64_MIN <= v <= INT64_MAX:
            raise InvalidArgumentError(f"{name} {v!r} is not a step (an int64)")
    if lo > hi:
        raise InvalidArgumentError(f"start_step {lo} is after end_step {hi}")
    return lo, hi


def validate_max_points(max_points: int) -> int:
    """``max_points`` if 2..10,000, else InvalidArgumentError."""
    if not MIN_MAX_POINTS <= max_points <= MAX_MAX_POINTS:
        raise InvalidArgumentError(
            f"max_points {max_points} out of range {MIN_MAX_POINTS}..{MAX_MAX_POINTS}"
            " (0 = every point, paged)"
        )
    return max_points


#: SearchRuns column prefixes -> the kind of key they name (for its validation).
COLUMN_KINDS = {"params": "param", "metrics": "metric", "tags": "tag"}


def parse_columns(columns: Sequence[str]) -> dict[str, list[str]]:
    """"params" / "metrics" / "tags" -> the distinct keys asked for, in order, from names
    such as "params.lr"; InvalidArgumentError for more than 50 names, another prefix or
    a bad key."""
    if len(columns) > MAX_SEARCH_COLUMNS:
        raise InvalidArgumentError(
            f"{len(columns)} columns, over the limit of {MAX_SEARCH_COLUMNS}")
    out: dict[str, list[str]] = {kind: [] for kind in COLUMN_KINDS}
    for name in columns:
        kind, dot, key = name.partition(".")
        if not dot or kind not in COLUMN_KINDS:
            raise InvalidArgumentError(
                f"column {name[:300]!r} must be params.KEY, metrics.KEY or tags.KEY")
        check_key(COLUMN_KINDS[kind], key, error=InvalidArgumentError)
        if key not in out[kind]:
            out[kind].append(key)
    return out


def default_lag_key(step_key: str, step_key_logged: bool, busiest: Callable[[], str]) -> str:
    """GetRankHealth's (and GetRankLag's) lag key when none is asked for: the step-time key
    if logged, else the run's key with the most points (``busiest``; "" if none)."""
    return step_key if step_key_logged else busiest()


def assemble_downsampled(run_id: str, key: str, aggregate: str, total: int,
                         buckets: Iterable[Bucket]) -> MetricHistory:
    """A downsampled MetricHistory from one series' buckets (by rank, then bucket): one
    LTTB-chosen point per bucket, with the bucket's extremes and size. Pure."""
    out = MetricHistory(run_id=run_id, key=key, downsampled=True, aggregate=aggregate,
                        total_points=total)
    by_rank: dict[int, list[Bucket]] = {}
    for b in buckets:
        by_rank.setdefault(b.rank, []).append(b)
    for rank, mine in sorted(by_rank.items()):
        for b, (step, value, ts) in zip(mine, select_points(mine), strict=True):
            if not aggregate:
                out.ranks.append(rank)
            out.steps.append(step)
            out.values.append(value)
            out.ts_ms.append(ts)
            out.min_values.append(b.min_value)
            out.max_values.append(b.max_value)
            out.bucket_counts.append(b.count)
    return out


def outlier_rank(extremes: Mapping[int, tuple[int, int]], departed: Iterable[int]) -> int:
    """Of the ranks that depart from the others (``departed``), the one at the min or max
    at the most steps (``extremes``: rank -> (steps at the min, steps at the max); ties: the
    lowest rank); -1 when none departs or none of them is ever an extreme. A rank that is
    the minimum everywhere by a hair but never departs (ranks differ a little) is no
    outlier; one that diverges is, whoever holds the other extreme. Pure."""
    candidates = [r for r in set(departed) if sum(extremes.get(r, (0, 0))) > 0]
    if not candidates:
        return -1
    return min(candidates, key=lambda r: (-sum(extremes[r]), r))


def lag_matrix(cells: Iterable[tuple[int, int, float]]) -> tuple[tuple[int, ...], list[int],
                                                                 list[list[float]]]:
    """(ranks, bucket steps, rank-major lag rows with NaN where a rank has no cell) from
    (rank, bucket step, lag) cells. Pure."""
    grid: dict[int, dict[int, float]] = {}
    for rank, step, lag in cells:
        grid.setdefault(rank, {})[step] = lag
    ranks_out = tuple(sorted(grid))
    steps = sorted({step for row in grid.values() for step in row})
    return ranks_out, steps, [[grid[r].get(st, math.nan) for st in steps] for r in ranks_out]


def _blocks(aggregate: str, kw: Mapping[str, Any]) -> int:
    """Steps per pre-aggregated block where a series' downsampling may read them, else 0
    (:func:`tables.series_block_steps`)."""
    return tables.series_block_steps(aggregate, "segments" in kw)


def _series_kw(seg: Sequence[Segment], steps: StepRange | None) -> dict[str, Any]:
    """The keyword arguments of a series read: a fork's segments, a step range (neither: {})."""
    kw: dict[str, Any] = {}
    if seg:
        kw["segments"] = seg
    if steps is not None:
        kw["steps"] = steps
    return kw


# --- assembly (pure) -------------------------------------------------------------------


def _head(items: list[Any], n: int) -> list[Any]:
    """The first ``n`` items; the list itself (no copy of a million points) if no longer."""
    return items if len(items) <= n else items[:n]


def points_missing(accounts: Iterable[AccountRow], stored: Mapping[tuple[int, str], int]
                   ) -> dict[int, int]:
    """Per rank, the points its finished producers reported logging (less those they
    reported dropped) that are not in the store yet (``stored``: (rank, producer_id) ->
    points). Counted per producer, so one producer's extra points never hide another's
    missing ones. Pure."""
    out: dict[int, int] = {}
    for a in accounts:
        expected = a.points_logged - sum(d.points for d in a.dropped)
        missing = max(expected - stored.get((a.rank, a.producer_id), 0), 0)
        out[a.rank] = out.get(a.rank, 0) + missing
    return out


def sum_drops(accounts: Iterable[AccountRow]) -> tuple[Drop, ...]:
    """The drops of several producers summed per reason, by reason. Pure."""
    by_reason: dict[str, tuple[int, int]] = {}
    for account in accounts:
        for d in account.dropped:
            events, points = by_reason.get(d.reason, (0, 0))
            by_reason[d.reason] = (events + d.events, points + d.points)
    return tuple(Drop(reason=r, events=e, points=p) for r, (e, p) in sorted(by_reason.items()))


# --- attempts, annotations, lineage (pure) ------------------------------------------------

#: SearchRunsRequest.view names.
VIEWS = ("ACTIVE_ONLY", "ARCHIVED_ONLY", "ALL")
#: GetLineage: at most this many matches per list, and runs filled in (``run``) for at
#: most this many distinct producing runs (each is a GetRun).
MAX_LINEAGE_MATCHES = 1000
MAX_LINEAGE_RUNS = 50
_SHA256 = re.compile(r"[0-9a-f]{64}")


def validate_view(view: str) -> str:
    """"ACTIVE_ONLY" / "ARCHIVED_ONLY" / "ALL", or InvalidArgumentError."""
    if view not in VIEWS:
        raise InvalidArgumentError(f"view {view!r} is not one of {', '.join(VIEWS)}")
    return view


def validate_sha256(sha256: str) -> str:
    """64 lowercase hex digits, or InvalidArgumentError."""
    if not _SHA256.fullmatch(sha256):
        raise InvalidArgumentError(
            f"sha256 must be 64 lowercase hex digits, not {sha256[:80]!r}")
    return sha256


def legacy_starts(ranks: Sequence[RankRow]) -> list[StartRow]:
    """Starts standing in for a run stored before ``run_starts`` existed: each rank's
    latest RunStarted, at its first start (one attempt)."""
    return [StartRow(run_id=r.run_id, rank=r.rank, world_size=r.world_size,
                     local_rank=r.local_rank, node=r.node, ts_ms=r.start_ms) for r in ranks]


def is_archived(rows: Iterable[AnnotationRow]) -> bool:
    """Whether the latest archive action (by ts_ms) among these changes is ARCHIVE."""
    actions = [(a.ts_ms, i, a.archive) for i, a in enumerate(rows) if a.archive]
    return bool(actions) and max(actions)[2] == "ARCHIVE"


def notes_and_changes(rows: Iterable[AnnotationRow]) -> tuple[tuple[Note, ...],
                                                               tuple[Change, ...]]:
    """Notes and changes of a run, oldest first: one change per tag set ("tag k=v"), per
    note ("note") and per archive action ("archive" / "restore")."""
    notes: list[Note] = []
    changes: list[Change] = []
    for a in sorted(rows, key=lambda a: a.ts_ms):
        def change(what: str, a: AnnotationRow = a) -> None:
            changes.append(Change(ts_ms=a.ts_ms, user=a.user, host=a.host, what=what))
        for key, value in a.tags:
            change(f"tag {key}={value}")
        if a.note:
            notes.append(Note(text=a.note, user=a.user, host=a.host, ts_ms=a.ts_ms))
            change("note")
        if a.archive:
            change(a.archive.lower())
    return tuple(notes), tuple(changes)


def assemble_attempt_ranks(
    numbered: RunAttempts,
    rows: Sequence[RankRow],
    accounts: Sequence[AccountRow] = (),
    stored: Mapping[tuple[int, str], int] | None = None,
    *,
    attempts: Iterable[int] | None = None,
) -> tuple[RankInfo, ...]:
    """One RankInfo per (attempt, rank) of ``attempts`` (None: every attempt), by attempt
    and rank. Each producer's points and account count in its own attempt (a producer
    without a RunStarted: in its rank's latest). ``rows``: each rank's latest ``runs``
    row, where a rank has no start of its own. Pure."""
    wanted = set(range(len(numbered.attempts))) if attempts is None else set(attempts)
    by_rank = {r.rank: r for r in rows}
    states = {(s.attempt, s.rank): s for s in numbered.ranks}
    mine: dict[tuple[int, int], list[AccountRow]] = {}
    for a in accounts:
        mine.setdefault((numbered.attempt_of_producer(a.rank, a.producer_id), a.rank),
                        []).append(a)
    points: dict[tuple[int, int], int] = {}
    for (rank, producer), n in (stored or {}).items():
        at = (numbered.attempt_of_producer(rank, producer), rank)
        points[at] = points.get(at, 0) + n
    out = []
    for at in sorted(states.keys() | mine.keys() | points.keys()):
        if at[0] not in wanted:
            continue
        st, row, acc = states.get(at), by_rank.get(at[1]), mine.get(at, [])
        start = st.start if st else None
        out.append(RankInfo(
            rank=at[1],
            local_rank=start.local_rank if start else (row.local_rank if row else 0),
            node=start.node if start and start.node else (row.node if row else ""),
            status=st.status if st else UNSPECIFIED,
            start_ms=start.ts_ms if start else (st.first_ms if st else 0),
            end_ms=st.end_ms if st else 0,
            error=st.error if st else "",
            points_logged=sum(a.points_logged for a in acc),
            points_stored=points.get(at, 0),
            dropped=sum_drops(acc),
            producers_finished=len(acc),
            attempt=at[0],
        ))
    return tuple(out)


def assemble_attempt_info(
    run_id: str, rows: Sequence[RankRow], numbered: RunAttempts,
    statuses: Sequence[StatusEvent] = (), *, archived: bool = False,
    fork: tuple[str, int] = ("", 0),
) -> RunInfo:
    """RunInfo from per-rank rows and the run's attempts: the lowest rank's metadata, the
    earliest start, and of the latest attempt its world size and rank 0's status (the
    lowest rank's if rank 0 did not start in it). Pure."""
    head = min(rows, key=lambda r: r.rank) if rows else None
    owner = run_status(numbered.ranks_of(numbered.latest))
    latest = numbered.attempts[-1] if numbered.attempts else None
    starts = [r.start_ms for r in rows] + [a.start_ms for a in numbered.attempts]
    return RunInfo(
        run_id=run_id,
        experiment=head.experiment if head else (statuses[0].experiment if statuses else ""),
        name=head.name if head else "",
        status=owner.status if owner else UNSPECIFIED,
        start_ms=min(starts) if starts else 0,
        end_ms=owner.end_ms if owner else 0,
        world_size=(latest.world_size if latest and latest.world_size
                    else (head.world_size if head else 0)),
        archived=archived,
        fork_run_id=fork[0],
        fork_step=fork[1],
        attempts=max(len(numbered.attempts), 1),
    )


class QueryService:
    """Answers every QueryService RPC from a :class:`RunRepository`.

    Thread-safe when the repository is; each call blocks on storage. ``max_followers``
    bounds concurrent :meth:`follow_run` streams (each holds one gRPC worker thread).
    """

    def __init__(
        self, repository: RunRepository, *, max_followers: int = DEFAULT_MAX_FOLLOWERS
    ) -> None:
        self._repo = repository
        self._followers = threading.BoundedSemaphore(max_followers)
        self._closing = threading.Event()

    @property
    def repository(self) -> RunRepository:
        return self._repo

    @property
    def _store(self) -> AttemptStore:
        return cast(AttemptStore, self._repo)  # ClickHouseRepository is one

    def get_run(self, run_id: str, *, all_attempts: bool = False) -> Run:
        """Everything recorded for one run. NotFoundError if no rank has reported it.

        ``info`` (status, end, world size) and ``ranks`` describe the latest attempt;
        ``all_attempts`` lists the ranks of every attempt (by attempt, then rank).
        ``attempts``, ``notes`` and ``changes`` are oldest first.
        """
        validate_run_id(run_id)
        one = [run_id]
        ranks, events, numbered = self._known_attempts(run_id)
        head = min(ranks, key=lambda r: r.rank) if ranks else None
        annotations = self._store.annotations(one)[run_id]
        notes, changes = notes_and_changes(annotations)
        rank_infos = assemble_attempt_ranks(
            numbered, ranks, self._repo.accounts(one), self._repo.producer_points(run_id),
            attempts=None if all_attempts else (numbered.latest,))
        return Run(
            info=assemble_attempt_info(run_id, ranks, numbered, events,
                                       archived=is_archived(annotations),
                                       fork=self._store.forks(one).get(run_id, ("", 0))),
            params=tuple(self._repo.params(one)[run_id]),
            tags=tuple(self._repo.tags(one)[run_id]),
            artifacts=tuple(self._repo.artifacts(run_id)),
            inputs=tuple(self._repo.inputs(one)[run_id]),
            metrics=tuple(self._repo.metric_summaries(one)[run_id]),
            ranks=rank_infos,
            code=head.code if head else CodeVersion(),
            env=head.env if head else Environment(),
            param_conflicts=tuple(self._repo.param_conflicts(one)[run_id]),
            attempts=numbered.attempts,
            notes=notes,
            changes=changes,
        )

    def _known_attempts(self, run_id: str
                        ) -> tuple[list[RankRow], list[StatusEvent], RunAttempts]:
        """The run's rank rows, status events and numbered attempts (three reads);
        NotFoundError when the store has nothing of it."""
        one = [run_id]
        rank_rows = self._repo.rank_rows(one)
        events = self._store.status_events(one)[run_id]
        if not rank_rows and not events and not self._repo.run_exists(run_id):
            raise NotFoundError(f"run {run_id!r} not found")
        return rank_rows, events, self._number(run_id, rank_rows, events)

    def _number(self, run_id: str, ranks: Sequence[RankRow], events: Sequence[StatusEvent],
                starts: Sequence[StartRow] | None = None) -> RunAttempts:
        """The run's attempts; a run stored before run_starts existed is one attempt."""
        if starts is None:
            starts = self._store.run_starts([run_id])[run_id]
        return number_attempts(starts or legacy_starts(ranks), events)

    def get_lineage(self, sha256: str) -> Lineage:
        """Where content with this SHA-256 came from (runs whose artifacts have it, each
        with the run as :meth:`get_run` returns it) and where it went (runs that recorded
        it as an input, its digest stored as "sha256:<hex>" or bare hex), oldest first.
        At most 1,000 matches per list; ``run`` is filled for the first 50 producing
        runs. An unknown digest gives empty lists. InvalidArgumentError unless 64
        lowercase hex digits.
        """
        validate_sha256(sha256)
        produced = self._store.produced_by(sha256)[:MAX_LINEAGE_MATCHES]
        used = self._store.used_by([sha256, f"sha256:{sha256}"])[:MAX_LINEAGE_MATCHES]
        runs: dict[str, Run | None] = {}
        out = []
        for m in produced:
            if m.run_id not in runs and len(runs) < MAX_LINEAGE_RUNS:
                try:
                    runs[m.run_id] = self.get_run(m.run_id)
                except NotFoundError:  # an artifact row whose run left nothing else
                    runs[m.run_id] = None
            out.append(dataclasses.replace(m, run=runs.get(m.run_id)))
        return Lineage(produced_by=tuple(out), used_by=tuple(used))

    def search_runs(
        self,
        experiment: str = "",
        page_size: int = 0,
        page_token: str = "",
        *,
        filter_text: str = "",
        order_by: Sequence[str] = (),
        experiments: Sequence[str] = (),
        view: str = "ACTIVE_ONLY",
        columns: Sequence[str] = (),
    ) -> RunPage:
        """Runs matching ``filter_text`` (MLflow grammar, see :mod:`filters`), keyset-paged.

        ``view``: "ACTIVE_ONLY" leaves archived runs out, "ARCHIVED_ONLY" lists only
        them, "ALL" both. Status, end and world size are the latest attempt's.

        ``experiment`` and ``experiments`` together restrict the experiments (none = all).
        ``order_by``: up to 3 fields, then newest start first, then run id ascending (MLflow's
        order; equal keys keep it). ``page_size`` 0 = 100, else
        1..1000. A bad filter, order_by or token raises InvalidArgumentError (a filter
        error names the token position).

        ``columns`` ("params.X", "metrics.X", "tags.X"; at most 50): ``RunPage.columns``
        holds, per run, its values of them (a metric: its latest value, as
        MetricSummary.last; a missing value has no entry), read with one query per kind
        for the whole page. Another prefix or a bad key is InvalidArgumentError.
        """
        wanted_columns = parse_columns(columns)
        wanted = sorted({experiment, *experiments} - {""})
        if len(wanted) > MAX_EXPERIMENTS_FILTER:
            raise InvalidArgumentError(
                f"{len(wanted)} experiments, over the limit of {MAX_EXPERIMENTS_FILTER}"
            )
        for name in wanted:
            validate_experiment(name)
        limit = page_size_or_default(page_size, DEFAULT_RUNS_PAGE_SIZE, MAX_RUNS_PAGE_SIZE)
        validate_view(view)
        clauses = filters.parse_filter(filter_text)
        ordering = filters.parse_order_by(tuple(order_by))
        # The view is part of the request a token belongs to (the default's scope as before).
        scoped = filter_text if view == "ACTIVE_ONLY" else f"{filter_text}\n{view}"
        scope = tokens.search_scope(wanted, scoped, tuple(order_by))
        arity = 2 + sum(4 if o.field.kind is filters.Kind.PARAM else 2 for o in ordering)
        after = tokens.decode_search_token(page_token, scope, arity)
        rows = self._store.search(wanted, clauses, ordering, after, limit + 1, view=view)
        more = len(rows) > limit
        rows = rows[:limit]
        ids = [r.run_id for r in rows]
        # Three small reads of the page's runs: what the search SQL does not carry.
        starts = self._store.run_starts(ids) if ids else {}
        forks = self._store.forks(ids) if ids else {}
        archived = (set(ids) if view == "ARCHIVED_ONLY" else
                    self._store.archived(ids) if view == "ALL" and ids else set())
        runs = tuple(
            RunInfo(
                run_id=r.run_id,
                experiment=r.experiment,
                name=r.name,
                status=r.status,
                start_ms=r.start_ms,
                end_ms=r.end_ms,
                world_size=r.world_size,
                archived=r.run_id in archived,
                fork_run_id=forks.get(r.run_id, ("", 0))[0],
                fork_step=forks.get(r.run_id, ("", 0))[1],
                attempts=max(len(group_starts(starts.get(r.run_id, []))), 1),
            )
            for r in rows
        )
        token = tokens.encode_search_token(scope, rows[-1].keyset) if more else ""
        if not columns:
            return RunPage(runs=runs, next_page_token=token)
        return RunPage(runs=runs, next_page_token=token,
                       columns=self._columns(ids, wanted_columns))

    def _columns(self, ids: Sequence[str], wanted: Mapping[str, Sequence[str]]
                 ) -> tuple[dict[str, str | float], ...]:
        """Per run of ``ids``, its values of the wanted columns (at most three reads)."""
        out: list[dict[str, str | float]] = [{} for _ in ids]
        if not ids:
            return ()
        params, tags = self._ui.column_values(ids, wanted["params"], wanted["tags"])
        metrics = (self._repo.metric_summaries(ids, list(wanted["metrics"]))
                   if wanted["metrics"] else {})
        for row, run_id in zip(out, ids, strict=True):
            for k, v in params.get(run_id, {}).items():
                row[f"params.{k}"] = v
            for m in metrics.get(run_id, []):
                row[f"metrics.{m.key}"] = m.last
            for k, v in tags.get(run_id, {}).items():
                row[f"tags.{k}"] = v
        return tuple(out)

    def metric_history(
        self,
        run_id: str,
        key: str,
        ranks: Iterable[int] = (),
        page_size: int = 0,
        page_token: str = "",
        *,
        max_points: int = 0,
        aggregate: str = "",
        own_points_only: bool = False,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> MetricHistory:
        """A metric's points: every point paged (``max_points`` 0), or downsampled.

        A fork's history is its parent's points up to the fork step (and the parent's
        parent's, ...) and its own after it, as one series (:func:`fork_segments`);
        ``own_points_only`` reads only the run's own points.

        Lossless: one page ordered by (rank, step, ts_ms), deduplicated; ``page_size`` 0 =
        100,000, else 1..1,000,000. Downsampled (``max_points`` 2..10,000): at most that
        many points per series, with each bucket's min/max envelope, in one answer.
        ``aggregate`` ("mean", "min", "max") merges ranks per step into one series.
        ``start_step`` / ``end_step``: only steps in that inclusive range (None = unbounded),
        in both modes (a fork's inherited points too); downsampling then covers only the
        range, so a small range of a long series gives its real points. A page token
        belongs to its range. NotFoundError for an unknown run; a known run without this
        key gives no points.
        """
        validate_run_id(run_id)
        validate_metric_key(key)
        rank_filter = validate_ranks(ranks)
        if aggregate not in AGGREGATES:
            raise InvalidArgumentError(f"aggregate {aggregate!r} is not one of mean, min, max")
        steps = validate_step_range(start_step, end_step)
        if max_points:
            validate_max_points(max_points)
            return self._downsampled(run_id, key, rank_filter, max_points, aggregate,
                                     self._segments(run_id, own_points_only), steps)
        limit = page_size_or_default(page_size, DEFAULT_HISTORY_PAGE_SIZE, MAX_HISTORY_PAGE_SIZE)
        # A token belongs to its history: the fork's (as before for a run that is none)
        # or the run's own points, and its step range.
        scope_key = f"{key}\nown" if own_points_only else key
        if steps is not None:
            scope_key = f"{scope_key}\nsteps {start_step} {end_step}"
        if aggregate:
            after_agg = tokens.decode_history_token(page_token, run_id,
                                                    f"{scope_key}\n{aggregate}", rank_filter)
            return self._aggregate_page(run_id, key, rank_filter, aggregate, limit, after_agg,
                                        scope_key, self._segments(run_id, own_points_only),
                                        steps)
        after = tokens.decode_history_token(page_token, run_id, scope_key, rank_filter)
        seg = self._segments(run_id, own_points_only)
        kw = _series_kw(seg, steps)
        page = (self._ui.metric_points(run_id, key, rank_filter, after, limit + 1, **kw) if kw
                else self._repo.metric_points(run_id, key, rank_filter, after, limit + 1))
        if not page.steps and after is None:
            self._check_exists(run_id)
        token = ""
        if len(page.steps) > limit:
            token = tokens.encode_history_token(run_id, scope_key, rank_filter,
                                                page.cursor(limit - 1))
        return MetricHistory(
            run_id=run_id,
            key=key,
            ranks=_head(page.ranks, limit),
            steps=_head(page.steps, limit),
            values=_head(page.values, limit),
            ts_ms=_head(page.ts_ms, limit),
            next_page_token=token,
        )

    def export_metric_history(
        self,
        run_id: str,
        key: str,
        ranks: Iterable[int] = (),
        *,
        aggregate: str = "",
        chunk_points: int = MAX_EXPORT_CHUNK,
        own_points_only: bool = False,
    ) -> Iterator[MetricHistory]:
        """Every point of a metric as chunks of at most ``chunk_points`` (1..65,536):
        the lossless pages of :meth:`metric_history` joined (same order, dedup, ranks,
        aggregate), read as a stream, so memory stays about one chunk per call. The
        request is validated here, before the first chunk; NotFoundError (raised by the
        iterator) for an unknown run; a known run without this key gives no chunk. Close
        the iterator if it is not exhausted: it holds a query open on this thread. A fork's
        history includes its parent's points as :meth:`metric_history` says
        (``own_points_only``: not).
        """
        validate_run_id(run_id)
        validate_metric_key(key)
        rank_filter = validate_ranks(ranks)
        if aggregate not in AGGREGATES:
            raise InvalidArgumentError(f"aggregate {aggregate!r} is not one of mean, min, max")
        if not 1 <= chunk_points <= MAX_EXPORT_CHUNK:
            raise InvalidArgumentError(
                f"chunk_points {chunk_points} out of range 1..{MAX_EXPORT_CHUNK}")
        return self._export(run_id, key, rank_filter, aggregate, chunk_points, own_points_only)

    def _export(self, run_id: str, key: str, ranks: tuple[int, ...], aggregate: str,
                chunk_points: int, own_points_only: bool = False) -> Iterator[MetricHistory]:
        blocks = self._export_blocks(run_id, key, ranks, aggregate,
                                     self._segments(run_id, own_points_only))
        sent = 0
        try:
            for block in blocks:
                for lo in range(0, len(block[0]), chunk_points):
                    part = block if len(block[0]) <= chunk_points else tuple(
                        c[lo:lo + chunk_points] for c in block)
                    if aggregate:
                        steps, values, ts = part
                        chunk = MetricHistory(run_id=run_id, key=key, steps=steps,
                                              values=values, ts_ms=ts, aggregate=aggregate)
                    else:
                        r, steps, values, ts = part
                        chunk = MetricHistory(run_id=run_id, key=key, ranks=r, steps=steps,
                                              values=values, ts_ms=ts)
                    sent += len(steps)
                    yield chunk
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()  # ends the ClickHouse stream now, not when garbage-collected
        if not sent:
            self._check_exists(run_id)

    def _export_blocks(self, run_id: str, key: str, ranks: tuple[int, ...], aggregate: str,
                       seg: tuple[Segment, ...]) -> Iterator[tuple[list[Any], ...]]:
        if seg:
            return (self._store.export_aggregate(run_id, key, ranks, aggregate, segments=seg)
                    if aggregate else
                    self._store.export_points(run_id, key, ranks, segments=seg))
        return (self._repo.export_aggregate(run_id, key, ranks, aggregate) if aggregate
                else self._repo.export_points(run_id, key, ranks))

    def _segments(self, run_id: str, own_points_only: bool) -> tuple[Segment, ...]:
        """The segments of a fork's history; () for a run that is no fork, or when only
        its own points are asked for."""
        if own_points_only:
            return ()
        seg = fork_segments(run_id, self._fork_walk([run_id]))
        return seg if is_forked(seg) else ()

    def _fork_walk(self, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(fork_run_id, fork_step) of these runs and of every run up their fork chains,
        one level per query (all runs at once; at most MAX_FORK_DEPTH levels)."""
        known: dict[str, tuple[str, int]] = {}
        asked: set[str] = set()
        frontier = set(run_ids)
        for _ in range(MAX_FORK_DEPTH):
            todo = sorted(frontier - asked)
            if not todo:
                break
            asked.update(todo)
            found: dict[str, tuple[str, int]] = self._store.forks(todo)
            known.update(found)
            frontier = {parent for parent, _ in found.values()}
        return known

    def _check_exists(self, run_id: str) -> None:
        if not self._repo.run_exists(run_id):
            raise NotFoundError(f"run {run_id!r} not found")

    def _aggregate_page(self, run_id: str, key: str, ranks: tuple[int, ...], aggregate: str,
                        limit: int, after: PointCursor | None, scope_key: str,
                        seg: tuple[Segment, ...], step_range: StepRange | None = None
                        ) -> MetricHistory:
        scoped_key = f"{scope_key}\n{aggregate}"
        after_step = after.step if after is not None else -(1 << 63)
        kw = _series_kw(seg, step_range)
        steps, values, ts = (
            self._ui.aggregate_points(run_id, key, ranks, aggregate, after_step, limit + 1,
                                      **kw) if kw else
            self._repo.aggregate_points(run_id, key, ranks, aggregate, after_step, limit + 1))
        if not steps and after is None:
            self._check_exists(run_id)
        token = ""
        if len(steps) > limit:
            cursor = PointCursor(0, steps[limit - 1], 0, "", 0, 0)
            token = tokens.encode_history_token(run_id, scoped_key, ranks, cursor)
        return MetricHistory(run_id=run_id, key=key, steps=steps[:limit], values=values[:limit],
                             ts_ms=ts[:limit], next_page_token=token, aggregate=aggregate)

    def _downsampled(self, run_id: str, key: str, ranks: tuple[int, ...], max_points: int,
                     aggregate: str, seg: tuple[Segment, ...] = (),
                     steps: StepRange | None = None) -> MetricHistory:
        kw = _series_kw(seg, steps)
        with self._ui.shared_reads():
            lo, hi, count = (
                self._ui.series_range(run_id, key, ranks, aggregate, **kw) if kw
                else self._repo.series_range(run_id, key, ranks, aggregate))
            if count == 0:
                self._check_exists(run_id)
                return MetricHistory(run_id=run_id, key=key, downsampled=True,
                                     aggregate=aggregate)
            lo, width = bucket_grid(lo, hi, max_points, _blocks(aggregate, kw))
            buckets = (self._ui.buckets(run_id, key, ranks, aggregate, lo, width, **kw) if kw
                       else self._repo.buckets(run_id, key, ranks, aggregate, lo, width))
        return assemble_downsampled(run_id, key, aggregate, count, buckets)

    @property
    def _ui(self) -> UiStore:
        return cast(UiStore, self._repo)  # ClickHouseRepository is one

    # --- CompareRuns ---

    def compare_runs(
        self,
        run_ids: Sequence[str],
        metric_keys: Sequence[str] = (),
        goals: Mapping[str, str] | None = None,
    ) -> Comparison:
        """Runs side by side: differing fields first, then metric summaries with best steps.

        2..50 distinct runs; ``metric_keys`` empty = every key of any run (at most 200);
        ``goals`` maps keys to "minimize"/"maximize" (default: by name, see compare.py).
        NotFoundError names the first unknown run.
        """
        ids = list(dict.fromkeys(run_ids))
        if not MIN_COMPARED_RUNS <= len(ids) <= MAX_COMPARED_RUNS:
            raise InvalidArgumentError(
                f"compare {MIN_COMPARED_RUNS}..{MAX_COMPARED_RUNS} distinct runs, not {len(ids)}"
            )
        for run_id in ids:
            validate_run_id(run_id)
        if len(metric_keys) > MAX_COMPARED_METRICS:
            raise InvalidArgumentError(f"more than {MAX_COMPARED_METRICS} metric keys")
        for key in metric_keys:
            validate_metric_key(key)
        goal_map = dict(goals or {})
        for key, goal in goal_map.items():
            if goal not in ("", MINIMIZE, MAXIMIZE):
                raise InvalidArgumentError(f"goal of {key!r} must be minimize or maximize")
        rank_rows = self._repo.rank_rows(ids)
        events = self._store.status_events(ids)
        ranks_of: dict[str, list[RankRow]] = {r: [] for r in ids}
        for row in rank_rows:
            ranks_of[row.run_id].append(row)
        for run_id in ids:
            if not ranks_of[run_id] and not events.get(run_id):
                raise NotFoundError(f"run {run_id!r} not found")
        summaries = self._repo.metric_summaries(ids, list(metric_keys))
        # A fork's stats cover its whole history (its parents' points up to the fork step).
        known = self._fork_walk(ids)
        chains = {r: seg for r in ids if is_forked(seg := fork_segments(r, known))}
        fork_stats = self._store.fork_summaries(chains, list(metric_keys)) if chains else {}
        for run_id, stats in fork_stats.items():
            summaries[run_id] = [m for m, _ in stats]
        keys = list(metric_keys) or sorted({m.key for ms in summaries.values() for m in ms})
        keys = keys[:MAX_COMPARED_METRICS]
        best = {k: v for k, v in self._repo.best_steps(ids, keys).items() if k[0] not in chains}
        for run_id, stats in fork_stats.items():
            best.update({(run_id, m.key): steps for m, steps in stats})
        params, tags, inputs = (self._repo.params(ids), self._repo.tags(ids),
                                self._repo.inputs(ids))
        heads = [min(ranks_of[r], key=lambda x: x.rank) if ranks_of[r] else None for r in ids]
        fields = compare.compare_fields(
            [params.get(r, []) for r in ids],
            [h.code if h else CodeVersion() for h in heads],
            [inputs.get(r, []) for r in ids],
            [h.env if h else Environment() for h in heads],
            [tags.get(r, []) for r in ids],
            [h.world_size if h else 0 for h in heads],
            [len({x.node for x in ranks_of[r]}) for r in ids],
        )
        metrics = compare.compare_metrics(
            keys,
            [{m.key: m for m in summaries.get(r, [])} for r in ids],
            [{k: v for (rid, k), v in best.items() if rid == r} for r in ids],
            goal_map,
        )
        starts = self._store.run_starts(ids)
        archived = self._store.archived(ids)
        runs = tuple(
            assemble_attempt_info(
                r, ranks_of[r], self._number(r, ranks_of[r], events.get(r, []), starts.get(r)),
                events.get(r, []), archived=r in archived, fork=known.get(r, ("", 0)))
            for r in ids)
        return Comparison(runs=runs, fields=tuple(fields), metrics=tuple(metrics))

    # --- small listings ---

    def list_experiments(self) -> list[ExperimentInfo]:
        """Every experiment (at most 10,000) with its run count, by name."""
        return self._repo.experiments(MAX_EXPERIMENTS_LISTED)

    def list_metric_keys(self, run_id: str) -> list[MetricSummary]:
        """The metric keys of a run with their summaries. NotFoundError if unknown."""
        validate_run_id(run_id)
        summaries = self._repo.metric_summaries([run_id])[run_id]
        if not summaries:
            self._check_exists(run_id)
        return summaries

    def ingest_status(self, now_ms: int | None = None) -> list[IngestPartition]:
        """Latest progress of every consumer partition heard from in the last minute."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return self._repo.ingest_progress(now - INGEST_WINDOW_MS)

    # --- FollowRun ---

    def close(self) -> None:
        """Make running :meth:`follow_run` streams end at their next poll. Idempotent."""
        self._closing.set()

    def follow_run(
        self,
        run_id: str,
        keys: Sequence[str] = (),
        ranks: Iterable[int] = (),
        from_step: int = -1,
        *,
        cancelled: threading.Event,
        poll_s: float = DEFAULT_FOLLOW_POLL_S,
        tail_wait_s: float = DEFAULT_FOLLOW_TAIL_WAIT_S,
    ) -> Iterator[FollowUpdate]:
        """Points (steps above each series' last one) and status changes of a run.

        Backfills points with step >= ``from_step`` (-1: none), then polls ClickHouse
        every ``poll_s`` seconds. After the backfill one empty PointsUpdate with
        ``live`` True marks the switch. A rank's FINISHED, FAILED or KILLED comes after
        every point its producers reported logging (their RunFinished accounts, less
        what they reported dropped): the consumer may store the status before the last
        points, so it is held back until they are stored and sent, or until none of
        them arrived for ``tail_wait_s`` seconds (lost, e.g. dead-lettered). Ends right
        after every rank's terminal status, when ``cancelled`` is set, or when
        :meth:`close` is called. Each update holds at most 10,000 points; nothing else
        is buffered, so a slow reader only slows its own polling. At most
        ``max_followers`` streams run at once (UnavailableError beyond). Blocks between
        polls; runs on the caller's thread.
        """
        validate_run_id(run_id)
        if len(keys) > MAX_FOLLOW_KEYS:
            raise InvalidArgumentError(f"more than {MAX_FOLLOW_KEYS} keys")
        for key in keys:
            validate_metric_key(key)
        rank_filter = validate_ranks(ranks)
        if from_step < -1:
            raise InvalidArgumentError("from_step must be -1 (live only) or a step >= 0")
        if not self._followers.acquire(blocking=False):
            raise UnavailableError("too many FollowRun streams; try again later")
        try:
            self._check_exists(run_id)
            yield from self._follow(run_id, tuple(keys), rank_filter, from_step, cancelled,
                                    poll_s, tail_wait_s)
        finally:
            self._followers.release()

    def _follow(self, run_id: str, keys: tuple[str, ...], ranks: tuple[int, ...],
                from_step: int, cancelled: threading.Event, poll_s: float, tail_wait_s: float
                ) -> Iterator[FollowUpdate]:
        if from_step >= 0:
            cursors: dict[tuple[str, int], int] = {}
            floor = from_step - 1
        else:
            cursors = self._repo.series_tips(run_id)
            floor = -(1 << 63)
        seen: dict[int, tuple[str, str]] = {}
        # Per rank whose terminal status is held back: (points missing, since when).
        waiting: dict[int, tuple[int, float]] = {}
        live = False
        while True:
            statuses = [s for s in self._repo.statuses([run_id]) if not ranks or s.rank in ranks]
            changed = [s for s in statuses if seen.get(s.rank) != (s.status, s.error)]
            for st in changed:
                if st.status not in ENDED:
                    waiting.pop(st.rank, None)
                    seen[st.rank] = (st.status, st.error)
                    yield StatusUpdate(rank=st.rank, status=st.status, error=st.error,
                                       ts_ms=st.last_ms, live=live)
            # Terminal statuses whose points are all counted now, before the points query
            # below: a point counted in metric_counts is already readable in metrics.
            ready = [s for s in changed if s.status in ENDED]
            if ready:
                missing = points_missing(
                    [a for a in self._repo.accounts([run_id]) if not ranks or a.rank in ranks],
                    self._repo.producer_points(run_id))
                now = time.monotonic()
                held = []
                for st in ready:
                    n = missing.get(st.rank, 0)
                    before = waiting.get(st.rank)
                    if before is None or before[0] != n:  # progress restarts the wait
                        waiting[st.rank] = before = (n, now)
                    if n and now - before[1] < tail_wait_s:
                        held.append(st)
                ready = [s for s in ready if s not in held]
            while True:
                k, r, s, v, t = self._repo.new_points(
                    run_id, keys, ranks, cursors, floor, MAX_FOLLOW_BATCH
                )
                if not s:
                    break
                names = tuple(dict.fromkeys(k))
                index = {name: i for i, name in enumerate(names)}
                for key, rank, step in zip(k, r, s, strict=True):
                    if step > cursors.get((key, rank), floor):
                        cursors[(key, rank)] = step
                yield PointsUpdate(keys=names, key_index=[index[x] for x in k], ranks=r,
                                   steps=s, values=v, ts_ms=t, live=live)
                if len(s) < MAX_FOLLOW_BATCH or self._stopping(cancelled):
                    break
            if self._stopping(cancelled):
                return
            for st in ready:
                waiting.pop(st.rank, None)
                seen[st.rank] = (st.status, st.error)
                yield StatusUpdate(rank=st.rank, status=st.status, error=st.error,
                                   ts_ms=st.last_ms, live=live)
            if not live:
                live = True
                yield PointsUpdate(keys=(), key_index=[], ranks=[], steps=[], values=[],
                                   ts_ms=[], live=True)
            # CRASHED does not end the stream: heartbeats may resume.
            ended = bool(statuses) and all(
                s.status in ENDED and seen.get(s.rank) == (s.status, s.error) for s in statuses)
            if ended or self._stopping(cancelled) or cancelled.wait(poll_s):
                return

    def _stopping(self, cancelled: threading.Event) -> bool:
        return cancelled.is_set() or self._closing.is_set()

    # --- GetRankHealth ---

    def rank_health(
        self,
        run_id: str,
        step_time_key: str = "",
        lag_key: str = "",
        *,
        now_ms: int | None = None,
        thresholds: ranks.Thresholds = ranks.DEFAULT_THRESHOLDS,
    ) -> RankHealthReport:
        """Which rank is slow or broken (:mod:`runstream.query.ranks` has the rules).

        ``step_time_key`` "" = telemetry/step_time_s; ``lag_key`` "" = the step-time key
        if logged, else the key with the most points (system/* left out). The ranks are
        those of the run's latest attempt (and every rank below its world size), with
        their status there; after a restart or resume only points stamped at or after
        the latest attempt's start count. ``now_ms`` (default: now) is what "no sign of
        life" is measured against. InvalidArgumentError for a bad run id or key,
        NotFoundError for an unknown run. Blocks on about eight reads.
        """
        validate_run_id(run_id)
        step_key = validate_metric_key(step_time_key) if step_time_key else (
            names.TELEMETRY_STEP_TIME)
        if lag_key:
            validate_metric_key(lag_key)
        rank_rows, _, numbered = self._known_attempts(run_id)
        attempt = numbered.latest
        states = numbered.ranks_of(attempt)
        head = numbered.attempts[attempt] if numbered.attempts else None
        world_size = head.world_size if head else max((r.world_size for r in rank_rows),
                                                      default=0)
        # The first attempt reads every point (no clock skew can drop one).
        since_ms = head.start_ms if head is not None and attempt > 0 else 0
        keep = {s.rank for s in states} | set(range(world_size))
        nodes = {r.rank: r.node for r in rank_rows}
        nodes.update({s.rank: s.start.node for s in states if s.start is not None})

        def mine(m: Mapping[int, Any]) -> dict[int, Any]:
            return {rank: v for rank, v in m.items() if rank in keep}

        store = cast(ranks.RankHealthStore, self._repo)  # ClickHouseRepository is one
        stats = store.rank_value_stats(
            run_id, list(dict.fromkeys((step_key, names.TELEMETRY_DATA_WAIT,
                                        names.TELEMETRY_DEVICE_MEMORY))), since_ms)

        def of(key: str) -> dict[int, ranks.Distribution]:
            return mine({rank: d for (rank, k), d in stats.items() if k == key})

        step_times = of(step_key)
        used_lag_key = lag_key or default_lag_key(
            step_key, any(d.count for d in step_times.values()),
            lambda: store.busiest_key(run_id, since_ms))
        lags = mine(store.rank_lags(run_id, used_lag_key, since_ms)) if used_lag_key else {}
        health = ranks.assemble(
            world_size,
            nodes=mine(nodes),
            statuses={s.rank: s.status for s in states},
            last_seen=mine(store.rank_last_seen(run_id)),
            step_times=step_times,
            data_waits=of(names.TELEMETRY_DATA_WAIT),
            device_memory=of(names.TELEMETRY_DEVICE_MEMORY),
            lags=lags,
            non_finite=mine(store.first_non_finite(run_id, since_ms)),
        )
        return ranks.diagnose(
            health,
            now_ms=int(time.time() * 1000) if now_ms is None else now_ms,
            errors={s.rank: s.error for s in states},
            lag_key=used_lag_key,
            lag_ranks=[r for r, d in lags.items() if d.count],
            attempt=attempt,
            thresholds=thresholds,
        )

    # --- the web UI's calls: GetMetricHistories, GetRankEnvelope, GetRankLag, ListRunKeys ---

    def metric_histories(
        self,
        run_ids: Sequence[str],
        keys: Sequence[str],
        *,
        max_points: int = DEFAULT_UI_MAX_POINTS,
        ranks: Iterable[int] = (),
        aggregate: str = "",
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> list[MetricHistory]:
        """One downsampled MetricHistory per (run, key), run-major, each as
        :meth:`metric_history` with ``max_points`` gives it (forks' histories included).

        1..50 distinct runs, 1..20 distinct keys, at most 200 series and 1,000,000 for
        series x ``max_points`` (what one answer can carry). A run without a key
        gives an empty series; NotFoundError names the first unknown run. Runs that are
        no fork are read together: two queries for all their series (ranges, buckets),
        plus the fork walk and, for runs with no point at all, one existence check; a
        fork's series are read one by one.
        """
        ids = list(dict.fromkeys(run_ids))
        names_ = list(dict.fromkeys(keys))
        if not 1 <= len(ids) <= MAX_HISTORIES_RUNS:
            raise InvalidArgumentError(f"1..{MAX_HISTORIES_RUNS} distinct runs, not {len(ids)}")
        if not 1 <= len(names_) <= MAX_HISTORIES_KEYS:
            raise InvalidArgumentError(
                f"1..{MAX_HISTORIES_KEYS} distinct keys, not {len(names_)}")
        if len(ids) * len(names_) > MAX_HISTORIES_SERIES:
            raise InvalidArgumentError(
                f"{len(ids)} runs x {len(names_)} keys is {len(ids) * len(names_)} series,"
                f" over the limit of {MAX_HISTORIES_SERIES}")
        for run_id in ids:
            validate_run_id(run_id)
        for key in names_:
            validate_metric_key(key)
        rank_filter = validate_ranks(ranks)
        if aggregate not in AGGREGATES:
            raise InvalidArgumentError(f"aggregate {aggregate!r} is not one of mean, min, max")
        validate_max_points(max_points)
        if len(ids) * len(names_) * max_points > MAX_HISTORIES_POINTS:
            raise InvalidArgumentError(
                f"{len(ids) * len(names_)} series x max_points {max_points} is over the limit"
                f" of {MAX_HISTORIES_POINTS} points; ask for fewer series or points")
        steps = validate_step_range(start_step, end_step)
        known = self._fork_walk(ids)
        chains = {r: seg for r in ids if is_forked(seg := fork_segments(r, known))}
        plain = [r for r in ids if r not in chains]
        kw = _series_kw((), steps)
        with self._ui.shared_reads():
            # The buckets read the series the ranges read, so both share one repeated-rank
            # check.
            read = (sorted(plain), sorted(names_))
            ranges = (self._ui.series_ranges(*read, rank_filter, aggregate, **kw)
                      if plain else {})
            bounds = {series: bucket_grid(lo, hi, max_points, _blocks(aggregate, kw))
                      for series, (lo, hi, n) in ranges.items() if n}
            buckets = self._ui.series_buckets(bounds, rank_filter, aggregate, read=read, **kw)
        empty = [r for r in plain if not any((r, k) in bounds for k in names_)]
        if empty:
            existing = self._ui.existing_runs(empty)
            for run_id in empty:
                if run_id not in existing:
                    raise NotFoundError(f"run {run_id!r} not found")
        out = []
        for run_id in ids:
            for key in names_:
                if run_id in chains:
                    out.append(self._downsampled(run_id, key, rank_filter, max_points,
                                                 aggregate, chains[run_id], steps))
                elif (run_id, key) in bounds:
                    out.append(assemble_downsampled(run_id, key, aggregate,
                                                    ranges[(run_id, key)][2],
                                                    buckets[(run_id, key)]))
                else:
                    out.append(MetricHistory(run_id=run_id, key=key, downsampled=True,
                                             aggregate=aggregate))
        return out

    def rank_envelope(
        self,
        run_id: str,
        key: str,
        *,
        max_points: int = DEFAULT_UI_MAX_POINTS,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> RankEnvelope:
        """A key's spread across a run's ranks, per step, in at most ``max_points`` buckets.

        Per step, over each rank's latest finite value at the step (every rank's points
        count, of any attempt; the run's own points, not a fork's parent's): mean, min,
        max, the lowest rank at each extreme and the ranks reporting. More steps than
        ``max_points``: buckets of equal step width (as GetMetricHistory's), each with the
        mean of its steps' means, the min of the mins and max of the maxes (with the rank
        and first step of each: a spike is never hidden) and the most ranks at one step.

        ``departures``: per rank, its first departure: the first of DEPARTURE_RUN (3)
        consecutive steps of its at which (with 3 ranks or more reporting) |value -
        median over ranks| > DEPARTURE_MADS (6) x the larger of the step's median absolute
        deviation across ranks and the median of that over the series, floored at 1e-6
        x |median| (:data:`runstream.query.repository.RANK_SPREAD_SQL`). ``outlier_rank``:
        the rank at the min or max at the most steps, if it departs; else -1.
        ``first_non_finite``: each rank's first NaN/inf of the key. All within the
        inclusive step range. NotFoundError for an unknown run; a run without the key
        gives an empty envelope. Three reads.
        """
        validate_run_id(run_id)
        validate_metric_key(key)
        validate_max_points(max_points)
        steps = validate_step_range(start_step, end_step)
        kw = _series_kw((), steps)
        with self._ui.shared_reads():
            rows = self._ui.envelope(run_id, key, max_points, **kw)
            extremes, departures = self._ui.rank_spread(run_id, key, **kw)
        non_finite = self._ui.key_non_finite(run_id, key, **kw)
        if not rows.steps and not non_finite:
            self._check_exists(run_id)
        return RankEnvelope(
            run_id=run_id, key=key,
            ranks=tuple(sorted(set(extremes) | {n.rank for n in non_finite})),
            steps=rows.steps, mean=rows.mean, min=rows.min, max=rows.max,
            min_rank=rows.min_rank, max_rank=rows.max_rank, count=rows.count,
            downsampled=len(rows.steps) < rows.total_steps, total_steps=rows.total_steps,
            outlier_rank=outlier_rank(extremes, (d.rank for d in departures)),
            departures=tuple(departures), first_non_finite=tuple(non_finite),
        )

    def rank_lag(self, run_id: str, key: str = "", *, max_steps: int = DEFAULT_LAG_STEPS
                 ) -> RankLag:
        """A rank x step-bucket matrix of lag behind the median rank, for a heatmap.

        Per step of ``key`` logged by two ranks or more: each rank's first ts_ms there
        minus the median over ranks of the first ts_ms there (ms, the producers' clocks);
        the steps cut into at most ``max_steps`` (2..2,000) buckets of equal width, each
        cell the rank's mean over the bucket (NaN: no point of the rank there). As
        :meth:`rank_health`: ``key`` "" = telemetry/step_time_s if logged, else the key
        with the most points (``RankLag.key`` says which), and after a restart or resume
        only points stamped at or after the latest attempt's start count.
        NotFoundError for an unknown run. Blocks on about five reads.
        """
        validate_run_id(run_id)
        if key:
            validate_metric_key(key)
        if not MIN_LAG_STEPS <= max_steps <= MAX_LAG_STEPS:
            raise InvalidArgumentError(
                f"max_steps {max_steps} out of range {MIN_LAG_STEPS}..{MAX_LAG_STEPS}")
        _, _, numbered = self._known_attempts(run_id)
        head = numbered.attempts[numbered.latest] if numbered.attempts else None
        since_ms = head.start_ms if head is not None and numbered.latest > 0 else 0
        store = cast(ranks.RankHealthStore, self._repo)  # ClickHouseRepository is one
        step_key = names.TELEMETRY_STEP_TIME
        used = key or default_lag_key(
            step_key,
            any(d.count for d in store.rank_value_stats(run_id, [step_key], since_ms).values()),
            lambda: store.busiest_key(run_id, since_ms))
        if not used:
            return RankLag(run_id=run_id, key="")
        rank_ids, steps, rows = lag_matrix(
            self._ui.rank_lag_cells(run_id, used, max_steps, since_ms))
        return RankLag(run_id=run_id, key=used, ranks=rank_ids, steps=steps, lag_ms=rows)

    def run_keys(self, experiments: Sequence[str] = ()) -> RunKeys:
        """The param, metric and tag keys used by runs of these experiments (none = all;
        at most 100), each sorted, at most 1,000 (``truncated`` when one was cut). One read.
        """
        wanted = sorted(set(experiments) - {""})
        if len(wanted) > MAX_EXPERIMENTS_FILTER:
            raise InvalidArgumentError(
                f"{len(wanted)} experiments, over the limit of {MAX_EXPERIMENTS_FILTER}")
        for name in wanted:
            validate_experiment(name)
        found = self._ui.run_keys(wanted, MAX_RUN_KEYS + 1)
        return RunKeys(
            params=tuple(found["params"][:MAX_RUN_KEYS]),
            metrics=tuple(found["metrics"][:MAX_RUN_KEYS]),
            tags=tuple(found["tags"][:MAX_RUN_KEYS]),
            truncated=any(len(v) > MAX_RUN_KEYS for v in found.values()),
        )
