"""The SDK end to end within one process, on the local spool (no network)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstream
from runstream.batch import metrics_batches
from runstream.params import flatten, typed_params
from runstream.proto import codec, spool
from runstream.proto.errors import AlreadyExistsError, InvalidArgumentError
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import validate
from runstream.sender import THREAD_NAME


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"RUNSTREAM_HOME": str(tmp_path / "home")}
    active = runstream.active_run()
    if active is not None:
        active.finish()


def read_spool(directory: Path) -> list[events_pb2.RunEvent]:
    events = []
    for path in spool.ready_files(directory):
        for frame in spool.read_frames(path):
            events.append(codec.decode(frame.payload, codec.CONTENT_TYPES[frame.encoding]))
    return events


def points_of(events: list[events_pb2.RunEvent]) -> list[tuple[str, int, float]]:
    out = []
    for e in events:
        if e.WhichOneof("body") == "metrics":
            m = e.metrics
            out += [(m.keys[k], s, v) for k, s, v in zip(m.key_index, m.steps, m.values,
                                                           strict=True)]
    return out


# --- pure pieces ---------------------------------------------------------------------

def test_params_flatten_and_types():
    assert flatten({"opt": {"lr": 0.1, "betas": {"b1": 0.9}}, "seed": 1}) == {
        "opt.lr": 0.1, "opt.betas.b1": 0.9, "seed": 1}
    typed = typed_params({"a": 1, "b": 0.5, "c": True, "d": "x", "e": None, "f": [1, 2],
                          "g": float("nan")})
    assert typed == {
        "a": ("1", events_pb2.INT),
        "b": ("0.5", events_pb2.FLOAT),
        "c": ("true", events_pb2.BOOL),
        "d": ("x", events_pb2.STRING),
        "e": ("", events_pb2.STRING),
        "f": ("[1, 2]", events_pb2.STRING),
        "g": ("nan", events_pb2.FLOAT),
    }
    with pytest.raises(InvalidArgumentError):
        typed_params({"k": "x" * 7000})
    with pytest.raises(InvalidArgumentError):
        typed_params({"": 1})


def test_metrics_batches_are_columnar_and_split():
    records = [(i, 1000 + i, {"loss": i * 0.5}) for i in range(5)] + [(9, 2000, {"acc": 1.0})]
    batches = list(metrics_batches(records, 4))
    assert [len(b.steps) for b in batches] == [4, 2]
    first, second = batches
    assert list(first.keys) == ["loss"] and list(first.key_index) == [0, 0, 0, 0]
    assert list(second.keys) == ["loss", "acc"] and list(second.key_index) == [0, 1]
    assert list(second.steps) == [4, 9] and list(second.values) == [2.0, 1.0]
    assert list(second.ts_ms) == [1004, 2000]


# --- the run --------------------------------------------------------------------------

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


def test_artifact_store_is_content_addressed(tmp_path: Path, env):
    store = tmp_path / "store"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    run = runstream.init("exp", spool_dir=tmp_path / "spool", artifacts_dir=store, environ=env)
    sha_file = run.log_artifact(src / "a.txt")
    assert sha_file == hashlib.sha256(b"hello").hexdigest()
    blob = store / "sha256" / sha_file[:2] / sha_file
    assert blob.read_bytes() == b"hello"
    assert run.log_artifact(src / "a.txt", name="again") == sha_file  # stored once
    sha_dir = run.log_artifact(src, name="model")
    manifest = json.loads((store / "sha256" / sha_dir[:2] / sha_dir).read_bytes())
    assert manifest == {"files": [
        {"path": "a.txt", "sha256": sha_file, "size_bytes": 5},
        {"path": "sub/b.bin", "sha256": hashlib.sha256(b"\x00\x01").hexdigest(),
         "size_bytes": 2},
    ]}
    digest = run.log_input(src / "a.txt", role="validation")
    assert digest == "sha256:" + sha_file
    assert run.log_input("s3://bucket/data", digest="etag-1") == "etag-1"
    with pytest.raises(InvalidArgumentError):
        run.log_input(tmp_path / "missing")
    run.finish()
    events = read_spool(tmp_path / "spool")
    arts = [e.artifact for e in events if e.HasField("artifact")]
    assert [(a.name, a.sha256, a.size_bytes) for a in arts] == [
        ("a.txt", sha_file, 5), ("again", sha_file, 5), ("model", sha_dir, 7)]
    assert arts[0].uri == blob.resolve().as_uri()
    inputs = [e.input for e in events if e.HasField("input")]
    assert [(i.name, i.role, i.uri) for i in inputs] == [
        ("a.txt", "validation", (src / "a.txt").resolve().as_uri()),
        ("data", "train", "s3://bucket/data")]
    for e in events:
        validate(e)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_is_a_new_producer_and_does_not_duplicate(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    parent_producer = run.producer_id
    run.log({"parent": 1.0}, step=0)  # may still be buffered at fork time
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            run.log({"child": 2.0}, step=0)
            ok = run.flush(timeout_s=10)
            os.write(write_fd, f"{int(ok)} {run.producer_id}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        ok, child_producer = pipe.read().split()
    os.waitpid(pid, 0)
    assert ok == "1" and child_producer != parent_producer
    run.finish()
    events = read_spool(tmp_path)
    points = points_of(events)
    assert sorted(points) == [("child", 0, 2.0), ("parent", 0, 1.0)]
    child_events = [e for e in events if e.producer_id == child_producer]
    assert [e.seq for e in child_events] == list(range(1, len(child_events) + 1))
    assert not any(e.HasField("run_finished") or e.HasField("run_started")
                   for e in child_events)


def test_import_is_light():
    code = ("import runstream, sys; "
            "assert 'grpc' not in sys.modules and 'clickhouse_connect' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_atexit_finishes_an_unfinished_run(tmp_path: Path):
    code = ("import runstream; "
            f"run = runstream.init('exp', spool_dir={str(tmp_path)!r}); "
            "run.log({'x': 1.0}, step=3)")
    env = {**os.environ, "RUNSTREAM_HOME": str(tmp_path / "home")}
    env.pop("RUNSTREAM_KAFKA", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    events = read_spool(tmp_path)
    assert points_of(events) == [("x", 3, 1.0)]
    assert events[-1].run_finished.status == events_pb2.FINISHED
