"""FollowRun's ordering without ClickHouse: a rank's terminal status waits for the points
its producers reported logging, and is given up on only when they stop arriving."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from runstream.proto import tables
from runstream.query.models import Drop, PointsUpdate, StatusUpdate
from runstream.query.service import QueryService, points_missing
from runstream.query.storage import AccountRow, StatusRow


def _account(rank: int, producer: str, logged: int, dropped: int = 0) -> AccountRow:
    drops = (Drop(reason="disk full", events=1, points=dropped),) if dropped else ()
    return AccountRow(run_id="r", rank=rank, producer_id=producer, points_logged=logged,
                      dropped=drops)


def test_points_missing_counts_each_producer_less_its_drops() -> None:
    accounts = [_account(0, "a", 10, dropped=2), _account(1, "b", 5), _account(1, "c", 4)]
    # Rank 1: the points of b and of a producer without an account (it crashed) never
    # hide the 3 that c still misses.
    stored = {(0, "a"): 8, (1, "b"): 9, (1, "c"): 1, (1, "crashed"): 50}
    assert points_missing(accounts, stored) == {0: 0, 1: 3}
    assert points_missing(accounts, {}) == {0: 8, 1: 9}


class _TailRepository:
    """Rank 0 finished with 3 points logged; its points become visible one per poll of
    ``producer_points`` (or never), each readable once counted."""

    def __init__(self, arriving: bool) -> None:
        self.arriving = arriving
        self.stored = 0
        self.sent = 0

    def run_exists(self, run_id: str) -> bool:
        return True

    def statuses(self, run_ids: Sequence[str]) -> list[StatusRow]:
        return [StatusRow(run_id="r", rank=0, experiment="e", status="FINISHED", error="",
                          first_ms=1, last_ms=2)]

    def accounts(self, run_ids: Sequence[str]) -> list[AccountRow]:
        return [_account(0, "p", 3)]

    def producer_points(self, run_id: str) -> dict[tuple[int, str], int]:
        if self.arriving:
            self.stored = min(self.stored + 1, 3)
        return {(0, "p"): self.stored}

    def new_points(self, run_id: str, keys: Sequence[str], ranks: Sequence[int],
                   cursors: Mapping[tuple[str, int], int], from_step: int, limit: int,
                   ) -> tuple[list[str], list[int], list[int], list[float], list[int]]:
        steps = list(range(self.sent, self.stored))
        self.sent = self.stored
        return ["loss"] * len(steps), [0] * len(steps), steps, [0.0] * len(steps), steps


def _follow(repo: _TailRepository, tail_wait_s: float) -> list[Any]:
    service = QueryService(cast(Any, repo))
    return list(service.follow_run("r", from_step=0, cancelled=threading.Event(),
                                   poll_s=0.01, tail_wait_s=tail_wait_s))


def test_terminal_status_comes_after_the_points_still_arriving() -> None:
    updates = _follow(_TailRepository(arriving=True), tail_wait_s=60)
    steps = [s for u in updates if isinstance(u, PointsUpdate) for s in u.steps]
    assert steps == [0, 1, 2]
    assert isinstance(updates[-1], StatusUpdate) and updates[-1].status == "FINISHED"
    assert sum(isinstance(u, StatusUpdate) for u in updates) == 1


def test_terminal_status_given_up_on_points_that_never_arrive() -> None:
    started = time.monotonic()
    updates = _follow(_TailRepository(arriving=False), tail_wait_s=0.3)
    assert time.monotonic() - started >= 0.3
    assert isinstance(updates[-1], StatusUpdate) and updates[-1].status == "FINISHED"
    assert not [s for u in updates if isinstance(u, PointsUpdate) for s in u.steps]


def test_the_consumer_counts_points_only_after_storing_them() -> None:
    """FollowRun trusts a counted point to be readable: the consumer inserts a batch's
    tables in tables.TABLES order, metrics before metric_counts."""
    order = list(tables.TABLES)
    assert order.index(tables.METRICS) < order.index(tables.METRIC_COUNTS)
