"""Attempts through the real engine and gRPC: RunStarted / RunFinished rows as the consumer
writes them (RowBatch), read back by GetRun (latest attempt, all_attempts) and SearchRuns."""

from __future__ import annotations

from typing import Any

from runstream.proto import tables
from runstream.proto.v1 import events_pb2 as pb
from runstream.query.client import Client
from tests.factories import (
    TS,
    finished_event,
    insert,
    metrics_event,
    seed_through_consumer,
    started_event,
)

NCCL = "Traceback (most recent call last):\n  ...\nRuntimeError: NCCL watchdog timeout"


def elastic_shrink(run_id: str = "elastic-1") -> list[pb.RunEvent]:
    """torchrun --nnodes 1:2 --max-restarts 3 over two nodes: 4 workers; rank 3 fails, the
    agents stop the others (KILLED) and rendezvous again with one node: 2 workers,
    TORCHELASTIC_RESTART_COUNT 1. Then rank 1 finishes; rank 0 still runs."""
    events = [started_event(run_id, r, 4, TS + r, producer=f"a0r{r}") for r in range(4)]
    events.append(finished_event(run_id, 3, 4, TS + 500, producer="a0r3", status=pb.FAILED,
                                 error=NCCL))
    events += [finished_event(run_id, r, 4, TS + 510 + r, producer=f"a0r{r}", status=pb.KILLED,
                              error="SIGTERM from the elastic agent") for r in range(3)]
    events += [started_event(run_id, r, 2, TS + 2_000 + r, producer=f"a1r{r}", restart=1)
               for r in range(2)]
    events.append(finished_event(run_id, 1, 2, TS + 9_000, producer="a1r1"))
    return events


def test_an_elastic_restart_shrinking_4_to_2_workers(ch: Any, client: Client) -> None:
    seed_through_consumer(ch, elastic_shrink())
    run = client.get_run("elastic-1")
    info = run.info
    assert (info.world_size, info.status, info.end_ms, info.attempts) == (2, "RUNNING", 0, 2)
    assert info.start_ms == TS  # the run started with its first attempt
    assert [(r.rank, r.status, r.attempt) for r in run.ranks] == [
        (0, "RUNNING", 1), (1, "FINISHED", 1)]
    first, second = run.attempts
    assert (first.attempt, first.restart, first.world_size, first.ranks) == (0, 0, 4, (0, 1, 2, 3))
    assert (first.status, first.error) == ("FAILED", NCCL)  # rank 3's error caused the restart
    assert first.end_ms == TS + 512
    assert (second.restart, second.world_size, second.ranks, second.status) == (
        1, 2, (0, 1), "RUNNING")

    every = client.get_run("elastic-1", all_attempts=True)
    assert [(r.attempt, r.rank, r.status) for r in every.ranks] == [
        (0, 0, "KILLED"), (0, 1, "KILLED"), (0, 2, "KILLED"), (0, 3, "FAILED"),
        (1, 0, "RUNNING"), (1, 1, "FINISHED")]
    assert every.ranks[3].error == NCCL and every.info == info

    runs, _ = client.search_runs("exp")
    assert [(r.run_id, r.status, r.world_size, r.attempts, r.end_ms) for r in runs] == [
        ("elastic-1", "RUNNING", 2, 2, 0)]
    assert client.search_runs("exp", filter="attributes.status = 'RUNNING'")[0] == runs
    assert client.search_runs("exp", filter="attributes.world_size = 4")[0] == []


def test_a_resumed_finished_run_is_running_again(ch: Any, client: Client) -> None:
    seed_through_consumer(ch, [
        started_event("resumed-1", 0, 1, TS, producer="first"),
        finished_event("resumed-1", 0, 1, TS + 100, producer="first"),
    ])
    assert client.get_run("resumed-1").info.status == "FINISHED"
    seed_through_consumer(ch, [started_event("resumed-1", 0, 1, TS + 60_000, producer="again",
                                             resume=True)])
    run = client.get_run("resumed-1")
    assert (run.info.status, run.info.end_ms, run.info.attempts) == ("RUNNING", 0, 2)
    assert [(a.status, a.resume) for a in run.attempts] == [("FINISHED", False), ("RUNNING", True)]
    [info] = client.search_runs("exp")[0]
    assert (info.status, info.attempts) == ("RUNNING", 2)


def test_a_late_status_of_an_earlier_attempt_never_becomes_the_runs(ch: Any,
                                                                    client: Client) -> None:
    """Rank 0's KILLED from its first process, stamped after its second process started
    (another clock, a slow exit): GetRun keeps the new attempt RUNNING. (SearchRuns reads
    rank 0's latest row in one pass and shows KILLED until rank 0 reports again.)"""
    seed_through_consumer(ch, [
        started_event("late-1", 0, 1, TS, producer="old"),
        started_event("late-1", 0, 1, TS + 1_000, producer="new", restart=1),
        finished_event("late-1", 0, 1, TS + 1_500, producer="old", status=pb.KILLED),
    ])
    run = client.get_run("late-1")
    assert run.info.status == "RUNNING"
    assert [a.status for a in run.attempts] == ["KILLED", "RUNNING"]
    # The consumer's own CRASHED row (no heartbeat) after the new start: the latest's.
    insert(ch, tables.RUN_STATUS, [{
        "run_id": "late-1", "rank": 0, "experiment": "exp", "status": "CRASHED",
        "error": "no heartbeat or event for 60 s", "producer_id": tables.CONSUMER_PRODUCER_ID,
        "seq": TS + 90_000, "ts_ms": TS + 90_000}])
    run = client.get_run("late-1")
    assert (run.info.status, run.attempts[1].status) == ("CRASHED", "CRASHED")
    assert [r.status for r in client.search_runs("exp")[0]] == ["CRASHED"]


def test_each_attempts_ranks_count_their_own_points(ch: Any, client: Client) -> None:
    seed_through_consumer(ch, [
        started_event("pts-1", 0, 1, TS, producer="first"),
        finished_event("pts-1", 0, 1, TS + 5, producer="first", status=pb.FAILED, error="OOM"),
        started_event("pts-1", 0, 1, TS + 10, producer="second", restart=1),
    ])
    from runstream.consumer.rows import RowBatch

    batch = RowBatch()
    for e in (metrics_event(8, run_id="pts-1", seq=2, producer_id="first"),
              metrics_event(6, run_id="pts-1", seq=2, producer_id="second", step0=100)):
        batch.add(e)
    for table, data in batch.nonempty():
        if isinstance(data, list):
            ch.insert(table.name, [list(r) for r in zip(*data, strict=True)],
                      column_names=list(table.column_names))
        else:
            ch.insert_arrow(table.name, data)
    run = client.get_run("pts-1", all_attempts=True)
    assert [(r.attempt, r.status, r.points_stored, r.error) for r in run.ranks] == [
        (0, "FAILED", 8, "OOM"), (1, "RUNNING", 6, "")]
    assert [r.points_stored for r in client.get_run("pts-1").ranks] == [6]
