"""The CLI's commands about artifacts: ``artifacts`` (a run's list), ``download`` (one
back out of the store, verified) and ``lineage`` (which runs made or used some content).

The store is the SDK's content-addressed one (:mod:`runstream.artifacts`):
``<root>/sha256/<2 hex>/<64 hex>``, a directory stored as its files plus a JSON manifest
whose sha256 names it. ``download`` reads ``file://`` stores only: the blob under the
local root (``--artifacts``, else ``RUNSTREAM_ARTIFACTS``, else the default under
``RUNSTREAM_HOME``) and, failing that, the path the run recorded. Every byte copied is
hashed on the way: a digest that differs from the recorded one is an error and leaves
nothing at the destination. Files land by rename from a temporary file beside them
(directories from a temporary directory), so a reader never sees half of one; an
existing destination is replaced only with ``--force``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote, urlparse

from runstream import artifacts as store
from runstream.cli.output import format_size, format_table, format_time_ms, run_command, to_json
from runstream.proto.errors import InvalidArgumentError, NotFoundError, RunstreamError

if TYPE_CHECKING:
    from runstream.query.client import Client
    from runstream.query.models import Artifact, LineageMatch, Run

_CHUNK = 1 << 20
#: A blob larger than this is never read as a directory manifest.
MAX_MANIFEST_BYTES = 64 << 20
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


class CorruptArtifactError(RunstreamError):
    """Stored content whose sha256 is not the one recorded for it."""


def artifacts_table(arts: Sequence[Artifact]) -> str:
    """NAME, SIZE, SHA256 and URI of each artifact; digests and URIs are never cut."""
    return format_table(
        ["NAME", "SIZE", "SHA256", "URI"],
        [(a.name, format_size(a.size_bytes), a.sha256, a.uri) for a in arts],
        right=(1,), keep=(2, 3),
    )


def cmd_artifacts(client: Client, run_id: str, as_json: bool, *,
                  err: TextIO | None = None) -> int:
    """Print a run's artifacts (NotFoundError for an unknown run: exit 1). Blocks."""

    def body() -> str:
        arts = list(client.get_run(run_id).artifacts)
        if as_json:
            return to_json(arts)
        return artifacts_table(arts) if arts else f"run {run_id} logged no artifacts"

    return run_command(body, err)


def choose_artifact(run: Run, name: str, sha256: str = "") -> Artifact:
    """The artifact of ``run`` called ``name`` (and whose sha256 starts with ``sha256``,
    when given). Ranks that logged the same content count once. NotFoundError naming the
    artifacts there are; InvalidArgumentError when several contents have that name."""
    named = [a for a in run.artifacts if a.name == name]
    if sha256:
        named = [a for a in named if a.sha256.startswith(sha256.lower())]
    if not named:
        names = ", ".join(sorted({a.name for a in run.artifacts})) or "none"
        raise NotFoundError(f"run {run.info.run_id} has no artifact {name!r}"
                            + (f" with sha256 {sha256}..." if sha256 else "")
                            + f" (its artifacts: {names})")
    contents = {a.sha256: a for a in named}
    if len(contents) > 1:
        raise InvalidArgumentError(
            f"run {run.info.run_id} has {len(contents)} different artifacts named {name!r} "
            f"(sha256 {', '.join(sorted(s[:12] for s in contents))}); choose one with "
            "--sha256 PREFIX")
    return named[0]


def store_root(explicit: Path | None, environ: dict[str, str] | None = None) -> Path:
    """The local artifact store: ``explicit``, else $RUNSTREAM_ARTIFACTS, else the
    default under $RUNSTREAM_HOME (as the SDK's ProducerConfig resolves it)."""
    from runstream.proto import config as names

    if explicit is not None:
        return explicit.expanduser()
    env = names.environ_or_os(environ)
    return names.env_path(env, names.ARTIFACTS, names.default_artifacts_dir(env))


def recorded_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI (None for "" ); InvalidArgumentError for
    another scheme, which ``download`` cannot read."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise InvalidArgumentError(f"artifact URI {uri!r}: only file:// stores can be "
                                   "downloaded from")
    return Path(unquote(parsed.path))


def find_blob(sha256: str, roots: Sequence[Path], recorded: Path | None = None) -> Path:
    """Where the content ``sha256`` is: under the first of ``roots`` that holds it, else
    at ``recorded``. NotFoundError naming the places looked in."""
    candidates = [store.blob_path(root, sha256) for root in roots]
    if recorded is not None:
        candidates.append(recorded)
    for path in candidates:
        if path.is_file():
            return path
    raise NotFoundError(f"content sha256 {sha256} is not in the artifact store (looked in "
                        + ", ".join(str(p) for p in dict.fromkeys(candidates))
                        + "): set --artifacts or RUNSTREAM_ARTIFACTS to the store it was "
                        "logged to")


def _root_of(blob: Path) -> Path | None:
    """The store root above a blob at ``<root>/sha256/<2 hex>/<hex>``, if it is one."""
    if len(blob.parents) >= 3 and blob.parents[1].name == "sha256":
        return blob.parents[2]
    return None


def read_manifest(blob: Path, artifact: Artifact) -> list[dict[str, Any]] | None:
    """The file entries of a directory artifact's manifest, or None when ``blob`` holds
    a file artifact: a directory's blob is the manifest exactly as
    :func:`runstream.artifacts.store` writes it (``{"files": [...]}``, sorted keys,
    compact), and its files' sizes sum to the artifact's recorded size."""
    size = blob.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        return None
    with blob.open("rb") as src:
        if src.read(10) != b'{"files":[':
            return None
        data = b'{"files":[' + src.read()
    try:
        parsed = json.loads(data)
        files = parsed["files"]
        canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
        total = sum(int(f["size_bytes"]) for f in files)
        entries = [{"path": str(f["path"]), "sha256": str(f["sha256"]),
                    "size_bytes": int(f["size_bytes"])} for f in files]
    except (ValueError, TypeError, KeyError):
        return None
    if canonical != data or total != artifact.size_bytes or len(parsed) != 1:
        return None
    return entries


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or ".." in rel.parts or "\\" in path:
        raise CorruptArtifactError(f"the manifest names a path outside the directory: {path!r}")
    return rel


def copy_verified(source: Path, dest: Path, sha256: str, what: str) -> None:
    """Copy ``source`` to the new file ``dest`` (which must not exist) while hashing it,
    then fsync. CorruptArtifactError (``dest`` removed) if its sha256 is not ``sha256``."""
    digest = hashlib.sha256()
    with source.open("rb") as src, dest.open("xb") as out:
        try:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
    if digest.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise CorruptArtifactError(
            f"{what}: the stored content at {source} has sha256 {digest.hexdigest()}, not "
            f"the {sha256} recorded for it: the store is damaged")


@contextlib.contextmanager
def _temporary(parent: Path, name: str, directory: bool) -> Iterator[Path]:
    """A temporary file or directory beside the destination, removed unless renamed."""
    prefix = f".{name[:100]}."
    if directory:
        path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".part"))
    else:
        fd, raw = tempfile.mkstemp(dir=parent, prefix=prefix, suffix=".part")
        os.close(fd)
        path = Path(raw)
        path.unlink()  # copy_verified creates it exclusively
    try:
        yield path
    finally:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _place(tmp: Path, target: Path, force: bool) -> None:
    """Rename ``tmp`` to ``target``; an existing target only with ``force``."""
    if not force:
        if tmp.is_file():
            try:
                os.link(tmp, target)  # fails if target exists: no race with another writer
            except FileExistsError:
                raise InvalidArgumentError(f"{target} exists; --force replaces it") from None
            except OSError:  # a file system without hard links
                if target.exists() or target.is_symlink():
                    raise InvalidArgumentError(f"{target} exists; --force replaces it") from None
                os.replace(tmp, target)
            return
        if target.exists() or target.is_symlink():
            raise InvalidArgumentError(f"{target} exists; --force replaces it")
        os.rename(tmp, target)
        return
    if (target.is_dir() and not target.is_symlink()) or (tmp.is_dir() and target.exists()):
        # rename() cannot replace a non-empty directory (or a file by a directory): the
        # old one steps aside first, and is removed once the new one is in place.
        old = target.with_name(f".{target.name[:100]}.{os.getpid()}.old")
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        _remove(old)
        return
    os.replace(tmp, target)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Downloaded:
    """What ``download`` wrote: the path, the bytes and files copied, the digest checked."""

    path: str
    sha256: str
    size_bytes: int
    files: int
    directory: bool


def download(artifact: Artifact, out: Path | None, root: Path, *, force: bool = False,
             cwd: Path | None = None) -> Downloaded:
    """Copy ``artifact`` out of the store at ``root`` to ``out`` (default: its base name
    in ``cwd``; an existing directory: its base name inside it), verifying every sha256
    while copying and renaming into place at the end. Blocks for the copy.

    NotFoundError (content not in the store), CorruptArtifactError (a digest differs:
    nothing is left at the destination), InvalidArgumentError (the destination exists
    and not ``force``, or a URI that is not ``file://``)."""
    base = PurePosixPath(artifact.name).name or artifact.sha256
    here = cwd or Path.cwd()
    target = (out if out is not None else here / base).expanduser()
    if target.is_dir() and not target.is_symlink() and (out is not None):
        target = target / base
    if (target.exists() or target.is_symlink()) and not force:
        raise InvalidArgumentError(f"{target} exists; --force replaces it")
    parent = target.parent
    if not parent.is_dir():
        raise InvalidArgumentError(f"{parent} is not a directory")
    blob = find_blob(artifact.sha256, [root], recorded_path(artifact.uri))
    roots = [root, *([r] if (r := _root_of(blob)) is not None else [])]
    entries = read_manifest(blob, artifact)
    what = f"artifact {artifact.name!r}"
    if entries is None:
        with _temporary(parent, target.name, directory=False) as tmp:
            copy_verified(blob, tmp, artifact.sha256, what)
            _place(tmp, target, force)
        return Downloaded(path=str(target), sha256=artifact.sha256,
                          size_bytes=artifact.size_bytes, files=1, directory=False)
    # The manifest names the directory: it must be the recorded content too.
    if store.file_sha256(blob) != artifact.sha256:
        raise CorruptArtifactError(f"{what}: the manifest at {blob} does not have the recorded "
                                   f"sha256 {artifact.sha256}: the store is damaged")
    with _temporary(parent, target.name, directory=True) as tmp:
        for entry in entries:
            rel = _safe_relative(entry["path"])
            dest = tmp.joinpath(*rel.parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            copy_verified(find_blob(entry["sha256"], roots), dest, entry["sha256"],
                          f"{what}, file {entry['path']!r}")
        _place(tmp, target, force)
    return Downloaded(path=str(target), sha256=artifact.sha256,
                      size_bytes=sum(e["size_bytes"] for e in entries), files=len(entries),
                      directory=True)


def cmd_download(client: Client, run_id: str, name: str, out: Path | None, *,
                 force: bool = False, sha256: str = "", artifacts_dir: Path | None = None,
                 as_json: bool = False, err: TextIO | None = None) -> int:
    """Fetch one artifact of a run to ``out`` (see :func:`download`). Blocks."""

    def body() -> str:
        artifact = choose_artifact(client.get_run(run_id), name, sha256)
        done = download(artifact, out, store_root(artifacts_dir), force=force)
        if as_json:
            return to_json(done)
        what = f"{done.files} files, " if done.directory else ""
        return (f"{done.path}: {what}{format_size(done.size_bytes)}, sha256 {done.sha256}"
                " verified")

    return run_command(body, err)


# --- lineage ---------------------------------------------------------------------------


def content_sha256(target: str) -> tuple[str, str]:
    """(hex sha256, what it is) for ``lineage``'s argument: an existing file (its
    content's digest) or directory (its manifest's, as ``log_artifact`` computes it),
    else a hex SHA-256 ("sha256:" prefix allowed). InvalidArgumentError for anything
    else. Blocks while hashing; copies nothing."""
    path = Path(target).expanduser()
    if path.is_file() or path.is_dir():
        kind = "file" if path.is_file() else "directory"
        return store.content_sha256(path), f"{kind} {target}"
    match = _SHA256.fullmatch(target.strip())
    if match is None:
        raise InvalidArgumentError(f"{target!r} is neither an existing file or directory nor "
                                   "a SHA-256 (64 hex digits)")
    return match.group(1).lower(), "sha256"


def _code_line(run: Run) -> str:
    code = run.code
    if not code.in_git_repo:
        return "code: not in a git repository"
    parts = [f"commit {code.git_commit or '?'}"]
    if code.git_branch:
        parts.append(f"on {code.git_branch}")
    if code.git_dirty:
        parts.append("(dirty: uncommitted changes" + (f", diff sha256 {code.diff_sha256})"
                                                     if code.diff_sha256 else ")"))
    if code.git_remote:
        parts.append(f"from {code.git_remote}")
    return "code: " + " ".join(parts)


def _env_line(run: Run) -> str:
    env = run.env
    launcher = env.launcher or "not recorded"
    if env.launcher and env.launcher != "none" and env.nnodes and env.nproc_per_node:
        launcher += f" ({env.nnodes} nodes x {env.nproc_per_node})"
    return (f"environment: python {env.python_version or '?'}, {len(env.packages)} packages, "
            f"launcher {launcher}, world_size {run.info.world_size}")


def lineage_text(sha256: str, what: str, produced_by: Sequence[LineageMatch],
                 used_by: Sequence[LineageMatch]) -> str:
    """Which runs logged the content ``sha256`` (with the code, params, inputs and
    environment of each) and which used it as an input."""
    lines = [f"sha256 {sha256} ({what})"]
    if not produced_by:
        lines.append("produced by: no run logged this content")
    else:
        lines.append(f"produced by {len(produced_by)} run(s):")
    for m in produced_by:
        run = m.run
        head = f"  run {m.run_id}"
        if run is not None:
            head += f" ({run.info.experiment}" + (f", {run.info.name}" if run.info.name
                                                  else "") + ")"
        lines.append(f"{head}: artifact {m.name!r}, rank {m.rank}, {format_size(m.size_bytes)},"
                     f" logged {format_time_ms(m.ts_ms)} UTC")
        lines.append(f"    uri: {m.uri}")
        if run is None:
            continue
        lines.append(f"    {_code_line(run)}")
        params = ", ".join(f"{p.key}={p.value}" for p in run.params)
        lines.append(f"    params: {params or '(none)'}")
        inputs = ", ".join(f"{i.name or i.uri} ({i.digest or 'no digest'})" for i in run.inputs)
        lines.append(f"    inputs: {inputs or '(none)'}")
        lines.append(f"    {_env_line(run)}")
    if not used_by:
        lines.append("used by: no run recorded it as an input")
    else:
        lines.append(f"used as an input by {len(used_by)} run(s):")
        lines.append(format_table(
            ["RUN ID", "INPUT", "RANK", "RECORDED (UTC)", "URI"],
            [(m.run_id, m.name or "-", m.rank, format_time_ms(m.ts_ms), m.uri) for m in used_by],
            right=(2,), keep=(4,)))
    return "\n".join(lines)


def cmd_lineage(client: Client, target: str, as_json: bool, *,
                err: TextIO | None = None) -> int:
    """Print where some content came from and where it went (exit 0 also when no run
    knows it). Blocks while hashing a path."""

    def body() -> str:
        sha256, what = content_sha256(target)
        lineage = client.get_lineage(sha256)
        if as_json:
            return to_json({"sha256": sha256, "source": what,
                            "produced_by": list(lineage.produced_by),
                            "used_by": list(lineage.used_by)})
        return lineage_text(sha256, what, lineage.produced_by, lineage.used_by)

    return run_command(body, err)
