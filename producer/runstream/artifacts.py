"""Content-addressed artifact store on the local file system, and input digests.

Layout: ``<root>/sha256/<first 2 hex>/<64 hex>``. A directory is stored as its files
plus a JSON manifest (``{"files": [{"path", "sha256", "size_bytes"}, ...]}`` sorted by
path, compact, UTF-8); the manifest's own sha256 names the directory. Writes go to a
temporary file and are renamed into place, so concurrent writers (several ranks on one
node) and crashes never leave a half-written blob under its final name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from runstream.proto.errors import InvalidArgumentError
from runstream.proto.validation import MAX_DIGEST_LEN, MAX_NAME_LEN, MAX_ROLE_LEN, MAX_URI_LEN

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """Where an artifact landed: ``uri`` is ``file://`` of its blob (the manifest for a
    directory), ``size_bytes`` the content size (a directory's: the sum of its files)."""

    uri: str
    sha256: str
    size_bytes: int


def blob_path(root: Path, sha256: str) -> Path:
    return root / "sha256" / sha256[:2] / sha256


def _store_file(root: Path, source: Path) -> tuple[str, int]:
    """Copy one file into the store while hashing it; returns (sha256, size)."""
    tmp_dir = root / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        hexdigest = digest.hexdigest()
        final = blob_path(root, hexdigest)
        if final.exists():
            os.unlink(tmp_name)
        else:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return hexdigest, size


def store_bytes(root: Path, data: bytes) -> str:
    """Store ``data`` under its sha256 (returned, hex); a no-op when already stored."""
    hexdigest = hashlib.sha256(data).hexdigest()
    final = blob_path(root, hexdigest)
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, final)
    return hexdigest


def _files_under(directory: Path) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every regular file below, sorted by relative path."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(directory):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path.is_file():
                found.append((path.relative_to(directory).as_posix(), path))
    return sorted(found)


def store(root: Path, source: Path) -> StoredArtifact:
    """Copy a file or directory into the store under ``root``. Blocks for the copy;
    safe to call from several threads and processes at once."""
    if source.is_file():
        sha, size = _store_file(root, source)
        return StoredArtifact(blob_path(root, sha).resolve().as_uri(), sha, size)
    if source.is_dir():
        entries = [(rel, *_store_file(root, path)) for rel, path in _files_under(source)]
        sha = store_bytes(root, _manifest(entries))
        return StoredArtifact(blob_path(root, sha).resolve().as_uri(), sha,
                              sum(size for _, _, size in entries))
    raise InvalidArgumentError(f"artifact path {str(source)!r} is not a file or directory")


def _manifest(entries: list[tuple[str, str, int]]) -> bytes:
    """A directory artifact's manifest: its files' (relative path, sha256, size), sorted
    by path. The directory's digest is this manifest's sha256."""
    files = [{"path": rel, "sha256": sha, "size_bytes": size} for rel, sha, size in entries]
    return json.dumps({"files": files}, sort_keys=True, separators=(",", ":")).encode("utf-8")


def content_sha256(source: Path) -> str:
    """The sha256 :func:`store` would give ``source`` (a file's content; a directory's
    manifest), computed without storing anything."""
    if source.is_file():
        return file_sha256(source)
    if source.is_dir():
        return hashlib.sha256(_manifest(
            [(rel, file_sha256(path), path.stat().st_size) for rel, path in _files_under(source)]
        )).hexdigest()
    raise InvalidArgumentError(f"path {str(source)!r} is not a file or directory")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DigestCache:
    """File digests keyed by (absolute path, size, mtime_ns): a file whose size and
    mtime are unchanged is not read again; any change means a full hash. Kept in memory
    and, with ``path``, in a JSON file (written atomically; several ranks sharing it
    only cost a re-hash). Thread-safe."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, int, str]] = {}
        self._dirty = False
        if path is not None:
            try:
                raw = json.loads(path.read_text("utf-8"))
                self._entries = {k: (int(v[0]), int(v[1]), str(v[2])) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                self._entries = {}

    def file_sha256(self, path: Path) -> str:
        """Hex sha256 of a file's content; blocks while hashing a new or changed file."""
        st = path.stat()
        key = str(path.resolve())
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        sha = file_sha256(path)
        with self._lock:
            self._entries[key] = (st.st_size, st.st_mtime_ns, sha)
            self._dirty = True
        return sha

    def save(self) -> None:
        """Write the cache file, if any and changed. Errors are logged, not raised."""
        if self._path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            data = json.dumps(self._entries)
            self._dirty = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".digests-")
            with os.fdopen(fd, "w") as out:
                out.write(data)
            os.replace(tmp, self._path)
        except OSError as e:
            log.warning("runstream: cannot write the digest cache %s: %s", self._path, e)


def input_digest(path: Path, cache: DigestCache | None = None) -> str:
    """``sha256:<hex>`` of a file's content, or for a directory of the lines
    ``<relative path>\t<file sha256>\n`` over its files sorted by path. With ``cache``,
    unchanged files (same size and mtime) are not read again. Blocks."""
    digest_of = cache.file_sha256 if cache is not None else file_sha256
    if path.is_file():
        found = "sha256:" + digest_of(path)
    elif path.is_dir():
        digest = hashlib.sha256()
        for rel, file in _files_under(path):
            digest.update(f"{rel}\t{digest_of(file)}\n".encode())
        found = "sha256:" + digest.hexdigest()
    else:
        raise InvalidArgumentError(f"input path {str(path)!r} is not a file or directory")
    if cache is not None:
        cache.save()
    return found


@dataclass(frozen=True, slots=True)
class InputRef:
    """A data set a run reads, as recorded: a URI with a scheme as given or a local path
    as ``file://``, its digest ("" when unknown), a name and a role."""

    name: str
    uri: str
    digest: str
    role: str


def input_ref(uri_or_path: str | os.PathLike[str], name: str | None, digest: str | None,
              role: str, cache: Callable[[], DigestCache]) -> InputRef:
    """What ``Run.log_input`` records. A local file or directory (a path, or a
    ``file://`` URI) must exist: its digest is computed (:func:`input_digest`, with the
    cache ``cache()`` returns) unless ``digest`` is given; a URI with another scheme
    (``s3://...``, ``hf://...``) is taken as given, with ``digest`` or "". The name
    defaults to the last path component. InvalidArgumentError for a path that does not
    exist or a field over the limits of events.proto. Blocks while hashing."""
    text = os.fspath(uri_or_path)
    path = Path(text).expanduser()
    if "://" in text and not text.startswith("file://"):
        uri = text
        found = digest or ""
    else:
        if text.startswith("file://"):
            path = Path(unquote(urlparse(text).path))
        if not path.exists():
            raise InvalidArgumentError(
                f"input {text!r} is neither an existing path nor a URI with a scheme"
            )
        uri = path.resolve().as_uri()
        found = digest if digest is not None else input_digest(path, cache())
    label = name if name is not None else path.name
    for what, value, limit in (("uri", uri, MAX_URI_LEN), ("name", label, MAX_NAME_LEN),
                               ("digest", found, MAX_DIGEST_LEN), ("role", role, MAX_ROLE_LEN)):
        if len(value) > limit:
            raise InvalidArgumentError(f"input {what} is over {limit} characters")
    return InputRef(name=label, uri=uri, digest=found, role=role)
