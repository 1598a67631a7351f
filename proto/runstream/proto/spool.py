"""The local spool: encoded events on disk, in order, when Kafka is absent or unreachable.

The producer appends frames to ``<producer_id>-<pid>-<file_no>.part`` and renames the file
to ``.spool`` when it rolls (every ``roll_bytes`` or on ``roll()``), so a reader only ever
sees complete files. A reader claims a file by renaming it to ``.claimed-<pid>``, ingests
it (``runstream serve``) or sends it to Kafka (``runstream sync``), then deletes it.
Files are named so that sorting by name keeps each producer's order.

Frame: little-endian ``u32 length, u32 crc32(payload), u8 encoding`` then the payload.
A torn tail (a crash mid-write) is detected by length or CRC and reported, never
misread. ``.part`` and ``.claimed-*`` files whose process is gone (same host) are
recovered by :func:`recover`.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runstream.proto.codec import AVRO, PROTOBUF

_HEADER = struct.Struct("<IIB")
_ENCODING_IDS = {PROTOBUF: 0, AVRO: 1}
_ENCODINGS = {v: k for k, v in _ENCODING_IDS.items()}
_NAME = re.compile(r"(?P<producer>[A-Za-z0-9_-]+)-(?P<pid>\d+)-(?P<no>\d{8})\.(?P<state>.+)")
MAX_FRAME_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes
    encoding: str
    offset: int  # byte offset of the frame in its file


class SpoolCorruptError(Exception):
    """A spool file whose tail is torn or corrupt; frames before `offset` were good."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt frame at byte {offset}: {reason}")
        self.path = path
        self.offset = offset


class SpoolWriter:
    """Appends encoded events for one producer. Not thread-safe: one sender thread owns it."""

    def __init__(self, directory: Path, producer_id: str, roll_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self.producer_id = producer_id
        self.roll_bytes = roll_bytes
        self._file_no = 0
        self._fh: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self.frames_written = 0

    def append(self, payload: bytes, encoding: str) -> None:
        """Write one frame (buffered). Raises OSError when the disk refuses (full, read-only)."""
        fh = self._fh if self._fh is not None else self._open()
        header = _HEADER.pack(len(payload), zlib.crc32(payload), _ENCODING_IDS[encoding])
        fh.write(header)
        fh.write(payload)
        self._size += len(header) + len(payload)
        self.frames_written += 1
        if self._size >= self.roll_bytes:
            self.roll()

    def roll(self) -> Path | None:
        """Close the current file and publish it as ``.spool``; None if nothing was written."""
        if self._fh is None or self._path is None:
            return None
        fh, path = self._fh, self._path
        self._fh, self._path, self._size = None, None, 0
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        done = path.with_suffix(".spool")
        os.replace(path, done)
        return done

    def _open(self) -> BinaryIO:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file_no += 1
        name = f"{self.producer_id}-{os.getpid()}-{self._file_no:08d}.part"
        self._path = self.directory / name
        self._fh = open(self._path, "ab")
        return self._fh


def ready_files(directory: Path) -> list[Path]:
    """Complete spool files, in producer order."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.spool"))


def claim(path: Path) -> Path | None:
    """Take a ready file for this process; None if another reader took it first."""
    claimed = path.with_name(f"{path.stem}.claimed-{os.getpid()}")
    try:
        os.replace(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def read_frames(path: Path) -> Iterator[Frame]:
    """Yield the frames of one file; raise SpoolCorruptError at a torn or corrupt frame."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise SpoolCorruptError(path, offset, "truncated frame header")
        length, crc, enc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if length > MAX_FRAME_BYTES or start + length > len(data):
            raise SpoolCorruptError(path, offset, f"frame of {length} bytes runs past the end")
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            raise SpoolCorruptError(path, offset, "checksum mismatch")
        if enc not in _ENCODINGS:
            raise SpoolCorruptError(path, offset, f"unknown encoding id {enc}")
        yield Frame(payload, _ENCODINGS[enc], offset)
        offset = start + length


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(directory: Path) -> list[Path]:
    """Publish files left by dead processes (same host): orphan ``.part`` files and stale
    claims go back to ``.spool``. Returns the recovered paths."""
    recovered: list[Path] = []
    if not directory.is_dir():
        return recovered
    for path in sorted(directory.iterdir()):
        m = _NAME.fullmatch(path.name)
        if m is None:
            continue
        state = m["state"]
        if state == "part":
            owner = int(m["pid"])
        elif state.startswith("claimed-") and state[8:].isdigit():
            owner = int(state[8:])
        else:
            continue
        if owner != os.getpid() and not _pid_alive(owner):
            target = directory / f"{m['producer']}-{m['pid']}-{m['no']}.spool"
            os.replace(path, target)
            recovered.append(target)
    return recovered
