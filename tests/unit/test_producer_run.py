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


# --- values the encoder cannot carry, refused at the call ----------------------------

BAD_TEXT = "loss\udcff"  # what os.fsdecode makes of a file name that is not UTF-8


def test_unencodable_values_are_refused_at_the_call(tmp_path: Path, env):
    with pytest.raises(InvalidArgumentError, match="experiment"):
        runstream.init("exp\udcff", spool_dir=tmp_path, environ=env)
    with pytest.raises(InvalidArgumentError, match="run name"):
        runstream.init("exp", name=BAD_TEXT, spool_dir=tmp_path, environ=env)
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    with pytest.raises(InvalidArgumentError, match="Unicode"):
        run.log({"ok": 1.0, BAD_TEXT: 2.0})
    with pytest.raises(InvalidArgumentError, match="int64"):
        run.log({"ok": 1.0}, step=2**63)
    run.log({"ok": 1.0}, step=2**63 - 1)
    for bad in ({BAD_TEXT: 1}, {"p": BAD_TEXT}, {"p": Path(BAD_TEXT)}):
        with pytest.raises(InvalidArgumentError, match="Unicode"):
            run.log_params(bad)
    for bad in ({BAD_TEXT: "v"}, {"t": BAD_TEXT}):
        with pytest.raises(InvalidArgumentError, match="Unicode"):
            run.set_tags(bad)
    source = tmp_path / "model.bin"
    source.write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="artifact name"):
        run.log_artifact(source, name=BAD_TEXT)
    with pytest.raises(InvalidArgumentError, match="input uri"):
        run.log_input("s3://bucket/" + BAD_TEXT)
    with pytest.raises(InvalidArgumentError, match="input name"):
        run.log_input("s3://bucket/x", name=BAD_TEXT)
    assert run.finish() is True
    events = read_spool(tmp_path)
    assert points_of(events) == [("ok", 2**63 - 1, 1.0)]
    assert not any(e.HasField("params") or e.HasField("tags") or e.HasField("artifact")
                   or e.HasField("input") for e in events)
    assert run.delivery().lossless


def test_a_bad_point_the_encoder_refuses_costs_only_itself(tmp_path: Path, env):
    """A record that slipped past the call's checks (here put in the buffer directly)
    is isolated: the other points of the cycle are sent, the drop counted by reason."""
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    queue = run._queue
    good = [(i, 1_700_000_000_000, {"loss": float(i)}) for i in range(10_000)]
    records = [*good[:4321], (4321, 1_700_000_000_000, {BAD_TEXT: 1.0}), *good[4321:]]
    records.append((2**63, 1_700_000_000_000, {"loss": 2.0}))
    flat: list[object] = []
    for record in records:
        flat += record
    with queue.lock:
        queue.points += flat
    assert run.finish() is False  # two points dropped
    delivery = run.delivery()
    assert delivery.points_logged == 10_002
    assert delivery.points_spooled == 10_000 and delivery.points_pending == 0
    assert delivery.dropped == {
        "metric point could not be encoded (UnicodeEncodeError)": 1,
        "metric point could not be encoded (ValueError)": 1}
    events = read_spool(tmp_path)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert steps_of(events, "loss") == list(range(10_000))
    finished = events[-1].run_finished
    assert finished.points_logged == 10_002
    assert sorted((d.reason, d.events, d.points) for d in finished.dropped) == [
        ("metric point could not be encoded (UnicodeEncodeError)", 1, 1),
        ("metric point could not be encoded (ValueError)", 1, 1)]


# --- limits: what the SDK accepts, the consumer stores -------------------------------


def test_large_bodies_are_cut_into_events_within_every_consumer_limit(tmp_path: Path, env):
    from runstream.proto.validation import MAX_ITEMS_PER_EVENT, MAX_KEYS_PER_BATCH
    from runstream.sender import EVENT_BYTES

    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    run.log_params({f"k{i}": i for i in range(MAX_ITEMS_PER_EVENT + 1)})
    run.log_params({f"big{i}": "v" * 6000 for i in range(3000)})
    run.set_tags({f"t{i}": "x" * 5000 for i in range(1000)})
    run.log({f"m{i}": 1.0 for i in range(MAX_KEYS_PER_BATCH + 5)})
    assert run.finish() is True
    frames = [f for p in spool.ready_files(tmp_path) for f in spool.read_frames(p)]
    assert max(len(f.payload) for f in frames) <= EVENT_BYTES
    events = read_spool(tmp_path)
    for e in events:
        validate(e)  # what the consumer checks: nothing would be dead-lettered
    params = [p.key for e in events if e.HasField("params") for p in e.params.params]
    assert len(params) == len(set(params)) == MAX_ITEMS_PER_EVENT + 1 + 3000
    assert sum(len(e.tags.tags) for e in events if e.HasField("tags")) == 1000
    assert len(points_of(events)) == MAX_KEYS_PER_BATCH + 5
    delivery = run.delivery()
    assert delivery.points_logged == delivery.points_spooled == MAX_KEYS_PER_BATCH + 5
    assert events[-1].run_finished.points_logged == MAX_KEYS_PER_BATCH + 5


def test_delivery_counts_points_through_the_spool_and_its_readers(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, environ=env)
    assert run.delivery() == runstream.Delivery()
    for i in range(25_000):
        run.log({"loss": 1.0, "acc": 2.0}, step=i)
    before = run.delivery()
    assert before.points_logged == 50_000
    assert before.points_logged == (before.points_sent + before.points_spooled
                                    + before.points_pending + before.points_dropped)
    assert run.flush() is True
    flushed = run.delivery()
    assert (flushed.points_spooled, flushed.points_pending) == (50_000, 0)
    # A reader (runstream serve / sync) takes the files: the points count as sent.
    for path in spool.ready_files(tmp_path):
        claimed = spool.claim(path)
        assert claimed is not None
        claimed.done()
    taken = wait_for(run.delivery, lambda d: d.points_spooled == 0, timeout_s=30,
                     what="the sender noticing the files were taken")
    assert (taken.points_sent, taken.points_spooled) == (50_000, 0)
    assert run.finish() is True and run.finish() is True
    finished = read_spool(tmp_path)[-1].run_finished
    assert finished.points_logged == 50_000 and not finished.dropped


def test_run_started_records_the_launcher_torchrun_gave(tmp_path: Path, env):
    """Rank 0 of `torchrun --nproc-per-node 4`: the launcher and its shape reach the
    RunStarted the sender builds, beside argv and the rest of the environment."""
    torchrun = {**env, "RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
                "ROLE_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "job-7"}
    spool_dir = tmp_path / "spool"
    run = runstream.init("exp", spool_dir=spool_dir, environ=torchrun)
    assert run.finish() is True
    started = read_spool(spool_dir)[0]
    validate(started)
    e = started.run_started.env
    assert (e.launcher, e.nnodes, e.nproc_per_node) == ("torchrun", 1, 4)
    assert e.python_version and list(e.argv) and e.command
