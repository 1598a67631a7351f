"""Columnar MetricsBatch bodies from buffered points. Pure functions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from runstream.proto.v1 import events_pb2

#: One buffered metric point: (key, step, value, ts_ms).
Point = tuple[str, int, float, int]


def metrics_batches(points: Sequence[Point], max_points: int) -> Iterator[events_pb2.MetricsBatch]:
    """Split points, in order, into batches of at most ``max_points``, each with its own
    small key table (point i is keys[key_index[i]], steps[i], values[i], ts_ms[i])."""
    if max_points < 1:
        raise ValueError(f"max_points must be >= 1, got {max_points}")
    for start in range(0, len(points), max_points):
        chunk = points[start : start + max_points]
        key_table: dict[str, int] = {}
        setdefault = key_table.setdefault
        key_index = [setdefault(p[0], len(key_table)) for p in chunk]
        yield events_pb2.MetricsBatch(
            keys=list(key_table),
            key_index=key_index,
            steps=[p[1] for p in chunk],
            values=[p[2] for p in chunk],
            ts_ms=[p[3] for p in chunk],
        )
