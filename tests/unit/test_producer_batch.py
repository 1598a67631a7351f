"""runstream.batch: the flat buffer Run.log fills, taken apart into columnar MetricsBatch
bodies, checked against plain reference implementations written here."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from runstream.batch import column_chunks, fill_batch, flat_columns
from runstream.proto.v1 import events_pb2

Record = tuple[int, int, dict[str, float]]


def columns(records: list[Record]) -> tuple[list[str], list[int], list[float], list[int]]:
    """Reference: (keys, steps, values, ts_ms) of the records' points, one loop per point."""
    keys: list[str] = []
    steps: list[int] = []
    values: list[float] = []
    ts: list[int] = []
    for step, ts_ms, metrics in records:
        for key, value in metrics.items():
            keys.append(key)
            steps.append(step)
            values.append(value)
            ts.append(ts_ms)
    return keys, steps, values, ts


def metrics_batches(records: list[Record], max_points: int) -> Iterator[events_pb2.MetricsBatch]:
    """Reference: the points in order, at most ``max_points`` a batch, each batch with its
    own key table in first-seen order."""
    keys, steps, values, ts = columns(records)
    for start in range(0, len(keys), max_points):
        batch = events_pb2.MetricsBatch()
        table: dict[str, int] = {}
        for i in range(start, min(start + max_points, len(keys))):
            batch.key_index.append(table.setdefault(keys[i], len(table)))
            batch.steps.append(steps[i])
            batch.values.append(values[i])
            batch.ts_ms.append(ts[i])
        batch.keys.extend(table)
        yield batch


def sent_batches(records: list[Record], max_points: int) -> list[events_pb2.MetricsBatch]:
    """The MetricsBatch bodies the sender builds from these records (Sender._send_points)."""
    out = []
    for chunk in column_chunks(flat_columns(flatten(records)), max_points):
        batch = events_pb2.MetricsBatch()
        fill_batch(batch, *chunk)
        out.append(batch)
    return out


def flatten(records: list[tuple[int, int, dict[str, float]]]) -> list[object]:
    flat: list[object] = []
    for record in records:
        flat += record
    return flat


RECORD_SETS = [
    [(i, 1000 + i, {"loss": i * 0.5}) for i in range(7)],
    [(i, 1000 + i, {"loss": 1.0, "acc": 2.0}) for i in range(3)],
    [(0, 1, {"a": 1.0}), (1, 2, {"b": 2.0}), (2, 3, {"a": 3.0})],
    [(0, 1, {}), (1, 2, {"a": 1.0, "b": 2.0}), (2, 3, {"c": math.nan})],
    [(0, 1, {"a": 1.0, "b": 2.0}), (1, 2, {})],
    [(0, 1, {})],
    [],
]


@pytest.mark.parametrize("records", RECORD_SETS)
def test_flat_columns_match_record_columns(records):
    expected = columns(records)
    got = flat_columns(flatten(records))
    assert [list(c) for c in got[:2]] == [list(c) for c in expected[:2]]
    assert got[3] == expected[3]
    assert [repr(v) for v in got[2]] == [repr(v) for v in expected[2]]  # NaN too
    points = [(k, s, t) for r in records for k, s, t in [(k, r[0], r[1]) for k in r[2]]]
    assert list(zip(got[0], got[1], got[3], strict=True)) == points


def test_flat_buffer_rejects_a_partial_record():
    with pytest.raises(ValueError):
        flat_columns([1, 2])


@pytest.mark.parametrize("records", RECORD_SETS)
def test_fill_batch_matches_metrics_batches(records):
    expected = list(metrics_batches(records, 1_000_000))
    cols = flat_columns(flatten(records))
    if not cols[0]:
        assert expected == []
        return
    batch = events_pb2.MetricsBatch()
    fill_batch(batch, *cols)
    assert [batch] == expected
    assert len(batch.keys) == len(set(batch.keys))


def test_metrics_batches_are_columnar_and_split():
    records = [(i, 1000 + i, {"loss": i * 0.5}) for i in range(5)] + [(9, 2000, {"acc": 1.0})]
    batches = sent_batches(records, 4)
    assert batches == list(metrics_batches(records, 4))
    assert [len(b.steps) for b in batches] == [4, 2]
    first, second = batches
    assert list(first.keys) == ["loss"] and list(first.key_index) == [0, 0, 0, 0]
    assert list(second.keys) == ["loss", "acc"] and list(second.key_index) == [0, 1]
    assert list(second.steps) == [4, 9] and list(second.values) == [2.0, 1.0]
    assert list(second.ts_ms) == [1004, 2000]
