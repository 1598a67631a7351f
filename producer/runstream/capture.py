"""What produced a run: code version (git) and environment. Runs on the sender thread."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from runstream import artifacts
from runstream.launcher import LauncherInfo
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import (
    MAX_ARG_LEN,
    MAX_ARGS,
    MAX_COMMAND_LEN,
    MAX_NAME_LEN,
    MAX_PATH_LEN,
    wire_text,
)

log = logging.getLogger(__name__)

_SUBPROCESS_TIMEOUT_S = 5.0
# Git fields are checked against MAX_NAME_LEN; the other texts are cut to the same length.
_MAX_TEXT = MAX_NAME_LEN
_MAX_PACKAGES = 5000
_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9.]+)")
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",  # a branch or remote that is not UTF-8 must not cost the rest
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def strip_credentials(remote: str) -> str:
    """Drop ``user:token@`` from a remote URL so secrets never travel in events."""
    return _USERINFO.sub(r"\g<scheme>", remote)


def _git_bytes(cwd: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True,
                              timeout=_SUBPROCESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# Interpreter options that take a value as the next argument (python --help).
_OPTIONS_WITH_VALUE = frozenset(("-W", "-X", "--check-hash-based-pycs"))


def invocation(argv: list[str], orig_argv: list[str]) -> tuple[list[str], str]:
    """(the arguments to record, the script as given or "") from ``sys.argv`` and
    ``sys.orig_argv``. Under ``python -m mod`` sys.argv[0] is the module's file, which
    cannot be started the same way, so the record says ``-m mod`` instead and names no
    script; under ``python -c`` there is no script either. Pure."""
    i = 1
    while i < len(orig_argv):
        arg = orig_argv[i]
        if arg == "-m" and i + 1 < len(orig_argv):
            return ["-m", orig_argv[i + 1], *argv[1:]], ""
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            return ["-m", arg[2:], *argv[1:]], ""
        if arg == "-c" or not arg.startswith("-") or arg == "-":
            break
        i += 2 if arg in _OPTIONS_WITH_VALUE else 1
    script = argv[0] if argv and argv[0] not in ("", "-c", "-") else ""
    return list(argv), script


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root).as_posix()
    except (ValueError, OSError, RuntimeError):
        return None


def code_version(cwd: Path | None = None, artifacts_dir: Path | None = None,
                 script: str | None = None) -> events_pb2.CodeVersion:
    """Git commit, branch, origin remote (credentials stripped) and dirtiness of ``cwd``
    (default: the current directory). When dirty, ``diff_sha256`` is the hex SHA-256 of
    ``git diff HEAD --binary`` (tracked files) and, with ``artifacts_dir``, the diff is
    stored there content-addressed and ``diff_uri`` points at it. ``cwd`` and ``script``
    (default: the process' script, see :func:`invocation`; relative to ``cwd``) are
    recorded relative to the repository root, never as absolute paths: "." is the root,
    "" a script outside the repository. ``in_git_repo`` is False outside a repository or
    without git. Blocks for a few git subprocesses (each at most 5 s)."""
    where = Path.cwd() if cwd is None else cwd
    if _git(where, "rev-parse", "--is-inside-work-tree") != "true":
        return events_pb2.CodeVersion(in_git_repo=False)
    if script is None:
        script = invocation(sys.argv, getattr(sys, "orig_argv", sys.argv))[1]
    commit = _git(where, "rev-parse", "HEAD") or ""
    branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD") or ""
    remote = strip_credentials(_git(where, "config", "--get", "remote.origin.url") or "")
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    version = events_pb2.CodeVersion(
        git_commit=commit[:_MAX_TEXT],
        git_branch=branch[:_MAX_TEXT],
        git_remote=remote[:_MAX_TEXT],
        git_dirty=bool(status),
        in_git_repo=True,
    )
    toplevel = _git(where, "rev-parse", "--show-toplevel")
    if toplevel:
        root = Path(toplevel).resolve()
        relative_cwd = _relative(where, root)
        relative_script = _relative(where / script, root) if script else None
        if relative_cwd is not None and len(relative_cwd) <= MAX_PATH_LEN:
            version.cwd = wire_text(relative_cwd or ".")
        if relative_script and len(relative_script) <= MAX_PATH_LEN \
                and (where / script).is_file():
            version.script = wire_text(relative_script)
    if status:
        diff = _git_bytes(where, "diff", "HEAD", "--binary") if commit else None
        if diff:
            version.diff_sha256 = hashlib.sha256(diff).hexdigest()
            if artifacts_dir is not None:
                try:
                    stored = artifacts.store_bytes(artifacts_dir, diff)
                    version.diff_uri = artifacts.blob_path(artifacts_dir, stored).resolve().as_uri()
                except OSError as e:
                    log.warning("runstream: cannot store the git diff in %s: %s",
                                artifacts_dir, e)
    return version


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()[:_MAX_TEXT]
    except OSError:
        pass
    return (platform.processor() or platform.machine())[:_MAX_TEXT]


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _packages() -> list[events_pb2.Package]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        try:
            name = dist.name
        except (KeyError, AttributeError):  # a broken dist-info without metadata
            continue
        if name and name not in found:
            found[name] = dist.version or ""
    return [events_pb2.Package(name=n[:_MAX_TEXT], version=v[:_MAX_TEXT])
            for n, v in sorted(found.items(), key=lambda kv: kv[0].lower())][:_MAX_PACKAGES]


def _gpus(env: events_pb2.Environment) -> None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S, check=False,
        )
        header = subprocess.run([smi], capture_output=True, text=True,
                                timeout=_SUBPROCESS_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    if done.returncode != 0:
        return
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            memory = int(float(parts[1]) * 1024 * 1024)
        except ValueError:
            memory = 0
        env.gpus.add(name=parts[0][:_MAX_TEXT], memory_bytes=memory)
        env.gpu_driver = parts[2][:_MAX_TEXT]
    cuda = _CUDA_VERSION.search(header.stdout or "")
    if cuda:
        env.cuda_version = cuda.group(1)


def editable_install() -> bool:
    """True when runstream runs from a source tree: an editable install (PEP 660's
    ``direct_url.json`` says ``"editable": true``) or no installed distribution at all
    (a checkout on sys.path)."""
    try:
        dist = importlib.metadata.distribution("runstream")
    except importlib.metadata.PackageNotFoundError:
        return True
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (OSError, ValueError):
        return False
    dir_info = direct.get("dir_info") if isinstance(direct, dict) else None
    return isinstance(dir_info, dict) and dir_info.get("editable") is True


def launch_environment(info: LauncherInfo) -> events_pb2.Environment:
    """The launcher fields of Environment (kind, nodes, ranks per node) from ``info``.
    Pure; the rest of Environment comes from :func:`environment`."""
    return events_pb2.Environment(launcher=info.launcher, nnodes=info.nnodes,
                                  nproc_per_node=info.nproc_per_node)


def environment() -> events_pb2.Environment:
    """Python version, OS, command line (<= 4096 chars) and argv (see :func:`invocation`;
    <= 1,000 arguments of <= 4096 chars each), CPU model and count, physical memory,
    installed distributions (importlib.metadata), whether runstream is an editable
    install, and GPUs with driver and CUDA version (from nvidia-smi, when present). The
    launcher fields are :func:`launch_environment`'s. Blocks for a moment (package
    metadata, one nvidia-smi run); run it off the training thread."""
    argv, _ = invocation(sys.argv, getattr(sys, "orig_argv", sys.argv))
    env = events_pb2.Environment(
        python_version=platform.python_version(),
        os=platform.platform(),
        command=wire_text(" ".join([sys.executable, *sys.argv]))[:MAX_COMMAND_LEN],
        cpu_count=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        memory_bytes=_memory_bytes(),
        runstream_editable=editable_install(),
    )
    recorded = [wire_text(a) for a in argv]
    # Cut arguments would start another command: record none (reproduce says so).
    if len(recorded) <= MAX_ARGS and all(len(a) <= MAX_ARG_LEN for a in recorded):
        env.argv.extend(recorded)
    env.packages.extend(_packages())
    _gpus(env)
    return env
