"""The local spool: encoded events on disk, in order, when Kafka is absent or unreachable.

Files. The producer appends frames to ``<producer_id>-<pid>-<file_no>.part`` and renames
the file to ``.spool`` when it rolls (every ``roll_bytes`` or on ``roll()``), so a reader
only ever sees complete files. A reader claims a file by renaming it to
``<stem>.claimed-<pid>``, ingests it (``runstream serve``) or sends it to Kafka
(``runstream sync``), then deletes it, or gives it back (renames it to ``.spool``).
Files are named so that sorting by name keeps each producer's order. The pid in a name is
for people reading the directory; it never decides whether a file is in use.

Liveness is an advisory lock (``flock``), which the kernel drops when its holder dies,
whatever PID namespace or container it ran in. The writer holds an exclusive lock on its
``.part`` file from creation until it has renamed the file to ``.spool``; a reader holds
one on the file it claimed (through the :class:`Claim` that keeps the file open) until it
deletes it or gives it back. Every rename of a spool file happens under its lock. So
:func:`recover` treats a ``.part`` or ``.claimed-*`` file as orphaned exactly when a
non-blocking lock on it succeeds, and publishes it as ``.spool``. Locks need a filesystem
that keeps ``flock`` between the processes sharing the directory (local filesystems,
tmpfs, NFS since Linux 2.6.12).

Only regular files whose names match the pattern above are ever opened (checked with
``lstat`` and again on the open descriptor, opened with ``O_NOFOLLOW | O_NONBLOCK``):
a directory, a symlink or a FIFO named ``*.spool`` is listed by :func:`list_spool` as an
odd entry and left alone.

Frame: little-endian ``u32 length, u32 crc32(payload), u8 encoding`` then the payload
(never empty). The writer writes each frame with unbuffered writes and, when the disk
refuses part of one, truncates the file back to its last whole frame, so a file holds
only whole frames whatever the disk did. A reader still checks every frame: damage (a
torn tail, flipped bits) is reported as a :class:`Damage` byte range, and reading
resynchronises on the next valid frame (header parses, length within MAX_FRAME_BYTES and
the file, CRC matches, known encoding), so good frames after damage are never lost.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runstream.proto.codec import AVRO, PROTOBUF

_HEADER = struct.Struct("<IIB")
_ENCODING_IDS = {PROTOBUF: 0, AVRO: 1}
_ENCODINGS = {v: k for k, v in _ENCODING_IDS.items()}
_NAME = re.compile(
    r"(?P<producer>[A-Za-z0-9_-]+)-(?P<pid>\d+)-(?P<no>\d{8})\.(?P<state>spool|part|claimed-\d+)"
)
#: Name endings of spool files in some state; entries with these endings that are not
#: regular files of our name pattern are reported by list_spool.
_STATE_SUFFIX = re.compile(r"\.(spool|part|claimed-\d+)$")
MAX_FRAME_BYTES = 256 << 20
# Where a frame could start during resynchronisation: the high byte of the length is at
# most MAX_FRAME_BYTES >> 24 and the encoding byte is a known id. A cheap prefilter (in C)
# before the full check of length and CRC.
_CANDIDATE = re.compile(
    b"(?=...[\\x00-%s]....[%s])" % (
        re.escape(bytes([MAX_FRAME_BYTES >> 24])),
        re.escape(bytes(sorted(_ENCODINGS))),
    ),
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes
    encoding: str
    offset: int  # byte offset of the frame in its file


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[offset, end)`` of a file that are no valid frame (a torn tail, a flipped
    bit); the next valid frame, if any, starts at ``end``."""

    offset: int
    end: int
    reason: str


class SpoolCorruptError(Exception):
    """A spool file with damaged bytes; ``damage`` lists every bad range, ``offset`` is
    the first one's start (frames before it, and valid frames after each range, were
    good)."""

    def __init__(self, path: Path, offset: int, reason: str,
                 damage: tuple[Damage, ...] = ()) -> None:
        super().__init__(f"{path}: corrupt frame at byte {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.damage = damage


# --- writing -----------------------------------------------------------------------------


def _write_all(fd: int, header: bytes, payload: bytes) -> None:
    written = os.writev(fd, [header, payload])
    total = len(header) + len(payload)
    if written < total:  # a short write (the disk filled up mid-frame): finish or fail
        rest = memoryview(header + payload)[written:]
        while rest:
            n = os.write(fd, rest)
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            rest = rest[n:]


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` (not followed if a symlink) is the file open on ``fd``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class SpoolWriter:
    """Appends encoded events for one producer. Not thread-safe: one sender thread owns it.

    Holds an exclusive ``flock`` on the ``.part`` file it writes (so :func:`recover`
    leaves it alone) until :meth:`roll` has published it or :meth:`close` let it go.
    """

    def __init__(self, directory: Path, producer_id: str, roll_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self.producer_id = producer_id
        self.roll_bytes = roll_bytes
        self._file_no = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes of whole frames in the current file
        self._torn = False  # bytes past _size could not be truncated away yet
        self.frames_written = 0

    def append(self, payload: bytes, encoding: str) -> None:
        """Write one whole frame (unbuffered; no fsync until the roll). Blocks on the write.

        Raises OSError when the disk refuses (full, read-only): then the frame is not in
        the file and everything appended before it still is. A frame that returns
        normally is in the file and will be published, even if the automatic roll at
        ``roll_bytes`` failed (that roll is retried by the next append or roll).
        """
        if not payload:
            raise ValueError("a spool frame needs a non-empty payload")
        if len(payload) > MAX_FRAME_BYTES:
            raise ValueError(f"a spool frame holds at most {MAX_FRAME_BYTES} bytes, "
                             f"not {len(payload)}")
        fd = self._fd if self._fd is not None else self._open()
        if self._torn:
            os.ftruncate(fd, self._size)  # still failing: this frame is refused too
            self._torn = False
        header = _HEADER.pack(len(payload), zlib.crc32(payload), _ENCODING_IDS[encoding])
        try:
            _write_all(fd, header, payload)
        except OSError:
            try:
                os.ftruncate(fd, self._size)  # shrinking needs no space
            except OSError:
                self._torn = True
            raise
        self._size += len(header) + len(payload)
        self.frames_written += 1
        if self._size >= self.roll_bytes:
            try:
                self.roll()
            except OSError:
                pass  # the frame is written; the file stays current and rolls later

    def roll(self) -> Path | None:
        """Make the current file durable (fsync) and publish it as ``.spool``; None if
        nothing was written. Blocks on the fsync.

        Raises OSError when the disk refuses: then the file stays the current one, with
        every frame in it, and the next ``roll`` (or an append's roll) tries again.
        """
        fd, path = self._fd, self._path
        if fd is None or path is None:
            return None
        if self._size == 0:  # only refused frames: nothing to publish
            self._fd, self._path, self._torn = None, None, False
            path.unlink(missing_ok=True)
            os.close(fd)
            return None
        if self._torn:
            os.ftruncate(fd, self._size)
            self._torn = False
        os.fsync(fd)
        done = path.with_suffix(".spool")
        os.replace(path, done)  # still locked: no reader takes it before the close
        self._fd, self._path, self._size = None, None, 0
        os.close(fd)
        return done

    def close(self) -> Path | None:
        """Publish the current file if possible, and release it in any case: a file that
        cannot be published stays ``.part``, unlocked, and the next :func:`recover` (of any
        reader) publishes it. Returns the published path, or None."""
        try:
            return self.roll()
        except OSError:
            fd, self._fd, self._path = self._fd, None, None
            self._size, self._torn = 0, False
            if fd is not None:
                os.close(fd)
            return None

    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        for _attempt in range(1000):
            self._file_no += 1
            path = self.directory / f"{self.producer_id}-{os.getpid()}-{self._file_no:08d}.part"
            try:
                fd = os.open(path, flags, 0o644)
            except FileExistsError:
                continue
            # recover() may have opened the new file before we lock it: then it publishes
            # it (empty, harmless) and we take the next name.
            if _try_lock(fd) and _same_file(fd, path):
                self._fd, self._path, self._size, self._torn = fd, path, 0, False
                return fd
            os.close(fd)
        raise OSError(errno.EEXIST, f"no free spool file name in {self.directory}")


# --- the directory -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """A look at a spool directory: ``ready`` files in producer order, and ``odd``
    entries (name, why) that carry a spool file's ending but are no regular file of ours
    (a directory, a symlink, a FIFO, a foreign name): never opened."""

    ready: list[Path] = field(default_factory=list)
    odd: list[tuple[str, str]] = field(default_factory=list)


def _kind(entry: os.DirEntry[str]) -> str | None:
    """None for a regular file (not followed); else what the entry is."""
    try:
        if entry.is_symlink():
            return "a symlink"
        if entry.is_file(follow_symlinks=False):
            return None
        if entry.is_dir(follow_symlinks=False):
            return "a directory"
        mode = entry.stat(follow_symlinks=False).st_mode
    except FileNotFoundError:
        return "gone"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _scan_dir(directory: Path, states: tuple[str, ...]) -> tuple[list[tuple[Path, re.Match[str]]],
                                                                 list[tuple[str, str]]]:
    ours: list[tuple[Path, re.Match[str]]] = []
    odd: list[tuple[str, str]] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return ours, odd
    for entry in entries:
        if _STATE_SUFFIX.search(entry.name) is None:
            continue  # not a spool file's name (dead/, *.corrupt, *.unsendable, ...)
        kind = _kind(entry)
        if kind == "gone":
            continue
        m = _NAME.fullmatch(entry.name)
        if kind is not None:
            odd.append((entry.name, f"{kind}, not a regular file"))
        elif m is None:
            odd.append((entry.name, "not a spool file name (<producer>-<pid>-<no>.<state>)"))
        elif m["state"].split("-")[0] in states:
            ours.append((directory / entry.name, m))
    ours.sort(key=lambda pm: pm[0].name)
    return ours, odd


def list_spool(directory: Path) -> Listing:
    """The ready (``.spool``) files of ``directory`` in producer order, and its odd entries.
    Only lists (no file is opened); an absent directory lists nothing."""
    ours, odd = _scan_dir(directory, ("spool",))
    return Listing([p for p, _ in ours], odd)


def ready_files(directory: Path) -> list[Path]:
    """Complete spool files (regular files of our name pattern), in producer order."""
    return list_spool(directory).ready


def _open_regular(path: Path) -> int | None:
    """An fd on ``path`` if it is a regular file (never following a symlink, never
    blocking on a FIFO); None if it is gone or not a regular file. Opened for writing
    where allowed, as NFS wants for an exclusive lock."""
    base = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, os.O_RDWR | base)
        except PermissionError:
            fd = os.open(path, os.O_RDONLY | base)
    except (FileNotFoundError, IsADirectoryError):
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):  # symlink, socket, ...
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


# --- claims ------------------------------------------------------------------------------


class Claim:
    """A spool file this process took: renamed to ``.claimed-<pid>`` and locked through the
    open descriptor this object holds, until :meth:`done`, :meth:`give_back` or
    :meth:`set_aside` (each closes it). If the process dies first, the kernel drops the
    lock and :func:`recover` gives the file back. Not thread-safe."""

    def __init__(self, fd: int, path: Path, ready_path: Path) -> None:
        self._fd: int | None = fd
        #: The file's name while claimed (``<stem>.claimed-<pid>``).
        self.path = path
        #: The ``.spool`` name it had and gets back from :meth:`give_back`.
        self.ready_path = ready_path

    @property
    def name(self) -> str:
        """The ``.spool`` file name it had."""
        return self.ready_path.name

    def read(self) -> bytes:
        """The file's bytes, read through the held descriptor. Blocks on the read."""
        fd = self._require()
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def done(self) -> None:
        """Delete the file (it is ingested or delivered) and release it."""
        try:
            self.path.unlink(missing_ok=True)
        finally:
            self._close()

    def give_back(self) -> Path:
        """Rename the file back to ``.spool`` for the next reader, and release it. If the
        rename fails the file stays claimed but unlocked, so ``recover`` gives it back."""
        try:
            os.replace(self.path, self.ready_path)
        finally:
            self._close()
        return self.ready_path

    def set_aside(self, state: str) -> Path:
        """Rename the file to ``<stem>.<state>`` (``corrupt``, ``unsendable``: no reader
        takes it again) and release it. Returns the new path."""
        kept = self.ready_path.with_suffix("." + state)
        try:
            os.replace(self.path, kept)
        finally:
            self._close()
        return kept

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _require(self) -> int:
        if self._fd is None:
            raise ValueError(f"claim of {self.path} was already released")
        return self._fd

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __repr__(self) -> str:
        return f"Claim({str(self.path)!r})"


def claim(path: Path) -> Claim | None:
    """Take a ready file for this process; None if another reader (or the writer, a
    moment after it published the file) holds it, or if it is gone or no regular file.
    Never blocks."""
    fd = _open_regular(path)
    if fd is None:
        return None
    try:
        if not _try_lock(fd) or not _same_file(fd, path):
            os.close(fd)
            return None
        claimed = path.with_name(f"{path.stem}.claimed-{os.getpid()}")
        os.replace(path, claimed)
    except BaseException:
        os.close(fd)
        raise
    return Claim(fd, claimed, path)


def recover(directory: Path) -> list[Path]:
    """Publish orphans: ``.part`` files whose writer and ``.claimed-*`` files whose reader
    let go of their lock (died, or closed without publishing) go back to ``.spool``.
    A file whose lock is held, by any process in any PID namespace, is left alone.
    Returns the recovered paths. Never blocks."""
    recovered: list[Path] = []
    ours, _odd = _scan_dir(directory, ("part", "claimed"))
    for path, m in ours:
        fd = _open_regular(path)
        if fd is None:
            continue
        try:
            if not _try_lock(fd) or not _same_file(fd, path):
                continue  # alive, or renamed meanwhile by its owner
            target = directory / f"{m['producer']}-{m['pid']}-{m['no']}.spool"
            os.replace(path, target)
            recovered.append(target)
        finally:
            os.close(fd)
    return recovered


# --- reading -----------------------------------------------------------------------------


def _frame_at(data: bytes, offset: int) -> tuple[Frame | None, str]:
    """The valid frame starting at ``offset``, or None and why not."""
    if len(data) - offset < _HEADER.size:
        return None, "truncated frame header"
    length, crc, enc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    if length == 0:
        return None, "empty frame"
    if length > MAX_FRAME_BYTES or start + length > len(data):
        return None, f"frame of {length} bytes runs past the end"
    if enc not in _ENCODINGS:
        return None, f"unknown encoding id {enc}"
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        return None, "checksum mismatch"
    return Frame(payload, _ENCODINGS[enc], offset), ""


def scan(data: bytes) -> Iterator[Frame | Damage]:
    """The frames of one file's bytes in order, with a :class:`Damage` for each run of
    bytes that holds no valid frame; after damage, reading resumes at the next offset
    where a valid frame starts. Pure."""
    offset = 0
    while offset < len(data):
        frame, reason = _frame_at(data, offset)
        if frame is not None:
            yield frame
            offset += _HEADER.size + len(frame.payload)
            continue
        end = len(data)
        for m in _CANDIDATE.finditer(data, offset + 1):
            if _frame_at(data, m.start())[0] is not None:
                end = m.start()
                break
        yield Damage(offset, end, reason)
        offset = end


def read_frames(path: Path) -> Iterator[Frame]:
    """Yield the valid frames of one file, those after damage too; then, if any bytes were
    damaged, raise SpoolCorruptError naming them. For callers that only want frames; a
    caller that handles damage itself iterates :func:`scan` over the bytes."""
    damage: list[Damage] = []
    for item in scan(path.read_bytes()):
        if isinstance(item, Frame):
            yield item
        else:
            damage.append(item)
    if damage:
        first = damage[0]
        reason = first.reason if len(damage) == 1 else (
            f"{first.reason} (and {len(damage) - 1} more damaged range(s))")
        raise SpoolCorruptError(path, first.offset, reason, tuple(damage))
