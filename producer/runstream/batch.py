"""Columnar MetricsBatch bodies from buffered log records. Pure functions.

``Run.log`` buffers its records *flat*: one list holding ``step, ts_ms, metrics`` for
each call in turn (see :data:`FLAT_WIDTH`), so the training thread keeps no tuple per
call alive (fewer objects for the cyclic GC to walk) and the sender takes the columns
apart with three slices instead of a Python loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

from runstream.proto.v1 import events_pb2

#: Items per record in a flat buffer: ``[step0, ts_ms0, metrics0, step1, ts_ms1, ...]``,
#: one record per ``Run.log`` call; ``metrics`` is the caller's validated copy
#: ({key: float value}), owned by the buffer from then on.
FLAT_WIDTH = 3

Columns = tuple[list[str], list[int], list[float], list[int]]


def flat_columns(flat: list[Any]) -> Columns:
    """:func:`columns` of a flat buffer (``FLAT_WIDTH`` items per record)."""
    if len(flat) % FLAT_WIDTH:
        raise ValueError(f"a flat buffer holds {FLAT_WIDTH} items per record, got {len(flat)}")
    return _points(flat[0::3], flat[1::3], flat[2::3])


def _points(steps_col: list[int], ts_col: list[int], dicts: list[dict[str, float]]) -> Columns:
    keys: list[str] = list(chain.from_iterable(dicts))
    n = len(dicts)
    if n and len(keys) == n and keys.count(keys[0]) == n:
        # The same single key in every record (a key is in a dict at most once, so it
        # is in each of them): one lookup per record, no view or iterator objects.
        return keys, steps_col, list(map(itemgetter(keys[0]), dicts)), ts_col
    values: list[float] = list(chain.from_iterable(map(dict.values, dicts)))
    if len(keys) == n and all(map(len, dicts)):  # one point per record
        return keys, steps_col, values, ts_col
    lens = list(map(len, dicts))
    steps = list(chain.from_iterable(map(repeat, steps_col, lens)))
    ts = list(chain.from_iterable(map(repeat, ts_col, lens)))
    return keys, steps, values, ts


def column_chunks(cols: Columns, max_points: int) -> Iterator[Columns]:
    """The columns cut, in order, into pieces of at most ``max_points`` points."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    keys, steps, values, ts = cols
    n = len(keys)
    if n <= max_points:
        if n:
            yield cols
        return
    for start in range(0, n, max_points):
        end = start + max_points
        yield keys[start:end], steps[start:end], values[start:end], ts[start:end]


def fill_batch(batch: events_pb2.MetricsBatch, keys: list[str], steps: list[int],
               values: list[float], ts: list[int]) -> None:
    """Fill an empty MetricsBatch (a fresh one, or a RunEvent's ``metrics`` field, which
    saves copying it) with one chunk of columns, building its key table."""
    if not keys:
        return
    if keys.count(keys[0]) == len(keys):  # one key only: the common case
        table: list[str] = [keys[0]]
        index: list[int] = [0] * len(keys)
    else:
        lookup = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        table = list(lookup)
        index = list(map(lookup.__getitem__, keys))
    batch.keys.extend(table)
    batch.key_index.extend(index)
    batch.steps.extend(steps)
    batch.values.extend(values)
    batch.ts_ms.extend(ts)
