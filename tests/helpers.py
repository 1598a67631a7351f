"""Small test utilities: poll with a deadline instead of sleeping for a result, and read
what a consumer RowBatch holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

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


def table_columns(batch: Any, table: Any) -> list[list[Any]]:
    """The rows of ``table`` (a runstream.proto.tables.Table) in a consumer RowBatch, as
    column lists in the table's column order (metric points read out of their Arrow table)."""
    for t, data in batch.nonempty():
        if t is table:
            if isinstance(data, list):
                return [list(c) for c in data]
            return [column.to_pylist() for column in data.columns]
    return [[] for _ in table.columns]


def row_count(batch: Any, table: Any) -> int:
    """Rows of ``table`` in a consumer RowBatch."""
    return len(table_columns(batch, table)[0])
