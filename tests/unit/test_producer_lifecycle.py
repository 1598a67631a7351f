"""Run lifecycle (runstream.lifecycle): uncaught exceptions, dying threads, SIGTERM, exit
and fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runstream
from runstream.proto.v1 import events_pb2
from tests.helpers import points_of, read_spool, steps_of


def child(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    code = "import runstream, sys, os, signal, threading, time\n" + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env |= {"RUNSTREAM_HOME": str(tmp_path / "home"),
            "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"), "RUNSTREAM_SYSTEM_METRICS_S": "0"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(tmp_path: Path) -> events_pb2.RunFinished:
    events = read_spool(tmp_path / "spool")
    done = [e.run_finished for e in events if e.HasField("run_finished")]
    assert len(done) == 1, [e.WhichOneof("body") for e in events]
    assert events[-1].HasField("run_finished")
    return done[0]


def test_uncaught_exception_fails_the_run_with_its_traceback(tmp_path: Path):
    proc = child(tmp_path, """
        run = runstream.init("exp")
        run.log({"x": 1.0})
        def train():
            raise ValueError("diverged at step 7")
        train()
    """)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "diverged at step 7" in err  # the previous excepthook still printed it
    status = finished(tmp_path)
    assert status.status == events_pb2.FAILED
    assert "ValueError: diverged at step 7" in status.error and "in train" in status.error


def test_a_thread_dying_of_an_exception_fails_an_unfinished_run_at_exit(tmp_path: Path):
    proc = child(tmp_path, """
        run = runstream.init("exp")
        def load():
            raise OSError("shard 3 unreadable")
        t = threading.Thread(target=load, name="loader")
        t.start(); t.join()
        run.log({"x": 1.0})
    """)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "shard 3 unreadable" in err
    status = finished(tmp_path)
    assert status.status == events_pb2.FAILED
    assert "loader" in status.error and "OSError: shard 3 unreadable" in status.error


@pytest.mark.parametrize("chained", [False, True])
def test_sigterm_kills_the_run_then_runs_the_previous_handler(tmp_path: Path, chained: bool):
    marker = tmp_path / "previous-ran"
    setup = (f"signal.signal(signal.SIGTERM, lambda s, f: (open({str(marker)!r}, 'w').close(), "
             "sys.exit(3)))") if chained else ""
    proc = child(tmp_path, f"""
        {setup}
        run = runstream.init("exp")
        print("ready", flush=True)
        step = 0
        while True:
            run.log({{"loss": 1.0 / (step + 1)}}, step=step)
            step += 1
    """)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == (3 if chained else -signal.SIGTERM)
    assert marker.exists() == chained
    status = finished(tmp_path)
    assert status.status == events_pb2.KILLED and "SIGTERM" in status.error
    steps = steps_of(read_spool(tmp_path / "spool"), "loss")
    assert steps == list(range(len(steps)))  # nothing logged before the signal was lost


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
