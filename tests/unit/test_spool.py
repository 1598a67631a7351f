from __future__ import annotations

import os
from pathlib import Path

import pytest

from runstream.proto import spool


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
    claimed = spool.claim(path)
    assert claimed is not None and claimed.exists()
    assert spool.claim(path) is None
    assert spool.ready_files(tmp_path) == []


def test_recover_publishes_files_of_dead_processes(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above pid_max on common kernels: no such process
    (tmp_path / f"prodA-{dead_pid}-00000001.part").write_bytes(b"")
    (tmp_path / f"prodB-{os.getpid()}-00000001.claimed-{dead_pid}").write_bytes(b"")
    mine = tmp_path / f"prodC-{os.getpid()}-00000001.part"
    mine.write_bytes(b"")
    recovered = spool.recover(tmp_path)
    assert sorted(p.name for p in recovered) == [
        f"prodA-{dead_pid}-00000001.spool",
        f"prodB-{os.getpid()}-00000001.spool",
    ]
    assert mine.exists()  # a live writer's file is left alone
