"""The producer's flat point buffer: what Run.log appends and the sender takes apart."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstream
from runstream.batch import FLAT_WIDTH, columns, fill_batch, flat_columns, metrics_batches
from runstream.proto import codec, spool
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import events_pb2
from runstream.sender import EventQueue, Request


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"RUNSTREAM_HOME": str(tmp_path / "home")}
    active = runstream.active_run()
    if active is not None:
        active.finish()


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


def test_queue_keeps_points_appended_after_close_for_their_caller():
    queue = EventQueue()
    early = {"a": 1.0}
    queue.points += (0, 1, early)
    assert queue.close(None, Request(1.0))
    late = {"a": 2.0}
    queue.points += (1, 2, late)
    segments, points = queue.take()
    assert points == []  # the late record is not sent after the stop ...
    assert [kind for kind, _ in segments][0:1] == [0] and segments[0][1] == [0, 1, early]
    assert queue.unlog(late) is True  # ... its caller takes it back and raises
    assert queue.points == [] and queue.unlog(early) is False


def test_log_after_finish_raises_and_records_nothing(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    run.log({"a": 1.0})
    run.finish()
    with pytest.raises(InvalidArgumentError):
        run.log({"a": 2.0})
    assert run._queue.points == []


def test_the_callers_dict_is_copied_and_each_point_has_its_own_step_and_ts(
        tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env, system_metrics_s=0)
    metrics = {"loss": 1.0}
    for i in range(2 * FLAT_WIDTH):
        metrics["loss"] = float(i)
        run.log(metrics, step=10 + i)
    metrics["loss"] = -1.0
    run.log({"loss": math.inf, "n": 3})
    assert run.finish() is True
    got = []
    for path in spool.ready_files(tmp_path):
        for frame in spool.read_frames(path):
            event = codec.decode(frame.payload, codec.CONTENT_TYPES[frame.encoding])
            if event.WhichOneof("body") == "metrics":
                m = event.metrics
                got += [(m.keys[k], s, v, t, event.rank) for k, s, v, t in
                        zip(m.key_index, m.steps, m.values, m.ts_ms, strict=True)]
    assert [(k, s, v) for k, s, v, _, _ in got] == (
        [("loss", 10 + i, float(i)) for i in range(2 * FLAT_WIDTH)]
        + [("loss", 16, math.inf), ("n", 16, 3.0)])
    assert all(t > 1_600_000_000_000 for *_, t, _ in got)
    assert {r for *_, r in got} == {0}
