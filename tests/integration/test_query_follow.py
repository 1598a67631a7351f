"""FollowRun through the real engine and gRPC: backfill, live updates, the end, cancel."""

from __future__ import annotations

import threading
from typing import Any

from runstream.proto import tables
from runstream.query.client import Client
from runstream.query.models import PointsUpdate, StatusUpdate
from tests.factories import T0, insert, set_status, start_rank


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
