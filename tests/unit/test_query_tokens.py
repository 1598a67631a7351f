"""runstream.query.tokens: page tokens round-trip, and anything else is INVALID_ARGUMENT."""

from __future__ import annotations

import base64
import json

import pytest

from runstream.proto.errors import InvalidArgumentError
from runstream.query import tokens
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
