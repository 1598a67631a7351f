"""Run lifecycle on the local spool: uncaught exceptions, SIGTERM, heartbeats, system
metrics, log() racing finish(), code version and input digests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstream
from runstream import artifacts, capture
from runstream.proto import codec, spool
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import events_pb2
from runstream.system import THREAD_NAME as SYSTEM_THREAD
from tests.helpers import wait_for


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"RUNSTREAM_HOME": str(tmp_path / "home"), "RUNSTREAM_SYSTEM_METRICS_S": "0"}
    active = runstream.active_run()
    if active is not None:
        active.finish()


def read_spool(directory: Path) -> list[events_pb2.RunEvent]:
    return [codec.decode(f.payload, codec.CONTENT_TYPES[f.encoding])
            for p in spool.ready_files(directory) for f in spool.read_frames(p)]


def steps_of(events: list[events_pb2.RunEvent], key: str) -> list[int]:
    return [s for e in events if e.HasField("metrics")
            for k, s in zip(e.metrics.key_index, e.metrics.steps, strict=True)
            if e.metrics.keys[k] == key]


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


def test_heartbeats_and_system_metrics_while_running(tmp_path: Path, env):
    run = runstream.init("exp", spool_dir=tmp_path, heartbeat_s=0.2, system_metrics_s=0.1,
                         environ=env)
    assert SYSTEM_THREAD in [t.name for t in threading.enumerate()]

    def seen() -> tuple[int, set[str]]:
        run.flush(10)
        events = read_spool(tmp_path)
        keys = {k for e in events if e.HasField("metrics") for k in e.metrics.keys}
        return sum(e.HasField("heartbeat") for e in events), keys

    _, keys = wait_for(seen, lambda r: r[0] >= 3 and "system/cpu_percent" in r[1],
                           timeout_s=30, what="heartbeats and system metrics")
    assert {"system/memory_used_bytes", "system/process_rss_bytes"} <= keys
    assert run.finish() is True
    assert SYSTEM_THREAD not in [t.name for t in threading.enumerate()]
    events = read_spool(tmp_path)
    assert events[-1].HasField("run_finished")
    started = events[0].run_started
    assert started.env.cpu_model and started.env.memory_bytes > 0
    assert "protobuf" in {p.name for p in started.env.packages}
    assert started.env.command


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_code_version_dirty_clean_and_no_repo(tmp_path: Path):
    store = tmp_path / "store"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert capture.code_version(outside, store) == events_pb2.CodeVersion(in_git_repo=False)

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://user:s3cret@example.com/team/repo.git")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    clean = capture.code_version(repo, store)
    assert clean.in_git_repo and not clean.git_dirty and len(clean.git_commit) == 40
    assert clean.git_branch == "main"
    assert clean.git_remote == "https://example.com/team/repo.git"
    assert clean.diff_sha256 == "" and clean.diff_uri == ""

    (repo / "train.py").write_text("lr = 0.2\n")
    dirty = capture.code_version(repo, store)
    assert dirty.git_dirty and dirty.git_commit == clean.git_commit
    diff = Path(dirty.diff_uri.removeprefix("file://")).read_bytes()
    assert b"-lr = 0.1" in diff and b"+lr = 0.2" in diff
    assert __import__("hashlib").sha256(diff).hexdigest() == dirty.diff_sha256


def test_directory_input_digest_changes_with_a_file_and_uses_the_cache(tmp_path: Path,
                                                                      monkeypatch):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "x.csv").write_text("1,2\n")
    (data / "y.csv").write_text("3,4\n")
    cache = artifacts.DigestCache(tmp_path / "cache.json")
    first = artifacts.input_digest(data, cache)
    assert first == artifacts.input_digest(data)  # same digest with or without cache

    reads: list[Path] = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: (reads.append(p), real(p))[1])
    assert artifacts.input_digest(data, artifacts.DigestCache(tmp_path / "cache.json")) == first
    assert reads == []  # unchanged size+mtime: nothing re-read, even by a new process' cache

    (data / "y.csv").write_text("3,5\n")
    os.utime(data / "y.csv", ns=(1, 1))
    second = artifacts.input_digest(data, cache)
    assert second != first and reads == [data / "y.csv"]
