"""The spool under faults, through the real pipeline into the real engine (chdb): a full
disk, odd entries in the directory, damaged bytes mid-file, and writers and readers in
other PID namespaces (containers), killed and restarted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import runstream
from runstream.consumer.dlq import read_spool_dead_letters
from runstream.consumer.factories import build_spool_pipeline
from runstream.consumer.sources import SpoolSource
from runstream.proto import codec, spool
from tests.factories import metrics_event
from tests.helpers import REPO, Tmpfs, count, is_root, wait_for
from tests.integration.test_consumer_spool import ingest, make_config, spool_files

needs_root = pytest.mark.skipif(not is_root(), reason="mount and unshare need root")


@needs_root
def test_disk_full_then_space_returns_run_finishes_and_nothing_accepted_is_lost(
    chdb_dsn: str, ch_database: str, tmp_path: Path, env: dict[str, str]
) -> None:
    disk = Tmpfs(tmp_path / "disk", "2m")
    spool_dir = disk.path / "spool"
    try:
        run = runstream.init("exp-full", kafka=None, spool_dir=spool_dir, environ=env)
        for step in range(2000):
            run.log({"loss": step * 0.5, "acc": 1.0}, step=step)
        assert run.flush(30)
        disk.fill()
        for step in range(2000, 4000):  # refused by the disk: dropped and counted
            run.log({"loss": step * 0.5, "acc": 1.0}, step=step)
        run.flush(5)
        disk.free()
        for step in range(4000, 6000):
            run.log({"loss": step * 0.5, "acc": 1.0}, step=step)
        run.finish(timeout_s=30)  # False: some events were dropped (and counted)
        assert not list(spool_dir.glob("*.part"))

        client = ingest(chdb_dsn, ch_database, spool_dir)
        steps = {s for (s,) in client.query(
            "SELECT DISTINCT step FROM metrics FINAL WHERE key = 'loss'").result_rows}
        assert set(range(2000)) <= steps and set(range(4000, 6000)) <= steps
        assert steps <= set(range(6000))
        stored = count(client, "metrics")
        assert stored == 2 * len(steps)  # whole events: both keys of every stored step
        [(status,)] = client.query(
            "SELECT argMax(status, seq) FROM run_status FINAL WHERE run_id = %(r)s",
            parameters={"r": run.id}).result_rows
        assert status == "FINISHED"  # the RunFinished was not among the losses
        assert read_spool_dead_letters(spool_dir) == []
        assert spool_files(spool_dir) == []
    finally:
        disk.unmount()


@needs_root
def test_disk_full_spool_writer_exact_counts_through_the_pipeline(
    chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    disk = Tmpfs(tmp_path / "disk", "2m")
    spool_dir = disk.path / "spool"
    try:
        writer = spool.SpoolWriter(spool_dir, "prod-full", roll_bytes=200_000)
        accepted = refused = 0
        for seq in range(1, 301):
            if seq == 101:
                disk.fill()
            if seq == 201:
                disk.free()
            payload = codec.encode(metrics_event(100, run_id="run-full", seq=seq,
                                                 step0=seq * 1000, producer_id="prod-full"))
            try:
                writer.append(payload, codec.PROTOBUF)
                accepted += 1
            except OSError:
                refused += 1
        try:
            writer.roll()
        except OSError:
            writer.roll()
        assert refused >= 90 and accepted == 300 - refused

        client = ingest(chdb_dsn, ch_database, spool_dir)
        assert count(client, "metrics") == 100 * accepted
        assert read_spool_dead_letters(spool_dir) == []
    finally:
        disk.unmount()


def test_odd_entries_are_skipped_reported_and_never_opened(
    chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    outside = tmp_path / "outside"
    writer = spool.SpoolWriter(outside, "prod-out")
    writer.append(codec.encode(metrics_event(7, run_id="run-out", producer_id="prod-out")),
                  codec.PROTOBUF)
    target = writer.roll()
    assert target is not None
    writer = spool.SpoolWriter(spool_dir, "prod-ok")
    for seq in (1, 2, 3):
        writer.append(codec.encode(metrics_event(10, run_id="run-ok", seq=seq,
                                                 producer_id="prod-ok")), codec.PROTOBUF)
        writer.roll()
    (spool_dir / "prodD-1-00000001.spool").mkdir()
    (spool_dir / "prodL-1-00000001.spool").symlink_to(tmp_path / "nowhere")
    (spool_dir / "prodS-1-00000001.spool").symlink_to(target)
    os.mkfifo(spool_dir / "prodF-1-00000001.spool")
    os.mkfifo(spool_dir / "prodF-1-00000001.part")

    pipeline = build_spool_pipeline(make_config(chdb_dsn, ch_database, spool_dir))
    result: list[bool] = []
    drainer = threading.Thread(target=lambda: result.append(pipeline.drain(timeout_s=60)),
                               daemon=True)
    drainer.start()
    drainer.join(90)
    try:
        assert not drainer.is_alive(), "ingestion hangs (a FIFO was opened)"
        assert result == [True]
        assert isinstance(pipeline.source, SpoolSource)
        assert sorted(pipeline.source.skipped) == [
            "prodD-1-00000001.spool", "prodF-1-00000001.part", "prodF-1-00000001.spool",
            "prodL-1-00000001.spool", "prodS-1-00000001.spool"]
    finally:
        pipeline.close()
    client = ingest(chdb_dsn, ch_database, spool_dir)
    rows = client.query("SELECT run_id, count() FROM metrics FINAL GROUP BY run_id").result_rows
    assert rows == [("run-ok", 30)]  # the symlink's target was neither read nor stored
    assert read_spool_dead_letters(spool_dir) == []
    assert target.exists() and (spool_dir / "prodS-1-00000001.spool").is_symlink()
    assert spool_files(spool_dir) == ["prodS-1-00000001.spool"]  # the symlink, left alone


def test_damaged_bytes_mid_file_only_they_are_dead_lettered(
    chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    writer = spool.SpoolWriter(spool_dir, "prod-c")
    n = 50
    for seq in range(1, n + 1):
        writer.append(codec.encode(metrics_event(20, run_id="run-c", seq=seq, step0=seq * 100,
                                                 producer_id="prod-c")), codec.PROTOBUF)
    path = writer.roll()
    assert path is not None
    data = bytearray(path.read_bytes())
    frames = list(spool.read_frames(path))
    bad = frames[n // 2]
    bad_end = frames[n // 2 + 1].offset
    data[bad.offset + 30 : bad.offset + 34] = b"\xde\xad\xbe\xef"
    path.write_bytes(bytes(data))

    client = ingest(chdb_dsn, ch_database, spool_dir)
    assert count(client, "metrics") == 20 * (n - 1)
    [dead] = read_spool_dead_letters(spool_dir)
    assert dead["payload"] == bytes(data[bad.offset : bad_end])
    assert dead["offset"] == bad.offset
    assert "checksum" in dead["reason"]
    assert spool_files(spool_dir) == []


# --- other PID namespaces ---------------------------------------------------------------

_WRITER = """
import os, sys, time
from pathlib import Path
from runstream.proto import codec, spool
from tests.factories import metrics_event
spool_dir, target_pid, marks = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while True:  # burn pids of this namespace until the writer gets the wanted one
    pid = os.fork()
    if pid == 0:
        if os.getpid() != target_pid:
            os._exit(0)
        writer = spool.SpoolWriter(spool_dir, "prod-ns")
        for seq in range(1, 91):
            writer.append(codec.encode(metrics_event(100, run_id="run-ns", seq=seq,
                          step0=seq * 1000, producer_id="prod-ns")), codec.PROTOBUF)
        (marks / "written.tmp").write_text(str(os.getpid()))
        os.replace(marks / "written.tmp", marks / "written")  # whole once it exists
        while not (marks / "go").exists():
            time.sleep(0.05)
        writer.roll()
        os._exit(0)
    os.waitpid(pid, 0)
    if (marks / "written").exists() or pid >= target_pid:
        break
"""

_READER = """
import os, sys, time
from pathlib import Path
from runstream.consumer.sources import SpoolSource
spool_dir, marks = Path(sys.argv[1]), Path(sys.argv[2])
source = SpoolSource(spool_dir)
messages = source.poll(0.1, 1_000_000)
# Whole once it exists: the test kills this process as soon as it sees the file.
(marks / "claimed.tmp").write_text(f"{os.getpid()} {len(messages)}")
os.replace(marks / "claimed.tmp", marks / "claimed")
time.sleep(600)  # killed here, holding its claim
"""


def _in_new_pid_namespace(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
         textwrap.dedent(script), *args],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _dead_here(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


@needs_root
def test_live_writer_in_another_pid_namespace_is_left_alone(
    chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    """Its pid means nothing here (and names no live process here): the lock decides."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    spool_dir, marks = tmp_path / "spool", tmp_path / "marks"
    spool_dir.mkdir()
    marks.mkdir()
    target = next(p for p in range(20, 400) if _dead_here(p))
    proc = _in_new_pid_namespace(_WRITER, str(spool_dir), str(target), str(marks))
    try:
        wait_for(lambda: (marks / "written").exists(), timeout_s=60, what="the writer")
        assert (marks / "written").read_text() == str(target)
        [part] = spool_dir.glob("*.part")
        assert part.name.startswith(f"prod-ns-{target}-")
        assert _dead_here(target)  # the old pid check would call this writer dead

        client = ingest(chdb_dsn, ch_database, spool_dir)  # recover() runs at its start
        assert count(client, "metrics") == 0
        assert part.exists() and spool.recover(spool_dir) == []
        (marks / "go").write_text("")
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    client = ingest(chdb_dsn, ch_database, spool_dir)
    assert count(client, "metrics") == 90 * 100
    assert spool_files(spool_dir) == []


@needs_root
def test_claims_of_a_killed_pid1_serve_are_recovered_by_the_next_pid1(
    chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    spool_dir, marks = tmp_path / "spool", tmp_path / "marks"
    marks.mkdir()
    writer = spool.SpoolWriter(spool_dir, "prod-p1", roll_bytes=50_000)
    for seq in range(1, 121):
        writer.append(codec.encode(metrics_event(100, run_id="run-p1", seq=seq,
                                                 step0=seq * 1000, producer_id="prod-p1")),
                      codec.PROTOBUF)
    writer.roll()
    files = len(spool.ready_files(spool_dir))
    assert files > 2

    def kill_a_pid1_reader() -> tuple[int, int]:
        """Run a spool reader as PID 1 of a new namespace until it claimed a file, then
        SIGKILL it (as a container runtime does); its (pid, messages polled)."""
        (marks / "claimed").unlink(missing_ok=True)
        proc = _in_new_pid_namespace(_READER, str(spool_dir), str(marks))
        try:
            wait_for(lambda: (marks / "claimed").exists(), timeout_s=60,
                     what="the reader's claim")
            [init] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            os.kill(int(init), signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        pid, polled = (marks / "claimed").read_text().split()
        return int(pid), int(polled)

    assert kill_a_pid1_reader()[0] == 1
    assert len(list(spool_dir.glob("*.claimed-1"))) == 1
    # The restarted serve, PID 1 again, gives the dead one's claim back before claiming.
    pid, polled = kill_a_pid1_reader()
    assert pid == 1 and polled > 0
    assert len(list(spool_dir.glob("*.claimed-1"))) == 1

    client = ingest(chdb_dsn, ch_database, spool_dir)  # a third reader, here
    assert count(client, "metrics") == 120 * 100
    assert spool_files(spool_dir) == []
