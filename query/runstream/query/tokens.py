"""Opaque page tokens for keyset pagination (pure functions, no I/O, thread-safe).

A token is URL-safe base64 of a small JSON object: a version, the kind of listing,
a digest of the request it belongs to (so a token cannot be replayed against another
experiment, run, metric or rank filter) and the sort key of the last row served. The
next page starts strictly after that key, so pages never skip or repeat a row even
while new rows arrive. Anything that does not decode to exactly that shape raises
:class:`InvalidArgumentError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from runstream.proto.errors import InvalidArgumentError

VERSION = 1
MAX_TOKEN_LEN = 4096
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT32 = (0, (1 << 32) - 1)
_UINT64 = (0, (1 << 64) - 1)


class PointCursor(NamedTuple):
    """Sort key of the last metric point served, in the history's ascending order."""

    rank: int
    step: int
    ts_ms: int
    producer_id: str
    seq: int
    idx: int


def _scope(*parts: object) -> str:
    blob = json.dumps(parts, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def history_scope(run_id: str, key: str, ranks: Sequence[int]) -> str:
    """Digest of a GetMetricHistory request's filter (ranks in any order)."""
    return _scope("history", run_id, key, sorted(set(ranks)))


def _encode(kind: str, scope: str, position: Sequence[object]) -> str:
    body = {"v": VERSION, "k": kind, "q": scope, "p": list(position)}
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode(token: str, kind: str, scope: str, arity: int) -> list[Any]:
    bad = InvalidArgumentError("page_token is malformed; pass a token from a previous response")
    if len(token) > MAX_TOKEN_LEN:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
        body = json.loads(raw)
    except (UnicodeError, binascii.Error, ValueError) as e:
        raise bad from e
    if not isinstance(body, dict) or body.get("v") != VERSION or body.get("k") != kind:
        raise bad
    if body.get("q") != scope:
        raise InvalidArgumentError(
            "page_token belongs to a different request; repeat the request's filters unchanged"
        )
    position = body.get("p")
    if not isinstance(position, list) or len(position) != arity:
        raise bad
    return position


def _int(value: object, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise InvalidArgumentError("page_token is malformed; pass a token from a previous response")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidArgumentError("page_token is malformed; pass a token from a previous response")
    return value


def encode_history_token(run_id: str, key: str, ranks: Sequence[int], cursor: PointCursor) -> str:
    """Token for the GetMetricHistory page after ``cursor`` (same run, key and ranks)."""
    return _encode("history", history_scope(run_id, key, ranks), cursor)


def decode_history_token(
    token: str, run_id: str, key: str, ranks: Sequence[int]
) -> PointCursor | None:
    """The cursor in a GetMetricHistory token; None for "". Raises InvalidArgumentError."""
    if not token:
        return None
    rank, step, ts_ms, producer_id, seq, idx = _decode(
        token, "history", history_scope(run_id, key, ranks), 6
    )
    return PointCursor(
        _int(rank, _UINT32),
        _int(step, _INT64),
        _int(ts_ms, _INT64),
        _str(producer_id),
        _int(seq, _UINT64),
        _int(idx, _UINT32),
    )


def search_scope(experiments: Sequence[str], filter_text: str, order_by: Sequence[str]) -> str:
    """Digest of a SearchRuns request: its experiments, filter and order_by."""
    return _scope("search", sorted(set(experiments)), filter_text, list(order_by))


def encode_search_token(scope: str, keyset: Sequence[object]) -> str:
    """Token for the SearchRuns page after the row whose keyset values are ``keyset``."""
    return _encode("search", scope, keyset)


def decode_search_token(token: str, scope: str, arity: int) -> list[int | float | str] | None:
    """The keyset values in a SearchRuns token (None for ""); each a number or a string.

    The repository checks each value's type against its keyset column.
    """
    if not token:
        return None
    values = _decode(token, "search", scope, arity)
    for value in values:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
            isinstance(value, str) and len(value) <= 8192
        )
        if not ok:
            raise InvalidArgumentError(
                "page_token is malformed; pass a token from a previous response"
            )
    return values
