from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstream.proto import spool
from tests.helpers import Tmpfs


def test_frames_come_back_in_order_after_roll(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1", roll_bytes=1000)
    payloads = [bytes([i]) * (i * 7 + 1) for i in range(100)]
    for i, p in enumerate(payloads):
        writer.append(p, "avro" if i % 2 else "protobuf")
    writer.roll()
    assert not list(tmp_path.glob("*.part"))
    files = spool.ready_files(tmp_path)
    assert len(files) > 1  # rolled by size
    frames = [f for path in files for f in spool.read_frames(path)]
    assert [f.payload for f in frames] == payloads
    assert [f.encoding for f in frames] == ["avro" if i % 2 else "protobuf" for i in range(100)]


def test_unrolled_file_is_invisible_to_readers(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    writer.append(b"x", "protobuf")
    assert spool.ready_files(tmp_path) == []
    assert writer.roll() is not None
    assert len(spool.ready_files(tmp_path)) == 1
    assert writer.roll() is None


def test_torn_tail_is_reported_after_the_good_frames(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    writer.append(b"good-1", "protobuf")
    writer.append(b"good-2", "protobuf")
    path = writer.roll()
    assert path is not None
    with open(path, "ab") as fh:
        fh.write(b"\x10\x00\x00\x00\x00\x00")  # a header cut short
    got = []
    with pytest.raises(spool.SpoolCorruptError) as err:
        for frame in spool.read_frames(path):
            got.append(frame.payload)
    assert got == [b"good-1", b"good-2"]
    assert err.value.offset > 0


def test_bit_flip_fails_the_checksum(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    writer.append(b"payload-bytes", "protobuf")
    path = writer.roll()
    assert path is not None
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(spool.SpoolCorruptError, match="checksum"):
        list(spool.read_frames(path))


def test_claim_is_exclusive(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    writer.append(b"x", "protobuf")
    path = writer.roll()
    assert path is not None
    claim = spool.claim(path)
    assert claim is not None and claim.path.exists()
    assert claim.path.name == f"{path.stem}.claimed-{os.getpid()}"
    assert spool.claim(path) is None
    assert spool.ready_files(tmp_path) == []
    assert spool.recover(tmp_path) == []  # held: not an orphan
    assert [f.payload for f in spool.scan(claim.read()) if isinstance(f, spool.Frame)] == [b"x"]
    assert claim.give_back() == path
    assert spool.ready_files(tmp_path) == [path]
    again = spool.claim(path)
    assert again is not None
    again.done()
    assert list(tmp_path.iterdir()) == []


def _claim_and_die(path: Path) -> None:
    """A reader that claims ``path`` and dies holding it (no cleanup: os._exit)."""
    pid = os.fork()
    if pid == 0:
        try:
            spool.claim(path)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def test_recover_goes_by_locks_not_pids(tmp_path: Path) -> None:
    """A .part file is live while its writer holds it, whatever pid its name shows; a
    claim left by a dead reader is recovered even when its name shows our own pid (a
    serve restarted as PID 1 in a container)."""
    writer = spool.SpoolWriter(tmp_path, "prodW")
    writer.append(b"live", "protobuf")
    [live] = tmp_path.glob("*.part")
    dead_pid = 2**22 + 12345  # above pid_max on common kernels: no such process
    disguised = tmp_path / f"prodW-{dead_pid}-00000001.part"
    os.rename(live, disguised)  # as a writer in another PID namespace would name it
    writer._path = disguised
    stale = tmp_path / f"prodA-{dead_pid}-00000001.part"  # nobody holds it
    stale.write_bytes(b"")

    w2 = spool.SpoolWriter(tmp_path / "src", "prodB")
    w2.append(b"claimed", "protobuf")
    ready = w2.roll()
    assert ready is not None
    ready = ready.rename(tmp_path / ready.name)
    _claim_and_die(ready)
    [claimed] = tmp_path.glob("prodB-*.claimed-*")
    own = claimed.with_name(f"{ready.stem}.claimed-{os.getpid()}")
    os.rename(claimed, own)  # the dead reader had our pid

    recovered = spool.recover(tmp_path)
    assert sorted(p.name for p in recovered) == sorted(
        [f"prodA-{dead_pid}-00000001.spool", ready.name])
    assert disguised.exists()  # the live writer's file is left alone
    assert [f.payload for f in spool.read_frames(ready)] == [b"claimed"]


def test_scan_resynchronises_after_damaged_bytes(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    payloads = [bytes([65 + i]) * (50 + i) for i in range(10)]
    for p in payloads:
        writer.append(p, "protobuf")
    path = writer.roll()
    assert path is not None
    data = bytearray(path.read_bytes())
    frames = list(spool.scan(bytes(data)))
    bad = frames[4]
    assert isinstance(bad, spool.Frame)
    bad_end = bad.offset + 9 + len(bad.payload)
    data[bad.offset + 12 : bad.offset + 15] = b"\xff\xfe\xfd"  # inside its payload
    path.write_bytes(bytes(data))
    items = list(spool.scan(bytes(data)))
    assert [i.payload for i in items if isinstance(i, spool.Frame)] == (
        payloads[:4] + payloads[5:])
    assert [i for i in items if isinstance(i, spool.Damage)] == [
        spool.Damage(bad.offset, bad_end, "checksum mismatch")]
    # read_frames still yields every good frame, then says what was damaged
    got = []
    with pytest.raises(spool.SpoolCorruptError) as err:
        for frame in spool.read_frames(path):
            got.append(frame.payload)
    assert got == payloads[:4] + payloads[5:]
    assert err.value.offset == bad.offset
    # a damaged length field: the frames after it are found all the same
    data = bytearray(path.read_bytes())
    data[bad.offset : bad.offset + 4] = (10**6).to_bytes(4, "little")
    items = list(spool.scan(bytes(data)))
    assert [i.payload for i in items if isinstance(i, spool.Frame)] == (
        payloads[:4] + payloads[5:])
    [damage] = [i for i in items if isinstance(i, spool.Damage)]
    assert (damage.offset, damage.end) == (bad.offset, bad_end)


def test_zeroed_bytes_are_one_damaged_range_not_empty_frames() -> None:
    assert list(spool.scan(b"\0" * 90)) == [spool.Damage(0, 90, "empty frame")]


def test_odd_entries_are_listed_and_never_opened(tmp_path: Path) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1")
    writer.append(b"good", "protobuf")
    good = writer.roll()
    assert good is not None
    (tmp_path / "prodD-1-00000001.spool").mkdir()
    (tmp_path / "prodL-1-00000001.spool").symlink_to(tmp_path / "nowhere")
    (tmp_path / "prodS-1-00000001.spool").symlink_to(good)
    os.mkfifo(tmp_path / "prodF-1-00000001.spool")
    os.mkfifo(tmp_path / "prodF-1-00000002.part")
    (tmp_path / "notes.spool").write_bytes(b"hello")
    listing = spool.list_spool(tmp_path)
    assert listing.ready == [good]
    assert dict(listing.odd) == {
        "prodD-1-00000001.spool": "a directory, not a regular file",
        "prodL-1-00000001.spool": "a symlink, not a regular file",
        "prodS-1-00000001.spool": "a symlink, not a regular file",
        "prodF-1-00000001.spool": "a FIFO, not a regular file",
        "prodF-1-00000002.part": "a FIFO, not a regular file",
        "notes.spool": "not a spool file name (<producer>-<pid>-<no>.<state>)",
    }
    assert spool.recover(tmp_path) == []  # the FIFO .part is not opened (would block)
    for name in ("prodF-1-00000001.spool", "prodS-1-00000001.spool", "prodD-1-00000001.spool"):
        assert spool.claim(tmp_path / name) is None  # even when asked directly
    assert good.exists()


def test_failed_roll_keeps_the_file_and_retries(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    writer = spool.SpoolWriter(tmp_path, "prod1", roll_bytes=10)
    real_replace = os.replace
    failures = [OSError(28, "No space left on device")]

    def replace(src: object, dst: object) -> None:
        if failures:
            raise failures.pop()
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(spool.os, "replace", replace)
    writer.append(b"first frame", "protobuf")  # its automatic roll fails: still accepted
    assert spool.ready_files(tmp_path) == []
    writer.append(b"second", "protobuf")  # rolls now, both frames in one file
    [path] = spool.ready_files(tmp_path)
    assert [f.payload for f in spool.read_frames(path)] == [b"first frame", b"second"]
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.parametrize("roll_bytes", [8 << 20, 100_000])
def test_disk_full_then_space_returns_every_accepted_frame_reads_back(
    tmp_path: Path, roll_bytes: int
) -> None:
    disk = Tmpfs(tmp_path / "disk", "2m")
    try:
        writer = spool.SpoolWriter(disk.path / "spool", "prod1", roll_bytes=roll_bytes)
        accepted: list[bytes] = []
        refused = 0

        def write(n: int, seed: int) -> None:
            nonlocal refused
            for i in range(n):
                payload = bytes([(seed + i) % 251 + 1]) * (3000 + (seed + i) * 37 % 9000)
                try:
                    writer.append(payload, "protobuf")
                except OSError:
                    refused += 1
                else:
                    accepted.append(payload)

        write(40, 0)
        disk.fill()
        write(40, 1000)  # the disk refuses (or takes a few, then refuses)
        with pytest.raises(OSError):
            writer.append(b"y" * 5000, "protobuf")
        try:
            writer.roll()
        except OSError:
            pass  # nothing lost: retried below
        disk.free()
        write(40, 2000)
        writer.roll()
        assert refused >= 30
        frames = [f for p in spool.ready_files(disk.path / "spool") for f in spool.read_frames(p)]
        assert len(frames) == len(accepted) == 120 - refused
        assert [f.payload for f in frames] == accepted
        assert not list((disk.path / "spool").glob("*.part"))
    finally:
        disk.unmount()
