"""runstream.query.attempts (pure): attempts numbered from a run's starts and status rows
as launchers restart and resume jobs, and the segments of a fork's history."""

from __future__ import annotations

import itertools

from runstream.proto import tables
from runstream.query.attempts import (
    MAX_STEP,
    MIN_STEP,
    AnnotationRow,
    Segment,
    StartRow,
    StatusEvent,
    fork_segments,
    group_starts,
    is_forked,
    number_attempts,
    run_status,
)
from runstream.query.service import (
    assemble_attempt_info,
    assemble_attempt_ranks,
    is_archived,
    legacy_starts,
    notes_and_changes,
)
from runstream.query.storage import AccountRow

T = 1_760_000_000_000
CONSUMER = tables.CONSUMER_PRODUCER_ID


def start(rank: int, ts: int, *, world: int = 4, restart: int = 0, resume: bool = False,
          producer: str = "") -> StartRow:
    return StartRow(rank=rank, world_size=world, local_rank=rank, node=f"n{rank // 2}",
                    restart=restart, resume=resume, producer_id=producer or f"p{restart}-{rank}",
                    seq=1, ts_ms=T + ts)


def status(rank: int, name: str, ts: int, *, producer: str = "", error: str = "",
           restart: int = 0, seq: int = 1) -> StatusEvent:
    return StatusEvent(rank=rank, status=name, error=error,
                       producer_id=producer or f"p{restart}-{rank}", seq=seq, ts_ms=T + ts)


def running(s: StartRow) -> StatusEvent:
    """The RUNNING row the consumer writes for every RunStarted."""
    return StatusEvent(rank=s.rank, status="RUNNING", producer_id=s.producer_id, seq=s.seq,
                       ts_ms=s.ts_ms)


def elastic_shrink() -> tuple[list[StartRow], list[StatusEvent]]:
    """torchrun --nnodes 1:2 --max-restarts 3: 4 workers, rank 3 fails, the agent stops the
    others and restarts with 2 (TORCHELASTIC_RESTART_COUNT 1); rank 1 is done, rank 0 runs."""
    starts = [start(r, r) for r in range(4)]
    starts += [start(r, 1_000 + r, world=2, restart=1) for r in range(2)]
    statuses = [running(s) for s in starts]
    statuses.append(status(3, "FAILED", 500, error="Traceback ...\nRuntimeError: NCCL timeout",
                           seq=9))
    statuses += [status(r, "KILLED", 510 + r, error="SIGTERM", seq=9) for r in range(3)]
    statuses.append(status(1, "FINISHED", 2_000, restart=1, seq=9))
    return starts, statuses


def test_an_elastic_restart_that_shrinks_the_job_is_a_second_attempt() -> None:
    starts, statuses = elastic_shrink()
    numbered = number_attempts(starts, statuses)
    first, second = numbered.attempts
    assert (first.attempt, first.restart, first.world_size, first.ranks) == (0, 0, 4, (0, 1, 2, 3))
    assert first.status == "FAILED"  # FAILED is worse than the KILLED of the others
    assert first.error.endswith("NCCL timeout")  # rank 3's: the first error, the cause
    assert (first.start_ms, first.end_ms) == (T, T + 512)
    assert (second.attempt, second.restart, second.world_size, second.ranks) == (1, 1, 2, (0, 1))
    assert (second.status, second.end_ms, second.error) == ("RUNNING", 0, "")
    assert [(r.rank, r.status) for r in numbered.ranks_of(1)] == [(0, "RUNNING"), (1, "FINISHED")]
    owner = run_status(numbered.ranks_of(numbered.latest))
    assert owner is not None and (owner.rank, owner.status) == (0, "RUNNING")


def test_a_resumed_finished_run_is_running_again() -> None:
    first = start(0, 0, world=1)
    again = start(0, 5_000, world=1, resume=True, producer="later")
    statuses = [running(first), status(0, "FINISHED", 100, producer=first.producer_id, seq=5),
                running(again)]
    numbered = number_attempts([first, again], statuses)
    assert [(a.status, a.resume) for a in numbered.attempts] == [
        ("FINISHED", False), ("RUNNING", True)]
    assert numbered.attempts[0].end_ms == T + 100


def test_an_attempt_still_running_when_the_next_started_is_crashed() -> None:
    # SLURM requeue after a node died: nothing was heard from the first attempt's ranks.
    starts = [start(r, r, world=2) for r in range(2)]
    starts += [start(r, 9_000 + r, world=2, restart=1) for r in range(2)]
    numbered = number_attempts(starts, [running(s) for s in starts])
    first, second = numbered.attempts
    assert (first.status, first.end_ms) == ("CRASHED", T + 9_000)
    assert [r.status for r in numbered.ranks_of(0)] == ["CRASHED", "CRASHED"]
    assert second.status == "RUNNING"


def test_consumer_rows_belong_to_the_latest_attempt_of_the_rank_started_before_them() -> None:
    starts = [start(0, 0, world=1), start(0, 1_000, world=1, restart=1)]
    statuses = [running(s) for s in starts]
    statuses.append(status(0, "CRASHED", 400, producer=CONSUMER, error="no heartbeat", seq=400))
    statuses.append(status(0, "CRASHED", 90_000, producer=CONSUMER, error="no heartbeat",
                           seq=90_000))
    numbered = number_attempts(starts, statuses)
    assert [a.status for a in numbered.attempts] == ["CRASHED", "CRASHED"]
    assert [r.last_ms for r in numbered.ranks] == [T + 400, T + 90_000]
    assert CONSUMER not in numbered.producer_attempt


def test_a_late_row_of_an_earlier_attempt_stays_there() -> None:
    """Rows follow their producer, not the clock: rank 1's KILLED from a node whose clock
    runs ahead lands after the restart, yet belongs to attempt 0."""
    starts = [start(r, r, world=2) for r in range(2)]
    starts += [start(r, 1_000 + r, world=2, restart=1) for r in range(2)]
    statuses = [running(s) for s in starts]
    statuses.append(status(1, "KILLED", 1_500, seq=9))  # producer p0-1: attempt 0
    numbered = number_attempts(starts, statuses)
    assert [(r.attempt, r.rank, r.status) for r in numbered.ranks] == [
        (0, 0, "CRASHED"), (0, 1, "KILLED"), (1, 0, "RUNNING"), (1, 1, "RUNNING")]


def test_a_rank_starting_twice_opens_an_attempt_even_without_a_restart_count() -> None:
    # A launcher that does not count restarts (plain mpirun run twice under one run id).
    starts = [start(0, 0, world=2), start(1, 1, world=2), start(0, 50, world=2),
              start(1, 51, world=2, producer="x")]
    groups = group_starts(starts)
    assert [[s.rank for s in g] for g in groups] == [[0, 1], [0, 1]]
    # ... and a new restart count opens one even for a rank not seen yet.
    starts = [start(0, 0, world=2), start(1, 1, world=2, restart=1)]
    assert [[s.rank for s in g] for g in group_starts(starts)] == [[0], [1]]
    # A resume opens one too, whichever rank starts first.
    starts = [start(0, 0, world=1), start(1, 100, world=2, resume=True),
              start(0, 101, world=2, resume=True)]
    assert [[s.rank for s in g] for g in group_starts(starts)] == [[0], [1, 0]]


def test_a_run_without_starts_is_one_attempt() -> None:
    """Runs stored before run_starts existed: each rank's runs row stands for its start."""
    statuses = [status(0, "RUNNING", 0), status(1, "RUNNING", 2), status(1, "FAILED", 9)]
    numbered = number_attempts([], statuses)
    assert len(numbered.attempts) == 1 and numbered.attempts[0].ranks == (0, 1)
    assert numbered.attempts[0].status == "FAILED"
    assert number_attempts([], []).attempts == ()


def test_attempt_ranks_carry_their_own_producers_points_and_accounts() -> None:
    starts, statuses = elastic_shrink()
    numbered = number_attempts(starts, statuses)
    accounts = [AccountRow(run_id="r", rank=1, producer_id="p0-1", points_logged=30),
                AccountRow(run_id="r", rank=1, producer_id="p1-1", points_logged=7)]
    stored = {(1, "p0-1"): 30, (1, "p1-1"): 7, (0, "forked-child"): 5}
    latest = assemble_attempt_ranks(numbered, [], accounts, stored, attempts=(1,))
    assert [(r.attempt, r.rank, r.points_logged, r.points_stored, r.node) for r in latest] == [
        (1, 0, 0, 5, "n0"), (1, 1, 7, 7, "n0")]
    every = assemble_attempt_ranks(numbered, [], accounts, stored)
    assert [(r.attempt, r.rank) for r in every] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert every[1].points_logged == 30 and every[3].error.endswith("NCCL timeout")
    info = assemble_attempt_info("r", [], numbered, statuses)
    assert (info.status, info.world_size, info.attempts, info.start_ms) == ("RUNNING", 2, 2, T)


def test_legacy_starts_stand_in_for_runs_rows() -> None:
    from runstream.query.models import CodeVersion, Environment
    from runstream.query.storage import RankRow

    rows = [RankRow(run_id="r", rank=r, experiment="e", name="n", world_size=2, local_rank=r,
                    node="h", code=CodeVersion(), env=Environment(), start_ms=T + r)
            for r in range(2)]
    numbered = number_attempts(legacy_starts(rows), [status(1, "FINISHED", 5)])
    assert [(a.ranks, a.world_size, a.status) for a in numbered.attempts] == [
        ((0, 1), 2, "RUNNING")]


def test_archive_notes_and_changes_from_annotations() -> None:
    rows = [
        AnnotationRow(run_id="r", archive="ARCHIVE", user="ada", host="ws", ts_ms=T + 10),
        AnnotationRow(run_id="r", tags=(("model", "bert"), ("stage", "prod")), note="lr high",
                      user="bob", host="lab", ts_ms=T + 5),
        AnnotationRow(run_id="r", archive="RESTORE", user="ada", host="ws", ts_ms=T + 20),
    ]
    assert not is_archived(rows)
    assert is_archived(rows[:2]) and not is_archived(rows[1:2]) and not is_archived([])
    notes, changes = notes_and_changes(rows)
    assert [(n.text, n.user, n.host, n.ts_ms) for n in notes] == [("lr high", "bob", "lab", T + 5)]
    assert [(c.what, c.user, c.ts_ms) for c in changes] == [
        ("tag model=bert", "bob", T + 5), ("tag stage=prod", "bob", T + 5), ("note", "bob", T + 5),
        ("archive", "ada", T + 10), ("restore", "ada", T + 20)]


# --- forks ----------------------------------------------------------------------------------


def test_a_run_that_is_no_fork_is_one_segment_of_every_step() -> None:
    assert fork_segments("a", {}) == (Segment("a", MIN_STEP, MAX_STEP),)
    assert not is_forked(fork_segments("a", {"b": ("a", 3)}))


def test_a_fork_reads_its_parent_up_to_the_fork_step() -> None:
    assert fork_segments("child", {"child": ("parent", 49)}) == (
        Segment("parent", MIN_STEP, 49), Segment("child", 49, MAX_STEP))


def test_a_chain_of_forks_is_walked_up_with_the_cap_shrinking() -> None:
    forks = {"c2": ("c1", 70), "c1": ("p", 49)}
    assert fork_segments("c2", forks) == (
        Segment("p", MIN_STEP, 49), Segment("c1", 49, 70), Segment("c2", 70, MAX_STEP))
    # Forked from c1 below c1's own fork step: c1 contributes nothing, p up to 30.
    assert fork_segments("c2", {"c2": ("c1", 30), "c1": ("p", 49)}) == (
        Segment("p", MIN_STEP, 30), Segment("c2", 30, MAX_STEP))


def test_cycles_and_long_chains_are_cut() -> None:
    # a forked from b, b from a (impossible in time, possible in data): b is read as root.
    assert fork_segments("a", {"a": ("b", 10), "b": ("a", 5)}) == (
        Segment("b", MIN_STEP, 10), Segment("a", 10, MAX_STEP))
    assert fork_segments("a", {"a": ("a", 3)}) == (Segment("a", MIN_STEP, MAX_STEP),)
    chain = {f"r{i}": (f"r{i + 1}", 1000 - i) for i in range(30)}
    segments = fork_segments("r0", chain)
    assert len(segments) == 16 and segments[0] == Segment("r15", MIN_STEP, 1000 - 14)
    steps = [(s.after_step, s.to_step) for s in segments]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(steps))  # disjoint, no gap
