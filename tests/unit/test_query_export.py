"""The client's retry policy (structural) and the export's chunking over a fake repository."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.proto.v1 import query_pb2
from runstream.query import client as client_module
from runstream.query.client import Client, channel_options
from runstream.query.service import QueryService


def test_the_channel_carries_a_retry_policy_for_unavailable_on_query_service() -> None:
    options = dict(channel_options())
    assert options["grpc.enable_retries"] == 1
    config = json.loads(options["grpc.service_config"])
    (method,) = config["methodConfig"]
    service = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
    assert method["name"] == [{"service": service}]  # every RPC of QueryService
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert 2 <= policy["maxAttempts"] <= 5
    assert policy["initialBackoff"].endswith("s") and policy["maxBackoff"].endswith("s")
    assert policy["backoffMultiplier"] > 1


def test_client_builds_its_channel_with_those_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    real = grpc.insecure_channel

    def spy(target: str, options: Any = None, **kw: Any) -> grpc.Channel:
        seen.append(options)
        return real(target, options=options, **kw)

    monkeypatch.setattr(client_module.grpc, "insecure_channel", spy)
    with Client("127.0.0.1:1", environ={}):
        pass
    assert seen == [channel_options()]


class FakeRepository:
    def __init__(self, blocks: Sequence[tuple[list[Any], ...]], exists: bool = True) -> None:
        self.blocks = blocks
        self.exists = exists
        self.closed = False

    def export_points(self, run_id: str, key: str, ranks: Sequence[int]) -> Iterator[Any]:
        try:
            yield from self.blocks
        finally:
            self.closed = True

    def export_aggregate(self, run_id: str, key: str, ranks: Sequence[int],
                         aggregate: str) -> Iterator[Any]:
        try:
            yield from (b[1:] for b in self.blocks)
        finally:
            self.closed = True

    def run_exists(self, run_id: str) -> bool:
        return self.exists

    def forks(self, run_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        return {}  # no run here is a fork


def block(lo: int, hi: int) -> tuple[list[Any], ...]:
    steps = list(range(lo, hi))
    return [0] * len(steps), steps, [s * 0.5 for s in steps], [s + 7 for s in steps]


def service(repo: FakeRepository) -> QueryService:
    return QueryService(repo)  # type: ignore[arg-type]


def test_blocks_are_cut_into_chunks_that_join_to_every_point() -> None:
    repo = FakeRepository([block(0, 25), block(25, 30), block(30, 30), block(30, 41)])
    chunks = list(service(repo).export_metric_history("r", "loss", chunk_points=10))
    assert [len(c) for c in chunks] == [10, 10, 5, 5, 10, 1]
    assert [s for c in chunks for s in c.steps] == list(range(41))
    assert [t for c in chunks for t in c.ts_ms] == [s + 7 for s in range(41)]
    agg = list(service(repo).export_metric_history("r", "loss", aggregate="max"))
    assert [c.ranks for c in agg] == [[], [], []] and agg[0].aggregate == "max"


def test_closing_the_export_early_closes_the_stream() -> None:
    repo = FakeRepository([block(0, 10), block(10, 20)])
    chunks = service(repo).export_metric_history("r", "loss")
    next(chunks)
    chunks.close()  # type: ignore[attr-defined]
    assert repo.closed


def test_unknown_run_is_not_found_and_a_known_one_without_points_is_empty() -> None:
    with pytest.raises(NotFoundError):
        list(service(FakeRepository([], exists=False)).export_metric_history("r", "loss"))
    assert list(service(FakeRepository([])).export_metric_history("r", "loss")) == []


@pytest.mark.parametrize("kwargs", [
    {"run_id": "", "key": "loss"},
    {"run_id": "r", "key": ""},
    {"run_id": "r", "key": "loss", "aggregate": "median"},
    {"run_id": "r", "key": "loss", "chunk_points": 0},
    {"run_id": "r", "key": "loss", "chunk_points": 70_000},
    {"run_id": "r", "key": "loss", "ranks": range(70_000)},
])
def test_bad_requests_fail_before_any_read(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        service(FakeRepository([block(0, 1)])).export_metric_history(**kwargs)
