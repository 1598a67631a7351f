"""Which rank is slow or broken: GetRankHealth's analysis, from per-rank aggregates.

The repository reads per-rank aggregates (step-time percentiles, lag behind the median
rank, first non-finite values, last sign of life); :func:`assemble` puts them together
per rank and :func:`diagnose` decides what is wrong with each. Pure functions and frozen
dataclasses: no SQL, no gRPC, thread-safe.

A rank has a problem when (thresholds in :class:`Thresholds`, defaults below):

* its step time p50 is above ``straggler_ratio`` (1.2) times the median over ranks of
  the step time p50 (needs two ranks or more with step times): "step time p50 1.31x the
  median rank";
* its lag p50 is above the median rank's lag p50 by more than ``lag_min_ms`` (1 s) and
  by more than ``lag_steps`` (3) median step times: "lag p50 1520 ms behind the median
  rank";
* it is RUNNING and its last heartbeat, point or status is more than ``silent_s`` (60 s)
  old: "no sign of life for 120 s";
* a key took a NaN or infinite value: "NaN in loss at step 40" (the earliest one; "(and
  2 more keys)" when others did too);
* its status is FAILED or CRASHED: "FAILED: ValueError: boom" (the error's last line);
* the run's world size counts it but it never reported anything: "no data from this
  rank".

KILLED is not a problem (a user stopped the job). Suspects are the ranks with any
problem, slowest (highest step time p50) first, then most lagging, then by rank.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from runstream.proto.status import CRASHED, FAILED, RUNNING, UNSPECIFIED
from runstream.query.models import FirstNonFinite, RankHealth, RankHealthReport

#: A rank whose step time p50 is above this times the median rank's is a straggler.
STRAGGLER_RATIO = 1.2
#: A rank lags when its lag p50 exceeds the median rank's by more than this (ms) ...
LAG_MIN_MS = 1000.0
#: ... and by more than this many median step times.
LAG_STEPS = 3.0
#: A RUNNING rank silent for longer than this (seconds) has a problem.
SILENT_S = 60.0
#: Statuses that are a problem by themselves.
BROKEN_STATUSES = frozenset({FAILED, CRASHED})
#: Longest error line quoted in a problem.
MAX_ERROR_CHARS = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    """When a rank has a problem (see the module docstring)."""

    straggler_ratio: float = STRAGGLER_RATIO
    lag_min_ms: float = LAG_MIN_MS
    lag_steps: float = LAG_STEPS
    silent_s: float = SILENT_S


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """Finite values of one series of one rank: how many, their p50 / p95 and maximum."""

    count: int
    p50: float = 0.0
    p95: float = 0.0
    max: float = 0.0


class RankHealthStore(Protocol):
    """What GetRankHealth reads beyond the run's rank rows and statuses. ``since_ms``:
    only points stamped at or after it (0 = all). Thread-safe; blocks on storage."""

    def rank_value_stats(self, run_id: str, keys: Sequence[str], since_ms: int = 0
                         ) -> dict[tuple[int, str], Distribution]: ...
    def rank_lags(self, run_id: str, key: str, since_ms: int = 0) -> dict[int, Distribution]: ...
    def first_non_finite(self, run_id: str, since_ms: int = 0
                         ) -> dict[int, list[FirstNonFinite]]: ...
    def rank_last_seen(self, run_id: str) -> dict[int, int]: ...
    def busiest_key(self, run_id: str, since_ms: int = 0) -> str: ...


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def assemble(
    world_size: int,
    *,
    nodes: Mapping[int, str],
    statuses: Mapping[int, str],
    last_seen: Mapping[int, int],
    step_times: Mapping[int, Distribution],
    data_waits: Mapping[int, Distribution],
    device_memory: Mapping[int, Distribution],
    lags: Mapping[int, Distribution],
    non_finite: Mapping[int, Sequence[FirstNonFinite]],
) -> list[RankHealth]:
    """One RankHealth per rank below ``world_size`` or seen in any input, by rank, with no
    problems yet (:func:`diagnose` finds them)."""
    seen: set[int] = set(range(world_size))
    for m in (nodes, statuses, last_seen, step_times, data_waits, device_memory, lags,
              non_finite):
        seen.update(m)
    out = []
    for rank in sorted(seen):
        st, wait, mem, lag = (step_times.get(rank), data_waits.get(rank),
                              device_memory.get(rank), lags.get(rank))
        out.append(RankHealth(
            rank=rank,
            node=nodes.get(rank, ""),
            status=statuses.get(rank, UNSPECIFIED),
            last_seen_ms=last_seen.get(rank, 0),
            steps=st.count if st else 0,
            step_time_p50_s=_finite(st.p50) if st and st.count else 0.0,
            step_time_p95_s=_finite(st.p95) if st and st.count else 0.0,
            lag_p50_ms=_finite(lag.p50) if lag and lag.count else 0.0,
            lag_p95_ms=_finite(lag.p95) if lag and lag.count else 0.0,
            lag_max_ms=_finite(lag.max) if lag and lag.count else 0.0,
            data_wait_p50_s=_finite(wait.p50) if wait and wait.count else 0.0,
            device_memory_max_bytes=(int(max(mem.max, 0.0))
                                     if mem and mem.count and math.isfinite(mem.max) else 0),
            first_non_finite=tuple(sorted(non_finite.get(rank, ()),
                                          key=lambda f: (f.step, f.key))),
        ))
    return out


def median_step_time(ranks: Iterable[RankHealth]) -> float:
    """The median over ranks with step times of their step time p50 (seconds; 0 if none)."""
    values = [r.step_time_p50_s for r in ranks if r.steps]
    return statistics.median(values) if values else 0.0


def _non_finite_word(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "inf" if value > 0 else "-inf"


def problems_of(
    rank: RankHealth,
    *,
    median_step_s: float,
    step_ranks: int,
    median_lag_ms: float | None,
    now_ms: int,
    error: str = "",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> tuple[str, ...]:
    """What is wrong with one rank, in words (module docstring); () = healthy.
    ``step_ranks``: how many ranks have step times; ``median_lag_ms``: the median over
    ranks with lag data of their lag p50 (None: no lag data)."""
    out: list[str] = []
    if rank.status in BROKEN_STATUSES:
        last = error.strip().splitlines()[-1].strip() if error.strip() else ""
        if len(last) > MAX_ERROR_CHARS:
            last = last[:MAX_ERROR_CHARS - 1] + "…"
        out.append(f"{rank.status}: {last}" if last else rank.status)
    if (step_ranks >= 2 and rank.steps and median_step_s > 0
            and rank.step_time_p50_s > thresholds.straggler_ratio * median_step_s):
        out.append(f"step time p50 {rank.step_time_p50_s / median_step_s:.2f}x the median rank")
    if median_lag_ms is not None:
        behind = rank.lag_p50_ms - median_lag_ms
        if behind > max(thresholds.lag_min_ms, thresholds.lag_steps * median_step_s * 1000):
            out.append(f"lag p50 {behind:.0f} ms behind the median rank")
    if rank.status == RUNNING and rank.last_seen_ms:
        silent_s = (now_ms - rank.last_seen_ms) / 1000
        if silent_s > thresholds.silent_s:
            out.append(f"no sign of life for {silent_s:.0f} s")
    if rank.first_non_finite:
        first = rank.first_non_finite[0]
        more = len({f.key for f in rank.first_non_finite}) - 1
        out.append(f"{_non_finite_word(first.value)} in {first.key} at step {first.step}"
                   + (f" (and {more} more key{'s' if more > 1 else ''})" if more else ""))
    if (rank.status == UNSPECIFIED and not rank.last_seen_ms and not rank.steps
            and not rank.node):
        out.append("no data from this rank")
    return tuple(out)


def diagnose(
    ranks: Sequence[RankHealth],
    *,
    now_ms: int,
    errors: Mapping[int, str] | None = None,
    lag_key: str = "",
    lag_ranks: Iterable[int] = (),
    attempt: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> RankHealthReport:
    """The report: each rank with its problems, the median step time, and the suspects
    (ranks with any problem, slowest first). ``errors``: each rank's error text;
    ``lag_ranks``: the ranks with lag data (their lag p50s give the median rank's)."""
    errors = errors or {}
    median_step = median_step_time(ranks)
    step_ranks = sum(1 for r in ranks if r.steps)
    with_lag = set(lag_ranks)
    lag_p50s = [r.lag_p50_ms for r in ranks if r.rank in with_lag]
    median_lag = statistics.median(lag_p50s) if lag_p50s else None
    judged = [
        replace(r, problems=problems_of(
            r, median_step_s=median_step, step_ranks=step_ranks, median_lag_ms=median_lag,
            now_ms=now_ms, error=errors.get(r.rank, ""), thresholds=thresholds))
        for r in ranks
    ]
    suspects = sorted((r for r in judged if r.problems),
                      key=lambda r: (-r.step_time_p50_s, -r.lag_p50_ms, r.rank))
    return RankHealthReport(
        ranks=tuple(judged),
        median_step_time_p50_s=median_step,
        lag_key=lag_key,
        suspects=tuple(r.rank for r in suspects),
        attempt=attempt,
    )
