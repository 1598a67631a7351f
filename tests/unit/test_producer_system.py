"""Heartbeats and system metrics sampled while a run is live."""

from __future__ import annotations

import threading
from pathlib import Path

import runstream
from runstream.system import THREAD_NAME as SYSTEM_THREAD
from tests.helpers import read_spool, wait_for


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
