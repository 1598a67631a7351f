"""The deadline of the RPC being served, visible to the repository (pure, thread-safe).

The servicer opens :func:`scope` with the gRPC context's remaining time; the repository
reads :func:`remaining_s` to cap each ClickHouse query (``max_execution_time``) and to
refuse work once the caller has given up. The service layer never sees it. State lives
in a :class:`contextvars.ContextVar`, so concurrent RPCs on other threads don't mix.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runstream.proto.errors import DeadlineExceededError

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "runstream_query_deadline", default=None
)


@contextmanager
def scope(timeout_s: float | None) -> Iterator[None]:
    """Within the block, work must finish in ``timeout_s`` seconds (None = no deadline)."""
    token = _DEADLINE.set(None if timeout_s is None else time.monotonic() + timeout_s)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining_s() -> float | None:
    """Seconds left before the current deadline (None = none); DeadlineExceededError if past."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError("the request's deadline passed")
    return left
