"""QueryService without ClickHouse: request validation before storage, not-found rules,
and how runs are assembled from per-rank rows."""

from __future__ import annotations

from typing import Any, cast

import pytest

from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.attempts import StartRow, StatusEvent, number_attempts
from runstream.query.models import CodeVersion, Environment, RunInfo
from runstream.query.service import (
    QueryService,
    assemble_attempt_info,
    assemble_attempt_ranks,
    page_size_or_default,
    validate_ranks,
)
from runstream.query.storage import PointRows, RankRow, StatusRow


class _NoRepository:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the repository was called ({name}) for an invalid request")


def test_invalid_requests_never_reach_the_repository() -> None:
    service = QueryService(cast(Any, _NoRepository()))
    for bad in ("", "a b", "x" * 65, "../etc", "r;DROP"):
        with pytest.raises(InvalidArgumentError, match="run_id"):
            service.get_run(bad)
        with pytest.raises(InvalidArgumentError, match="run_id"):
            service.metric_history(bad, "loss")
    with pytest.raises(InvalidArgumentError, match="key"):
        service.metric_history("r", "")
    with pytest.raises(InvalidArgumentError, match="key"):
        service.metric_history("r", "k" * 251)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        service.search_runs(page_size=1001)
    with pytest.raises(InvalidArgumentError, match="page_size"):
        service.metric_history("r", "loss", page_size=1_000_001)
    with pytest.raises(InvalidArgumentError, match="experiment"):
        service.search_runs("e" * 257)
    with pytest.raises(InvalidArgumentError, match="rank"):
        service.metric_history("r", "loss", ranks=[1 << 20])
    with pytest.raises(InvalidArgumentError, match="page_token"):
        service.search_runs(page_token="nope")


def test_page_size_bounds() -> None:
    assert page_size_or_default(0, 100, 1000) == 100
    assert page_size_or_default(1, 100, 1000) == 1
    assert page_size_or_default(1000, 100, 1000) == 1000
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgumentError):
            page_size_or_default(bad, 100, 1000)
    assert validate_ranks([3, 1, 3]) == (1, 3)


class _EmptyRepository:
    def __init__(self, exists: bool) -> None:
        self.exists = exists

    def run_exists(self, run_id: str) -> bool:
        return self.exists

    def rank_rows(self, run_ids: object) -> list[RankRow]:
        return []

    def statuses(self, run_ids: object) -> list[StatusRow]:
        return []

    def status_events(self, run_ids: list[str]) -> dict[str, list[object]]:
        return {r: [] for r in run_ids}

    def forks(self, run_ids: object) -> dict[str, tuple[str, int]]:
        return {}

    def metric_points(self, *args: object) -> PointRows:
        return PointRows(ranks=[], steps=[], values=[], ts_ms=[], producer_ids=[], seqs=[], idxs=[])


def test_unknown_run_is_not_found_and_known_run_without_key_is_empty() -> None:
    with pytest.raises(NotFoundError):
        QueryService(cast(Any, _EmptyRepository(False))).get_run("r")
    with pytest.raises(NotFoundError):
        QueryService(cast(Any, _EmptyRepository(False))).metric_history("r", "k")
    history = QueryService(cast(Any, _EmptyRepository(True))).metric_history("r", "k")
    assert len(history) == 0 and history.next_page_token == ""


def _rank(rank: int, start_ms: int) -> RankRow:
    return RankRow(rank=rank, experiment="e", name=f"n{rank}", world_size=2, local_rank=rank,
                   node="h", code=CodeVersion(), env=Environment(), start_ms=start_ms)


def _status(rank: int, status: str, ts_ms: int) -> StatusEvent:
    return StatusEvent(run_id="r", rank=rank, experiment="e", status=status,
                       producer_id=f"p{rank}", seq=ts_ms, ts_ms=ts_ms)


def test_rank_zero_owns_the_run_status() -> None:
    ranks = [_rank(1, 5), _rank(0, 7)]
    starts = [StartRow(run_id="r", rank=r.rank, world_size=2, producer_id=f"p{r.rank}",
                       ts_ms=r.start_ms) for r in ranks]

    def info_of(*statuses: StatusEvent) -> RunInfo:
        return assemble_attempt_info("r", ranks, number_attempts(starts, statuses), statuses)

    info = info_of(_status(0, "RUNNING", 7), _status(1, "FAILED", 9))
    assert (info.name, info.status, info.start_ms, info.end_ms) == ("n0", "RUNNING", 5, 0)
    info = info_of(_status(0, "KILLED", 20))
    assert (info.status, info.end_ms) == ("KILLED", 20)
    numbered = number_attempts(starts, [_status(1, "FAILED", 9), _status(2, "RUNNING", 3)])
    per_rank = assemble_attempt_ranks(numbered, ranks)
    # Rank 0 started and has said nothing since: RUNNING (its start is its status row).
    assert [(r.rank, r.status, r.end_ms) for r in per_rank] == [
        (0, "RUNNING", 0), (1, "FAILED", 9), (2, "RUNNING", 0),
    ]
