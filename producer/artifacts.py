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
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runstream.proto.errors import InvalidArgumentError

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


def _store_bytes(root: Path, data: bytes) -> str:
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
        entries = []
        total = 0
        for rel, path in _files_under(source):
            sha, size = _store_file(root, path)
            entries.append({"path": rel, "sha256": sha, "size_bytes": size})
            total += size
        manifest = json.dumps({"files": entries}, sort_keys=True, separators=(",", ":"))
        sha = _store_bytes(root, manifest.encode("utf-8"))
        return StoredArtifact(blob_path(root, sha).resolve().as_uri(), sha, total)
    raise InvalidArgumentError(f"artifact path {str(source)!r} is not a file or directory")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's content, or for a directory of the lines
    ``<relative path>\\t<file sha256>\\n`` over its files sorted by path. Blocks."""
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for rel, file in _files_under(path):
            digest.update(f"{rel}\t{file_sha256(file)}\n".encode())
        return "sha256:" + digest.hexdigest()
    raise InvalidArgumentError(f"input path {str(path)!r} is not a file or directory")
