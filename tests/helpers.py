"""Small test utilities: poll with a deadline instead of sleeping for a result."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    fetch: Callable[[], T],
    done: Callable[[T], bool] = bool,
    timeout_s: float = 60.0,
    interval_s: float = 0.1,
    what: str = "condition",
) -> T:
    """Call `fetch` until `done(result)` holds; return that result or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T = fetch()
    while not done(last):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)
        last = fetch()
    return last
