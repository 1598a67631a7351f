"""The SDK's Run within one process, on the local spool (no network): what init and log
record, exactly once."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

import runstream
from runstream.batch import FLAT_WIDTH
from runstream.proto import codec, spool
from runstream.proto.errors import AlreadyExistsError, InvalidArgumentError
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import validate
from runstream.sender import THREAD_NAME
from tests.helpers import points_of, read_spool, steps_of, wait_for


def test_spool_mode_every_point_once_in_seq_order(tmp_path: Path, env):
    spool_dir = tmp_path / "spool"
    run = runstream.init("exp", name="r", spool_dir=spool_dir, params={"lr": 0.1},
                         tags={"team": "a"}, environ=env)
    assert (run.rank, run.world_size) == (0, 1)
    threads = [t.name for t in __import__("threading").enumerate()]
    assert threads.count(THREAD_NAME) == 1
    n = 5000
    for i in range(n):
        run.log({"loss": i / n, "acc": float(i)}, step=i // (n // 2))
    run.log({"nan": math.nan, "inf": math.inf, "flag": True, "int": 3})
    assert run.finish() is True
    assert run.finish() is True  # idempotent

    events = read_spool(spool_dir)
    for e in events:
        validate(e)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.producer_id for e in events}) == 1
    assert {(e.run_id, e.experiment, e.rank, e.world_size) for e in events} == {
        (run.id, "exp", 0, 1)}
    kinds = [e.WhichOneof("body") for e in events]
    assert kinds[:3] == ["run_started", "params", "tags"]
    assert kinds[-1] == "run_finished"
    assert events[-1].run_finished.status == events_pb2.FINISHED
    assert events[0].run_started.name == "r"
    assert events[0].run_started.env.python_version

    points = points_of(events)
    expected = [(k, i // (n // 2), v) for i in range(n)
                for k, v in (("loss", i / n), ("acc", float(i)))]
    assert points[: 2 * n] == expected
    tail = {k: (s, v) for k, s, v in points[2 * n :]}
    assert tail["flag"] == (2, 1.0) and tail["int"] == (2, 3.0)
    assert math.isnan(tail["nan"][1]) and tail["inf"][1] == math.inf
    assert len(points) == 2 * n + 4


def test_avro_encoding(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, encoding="avro", environ=env)
    run.log({"loss": 1.5}, step=7)
    run.finish()
    frames = [f for p in spool.ready_files(tmp_path) for f in spool.read_frames(p)]
    assert frames and {f.encoding for f in frames} == {"avro"}
    assert all(f.payload[:2] == codec.AVRO_SOE_MAGIC for f in frames)
    assert points_of(read_spool(tmp_path)) == [("loss", 7, 1.5)]


def test_log_validation_records_nothing_from_a_bad_call(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    with pytest.raises(InvalidArgumentError):
        run.log({"ok": 1.0, "bad": "text"})
    with pytest.raises(InvalidArgumentError):
        run.log({"": 1.0})
    with pytest.raises(InvalidArgumentError):
        run.log({"k" * 251: 1.0})
    with pytest.raises(InvalidArgumentError):
        run.log({1: 1.0})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgumentError):
        run.log({"ok": 1.0}, step=-1)
    with pytest.raises(InvalidArgumentError):
        run.log({"ok": None})  # type: ignore[dict-item]
    run.log({"ok": 2.0})
    run.log({"ok": 3.0})
    run.finish()
    with pytest.raises(InvalidArgumentError):
        run.log({"ok": 4.0})
    assert points_of(read_spool(tmp_path)) == [("ok", 0, 2.0), ("ok", 1, 3.0)]


def test_params_conflict_and_tags(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, params={"opt": {"lr": 0.1}}, environ=env)
    run.log_params({"opt.lr": 0.1, "seed": 3})  # same value again: fine
    with pytest.raises(InvalidArgumentError, match=r"opt\.lr"):
        run.log_params({"opt": {"lr": 0.2}, "other": 1})
    run.set_tags({"a": "x", "n": 5})
    run.finish()
    events = read_spool(tmp_path)
    params = [(p.key, p.value, p.type) for e in events if e.HasField("params")
              for p in e.params.params]
    assert params == [("opt.lr", "0.1", events_pb2.FLOAT), ("seed", "3", events_pb2.INT)]
    tags = [(t.key, t.value) for e in events if e.HasField("tags") for t in e.tags.tags]
    assert tags == [("a", "x"), ("n", "5")]


def test_second_init_same_id_returns_run_other_id_raises(tmp_path: Path, env):
    run = runstream.init("exp", run_id="r-1", spool_dir=tmp_path, environ=env)
    assert runstream.init("exp", run_id="r-1", spool_dir=tmp_path, environ=env) is run
    with pytest.raises(AlreadyExistsError, match="r-1"):
        runstream.init("exp", run_id="r-2", spool_dir=tmp_path, environ=env)
    run.finish()
    run2 = runstream.init("exp", run_id="r-2", spool_dir=tmp_path, environ=env)
    assert run2.id == "r-2"
    run2.finish()


def test_context_manager_marks_failure_with_traceback(tmp_path: Path, env):
    with pytest.raises(ZeroDivisionError), \
            runstream.init("exp", spool_dir=tmp_path, environ=env) as run:
        run.log({"x": 1.0})
        1 / 0  # noqa: B018
    finished = [e for e in read_spool(tmp_path) if e.HasField("run_finished")]
    assert len(finished) == 1
    assert finished[0].run_finished.status == events_pb2.FAILED
    assert "ZeroDivisionError" in finished[0].run_finished.error


def test_rank_and_run_id_from_launcher_env(tmp_path: Path, env):
    env |= {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "j9"}
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    assert (run.id, run.rank, run.world_size) == ("j9", 1, 2)
    run.finish()
    assert {(e.rank, e.world_size, e.local_rank) for e in read_spool(tmp_path)} == {(1, 2, 1)}


def test_flush_publishes_spool_files_for_live_readers(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    run.log({"a": 1.0}, step=1)
    assert run.flush(timeout_s=10) is True
    assert ("a", 1, 1.0) in points_of(read_spool(tmp_path))
    run.finish()


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


def test_log_racing_finish_loses_no_point(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    accepted: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(5)

    def logger(i: int) -> None:
        start.wait()
        for step in range(1_000_000):
            try:
                run.log({f"t{i}": 1.0}, step=step)
            except InvalidArgumentError:
                return
            accepted[i].append(step)

    threads = [threading.Thread(target=logger, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    start.wait()
    wait_for(lambda: min(len(a) for a in accepted), lambda n: n > 2000, what="logging")
    assert run.finish(timeout_s=30) is True
    for t in threads:
        t.join(30)
    events = read_spool(tmp_path)
    for i in range(4):
        assert steps_of(events, f"t{i}") == accepted[i]
    assert events[-1].HasField("run_finished")
