"""Where a run's file artifact, or its stored git diff, lies in the local artifact store,
verified (for the web UI).

The store is the SDK's content-addressed one: a file's bytes at
``<root>/sha256/<2 hex>/<64 hex>`` (``runstream.artifacts``; the layout is the storage
contract, so this module needs no producer code). Only the store root is read: a path a
run recorded (its ``file://`` URI) is never opened, so a run cannot point the server at a
file of its choice. Functions block on the disk (hashing reads the whole file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.models import Artifact, CodeVersion, Run

_CHUNK = 1 << 20


def blob_path(root: Path, sha256: str) -> Path:
    """Where the store under ``root`` keeps the content ``sha256`` (hex)."""
    return root / "sha256" / sha256[:2] / sha256


def choose_artifact(run: Run, name: str, sha256: str = "") -> Artifact:
    """The artifact of ``run`` called ``name`` (whose sha256 starts with ``sha256`` when
    given). Ranks that logged the same content count once. NotFoundError if none;
    InvalidArgumentError when several contents have that name."""
    named = [a for a in run.artifacts if a.name == name]
    if sha256:
        named = [a for a in named if a.sha256.startswith(sha256.lower())]
    if not named:
        raise NotFoundError(f"run {run.info.run_id} has no artifact {name!r}"
                            + (f" with sha256 {sha256}..." if sha256 else ""))
    contents = {a.sha256 for a in named}
    if len(contents) > 1:
        raise InvalidArgumentError(
            f"run {run.info.run_id} has {len(contents)} different artifacts named {name!r}: "
            "choose one with sha256=PREFIX")
    return named[0]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content. Blocks while reading it."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


#: The largest stored diff the web UI is sent (a bigger one: download it with the CLI).
MAX_DIFF_BYTES = 4 << 20


def stored_diff(root: Path | None, code: CodeVersion) -> bytes:
    """The ``git diff HEAD`` a dirty run stored (content-addressed by ``diff_sha256``),
    its SHA-256 checked. NotFoundError when the run was clean, the store does not hold it
    or it is over MAX_DIFF_BYTES. Blocks on the disk."""
    sha = code.diff_sha256.lower()
    if not code.git_dirty or not sha:
        raise NotFoundError("the run's working tree was clean: there is no diff")
    if root is None or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise NotFoundError("the run's diff is not in the artifact store")
    path = blob_path(root, sha)
    if not path.is_file():
        raise NotFoundError(f"the run's diff (sha256 {sha}) is not in the artifact store")
    if path.stat().st_size > MAX_DIFF_BYTES:
        raise NotFoundError(f"the run's diff is over {MAX_DIFF_BYTES >> 20} MiB: fetch "
                            f"{path.name} from the artifact store")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise NotFoundError(f"the stored diff does not have sha256 {sha} (the store is damaged)")
    return data


def stored_file(root: Path | None, artifact: Artifact) -> Path:
    """The store's file holding ``artifact``'s bytes, its SHA-256 checked. NotFoundError
    when the store (None: none configured) does not hold it whole: absent, a directory
    artifact (its blob is a manifest of another size), or damaged."""
    sha = artifact.sha256.lower()
    if root is None or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise NotFoundError(f"artifact {artifact.name!r} is not in the artifact store")
    path = blob_path(root, sha)
    if not path.is_file():
        raise NotFoundError(f"artifact {artifact.name!r} (sha256 {sha}) is not in the "
                            "artifact store")
    if path.stat().st_size != artifact.size_bytes:
        raise NotFoundError(f"artifact {artifact.name!r} is not a file in the artifact store "
                            "(a directory artifact: use runstream download)")
    if file_sha256(path) != sha:
        raise NotFoundError(f"artifact {artifact.name!r}: the stored content does not have "
                            f"sha256 {sha} (the store is damaged)")
    return path
