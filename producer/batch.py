"""Columnar MetricsBatch bodies from buffered log records. Pure functions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain, repeat

from runstream.proto.v1 import events_pb2

#: One buffered ``Run.log`` call: (step, ts_ms, {key: float value}). The dict is the
#: caller's validated copy, owned by the buffer from then on.
Record = tuple[int, int, dict[str, float]]


def columns(records: Sequence[Record]) -> tuple[list[str], list[int], list[float], list[int]]:
    """Flatten records into parallel (keys, steps, values, ts_ms) lists, in order.

    Built from C-level iterators (no Python loop per point): this runs on the sender
    thread, which shares the GIL with the training thread."""
    if not records:
        return [], [], [], []
    steps_col, ts_col, dicts = zip(*records, strict=True)
    keys: list[str] = list(chain.from_iterable(dicts))
    values: list[float] = list(chain.from_iterable(map(dict.values, dicts)))
    if len(keys) == len(records) and all(map(len, dicts)):  # one point per record
        return keys, list(steps_col), values, list(ts_col)
    lens = list(map(len, dicts))
    steps = list(chain.from_iterable(map(repeat, steps_col, lens)))
    ts = list(chain.from_iterable(map(repeat, ts_col, lens)))
    return keys, steps, values, ts


def metrics_batches(
    records: Sequence[Record], max_points: int
) -> Iterator[events_pb2.MetricsBatch]:
    """Split the records' points, in order, into batches of at most ``max_points``, each
    with its own small key table (point i is keys[key_index[i]], steps[i], values[i],
    ts_ms[i])."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    keys, steps, values, ts = columns(records)
    for start in range(0, len(keys), max_points):
        end = start + max_points
        chunk = keys[start:end]
        table = {k: i for i, k in enumerate(dict.fromkeys(chunk))}
        yield events_pb2.MetricsBatch(
            keys=list(table),
            key_index=list(map(table.__getitem__, chunk)),
            steps=steps[start:end],
            values=values[start:end],
            ts_ms=ts[start:end],
        )
