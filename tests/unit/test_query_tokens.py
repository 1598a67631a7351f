"""Page tokens and request validation of the query service: pure, no ClickHouse."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any, cast

import pytest

from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query import tokens
from runstream.query.models import CodeVersion, Environment
from runstream.query.service import (
    QueryService,
    assemble_ranks,
    assemble_run_info,
    page_size_or_default,
    validate_ranks,
)
from runstream.query.storage import PointRows, RankRow, StatusRow
from runstream.query.tokens import PointCursor


def test_search_token_round_trips() -> None:
    scope = tokens.search_scope(["exp"], "metrics.a > 1", ["metrics.a DESC"])
    keyset = [0, 0.5, 1_700_000_000_000, "run-42"]
    token = tokens.encode_search_token(scope, keyset)
    assert tokens.decode_search_token(token, scope, 4) == keyset
    assert tokens.decode_search_token("", scope, 4) is None


def test_history_token_round_trips_and_ignores_rank_order() -> None:
    cursor = PointCursor(3, -5, 17, "prod-ü", (1 << 64) - 1, 9)
    token = tokens.encode_history_token("r", "loss", [3, 1], cursor)
    assert tokens.decode_history_token(token, "r", "loss", [1, 3, 3]) == cursor


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "e30=",  # {}
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        "x" * 5000,
    ],
)
def test_malformed_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgumentError, match="page_token"):
        tokens.decode_history_token(token, "r", "k", [])
    with pytest.raises(InvalidArgumentError, match="page_token"):
        tokens.decode_search_token(token, tokens.search_scope([], "", []), 2)


def _forge(kind: str, scope: str, position: list[object]) -> str:
    body = {"v": 1, "k": kind, "q": scope, "p": position}
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize(
    "position",
    [[1, 2, 3], ["1", 0, 0, "p", 0, 0], [True, 0, 0, "p", 0, 0], [0, 1 << 64, 0, "p", 0, 0],
     [0, 0, 0, 5, 0, 0], [1.5, 0, 0, "p", 0, 0], [0, 0, 0, "x" * 300, 0, 0]],
)
def test_tokens_with_wrong_shapes_or_types_are_rejected(position: list[object]) -> None:
    token = _forge("history", tokens.history_scope("r", "k", []), position)
    with pytest.raises(InvalidArgumentError, match="malformed"):
        tokens.decode_history_token(token, "r", "k", [])


@pytest.mark.parametrize("position", [[True, "r"], [None, "r"], [1, "x" * 9000], [1, [2]]])
def test_search_tokens_hold_only_numbers_and_short_text(position: list[object]) -> None:
    scope = tokens.search_scope([], "", [])
    with pytest.raises(InvalidArgumentError, match="malformed"):
        tokens.decode_search_token(_forge("search", scope, position), scope, 2)


def test_history_token_with_negative_rank_is_rejected() -> None:
    token = _forge("history", tokens.history_scope("r", "k", []), [-1, 0, 0, "p", 0, 0])
    with pytest.raises(InvalidArgumentError):
        tokens.decode_history_token(token, "r", "k", [])


def test_token_of_another_kind_or_request_is_rejected() -> None:
    search_token = tokens.encode_search_token(tokens.search_scope(["a"], "", []), [1, "r"])
    with pytest.raises(InvalidArgumentError, match="different request"):
        tokens.decode_search_token(search_token, tokens.search_scope(["b"], "", []), 2)
    with pytest.raises(InvalidArgumentError):
        tokens.decode_history_token(search_token, "r", "k", [])
    hist = tokens.encode_history_token("r", "k", [1], PointCursor(1, 0, 0, "p", 1, 0))
    with pytest.raises(InvalidArgumentError, match="different request"):
        tokens.decode_history_token(hist, "r", "k", [2])


# --- validation through the service with a repository that must never be reached ---


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

    def rank_rows(self, run_id: str) -> list[RankRow]:
        return []

    def statuses(self, run_ids: object, *, rank: int | None = None) -> list[StatusRow]:
        return []

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


def _status(rank: int, status: str, last_ms: int) -> StatusRow:
    return StatusRow(run_id="r", rank=rank, experiment="e", status=status, error="",
                     first_ms=10, last_ms=last_ms)


def test_rank_zero_owns_the_run_status() -> None:
    ranks = [_rank(1, 5), _rank(0, 7)]
    info = assemble_run_info("r", ranks, [_status(0, "RUNNING", 7), _status(1, "FAILED", 9)])
    assert (info.name, info.status, info.start_ms, info.end_ms) == ("n0", "RUNNING", 5, 0)
    info = assemble_run_info("r", ranks, [_status(0, "KILLED", 20)])
    assert (info.status, info.end_ms) == ("KILLED", 20)
    per_rank = assemble_ranks(ranks, [_status(1, "FAILED", 9), _status(2, "RUNNING", 3)])
    assert [(r.rank, r.status, r.end_ms) for r in per_rank] == [
        (0, "RUN_STATUS_UNSPECIFIED", 0), (1, "FAILED", 9), (2, "RUNNING", 0),
    ]


def test_importing_the_client_pulls_in_no_clickhouse() -> None:
    code = (
        "import sys, runstream.query, runstream.query.client;"
        "bad = [m for m in sys.modules if m.startswith(('clickhouse_connect', 'chdb'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
