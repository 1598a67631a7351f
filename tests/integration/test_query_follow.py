"""FollowRun through the real engine and gRPC: backfill, live updates, the end, cancel,
and a live job of several ranks through Kafka and the real consumer whose every point
reaches a follower before its rank's terminal status."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runstream.consumer.factories import build_kafka_pipeline
from runstream.proto import tables
from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from runstream.query.models import PointsUpdate, Run, StatusUpdate
from tests.factories import T0, insert, make_config, set_status, start_rank
from tests.helpers import wait_for

HERE = Path(__file__).resolve().parent
ENDED = ("FINISHED", "FAILED", "KILLED")


def test_follow_backfills_then_streams_live_until_the_run_ends(ch: Any, client: Client) -> None:
    start_rank(ch, "live", 0, 1, T0)
    insert(ch, tables.METRICS, [
        {"run_id": "live", "key": "loss", "rank": 0, "step": s, "value": float(s),
         "ts_ms": T0 + s, "producer_id": "p0", "seq": 2, "idx": s} for s in range(5)])
    steps: list[int] = []
    statuses: list[str] = []
    went_live = threading.Event()

    def consume() -> None:
        for update in client.follow("live", ["loss"], from_step=2, timeout_s=60):
            if isinstance(update, StatusUpdate):
                statuses.append(update.status)
            elif isinstance(update, PointsUpdate):
                steps.extend(update.steps)
                if update.live and not update.steps:
                    went_live.set()

    reader = threading.Thread(target=consume, name="test-follow")
    reader.start()
    assert went_live.wait(30)
    insert(ch, tables.METRICS, [
        {"run_id": "live", "key": "loss", "rank": 0, "step": s, "value": float(s),
         "ts_ms": T0 + s, "producer_id": "p0", "seq": 3, "idx": s - 5} for s in range(5, 8)])
    set_status(ch, "live", 0, "FINISHED", T0 + 100, seq=4)
    reader.join(30)
    assert not reader.is_alive()
    assert steps == [2, 3, 4, 5, 6, 7]
    assert statuses == ["RUNNING", "FINISHED"]


def test_follow_stops_when_the_client_cancels(ch: Any, client: Client) -> None:
    start_rank(ch, "forever", 0, 1, T0)
    stop_event = threading.Event()
    seen = []
    for update in client.follow("forever", from_step=-1, stop=stop_event, timeout_s=60):
        seen.append(update)
        if isinstance(update, PointsUpdate) and update.live:
            stop_event.set()
    assert seen and isinstance(seen[0], StatusUpdate)


WORLD_SIZE = 3
LIVE_STEPS = 300


def run_or_none(client: Client, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except NotFoundError:
        return None


@pytest.mark.kafka
def test_follower_stopping_at_terminal_statuses_gets_every_point_of_a_live_job(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, client: Client,
    tmp_path: Path, env: dict[str, str],
) -> None:
    """Three rank processes log through Kafka and the real consumer until they finish; a
    follower that stops reading a rank at its terminal status still gets all its points."""
    pipeline = build_kafka_pipeline(
        make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path))
    stop = threading.Event()
    consumer = pipeline.start(stop)
    run_id = uuid.uuid4().hex
    rank_env = {**env, "RUNSTREAM_KAFKA": kafka_bootstrap, "RUNSTREAM_TOPIC": kafka_topic,
                "RUNSTREAM_SPOOL_DIR": str(tmp_path / "rank-spool"),
                "WORLD_SIZE": str(WORLD_SIZE), "TORCHELASTIC_RUN_ID": run_id}
    procs = [subprocess.Popen(
        [sys.executable, str(HERE / "follow_rank.py"), str(LIVE_STEPS), "0.01"],
        env={**rank_env, "RANK": str(r), "LOCAL_RANK": str(r)},
    ) for r in range(WORLD_SIZE)]
    try:
        wait_for(lambda: run_or_none(client, run_id),
                 lambda run: run is not None and len(run.ranks) == WORLD_SIZE,
                 what="every rank to start")
        before_end: Counter[int] = Counter()
        terminal: dict[int, str] = {}
        for update in client.follow(run_id, from_step=0, timeout_s=120):
            if isinstance(update, StatusUpdate) and update.status in ENDED:
                terminal[update.rank] = update.status
                if len(terminal) == WORLD_SIZE:
                    break  # the run ended: what a client naturally does
            elif isinstance(update, PointsUpdate):
                before_end.update(r for r in update.ranks if r not in terminal)
        assert [p.wait(timeout=60) for p in procs] == [0] * WORLD_SIZE
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        stop.set()
        consumer.join(60)
    assert terminal == dict.fromkeys(range(WORLD_SIZE), "FINISHED")
    assert before_end == dict.fromkeys(range(WORLD_SIZE), 2 * LIVE_STEPS)


def test_follow_holds_a_terminal_status_until_the_points_its_account_reports(
    ch: Any, client: Client
) -> None:
    """The consumer stored FINISHED (10 points logged, 2 of them dropped) before the last
    3 of the 8 delivered points: the follower gets those 3 first, then FINISHED."""
    start_rank(ch, "tail", 0, 1, T0)
    insert(ch, tables.RUN_STATUS, [{
        "run_id": "tail", "rank": 0, "experiment": "exp", "status": "FINISHED",
        "producer_id": "p0", "seq": 9, "ts_ms": T0 + 100, "points_logged": 10,
        "drop_reasons": ["spool write failed"], "drop_events": [1], "drop_points": [2]}])

    def deliver(steps: range, seq: int) -> None:
        insert(ch, tables.METRICS, [
            {"run_id": "tail", "key": "loss", "rank": 0, "step": s, "value": float(s),
             "ts_ms": T0 + s, "producer_id": "p0", "seq": seq, "idx": i}
            for i, s in enumerate(steps)])
        insert(ch, tables.METRIC_COUNTS, [
            {"run_id": "tail", "key": "loss", "rank": 0, "producer_id": "p0", "seq": seq,
             "points": len(steps), "ts_ms": T0}])

    deliver(range(5), 2)
    updates: list[Any] = []
    went_live = threading.Event()

    def consume() -> None:
        for update in client.follow("tail", from_step=0, timeout_s=60):
            updates.append(update)
            if isinstance(update, PointsUpdate) and update.live and not update.steps:
                went_live.set()

    reader = threading.Thread(target=consume, name="test-follow-tail")
    reader.start()
    assert went_live.wait(30)
    assert reader.is_alive()
    deliver(range(5, 8), 3)
    reader.join(30)
    assert not reader.is_alive()
    order = [(u.status,) if isinstance(u, StatusUpdate) else tuple(u.steps) for u in updates]
    assert [o for o in order if o] == [(0, 1, 2, 3, 4), (5, 6, 7), ("FINISHED",)]
