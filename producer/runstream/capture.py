"""What produced a run: code version (git) and environment. Runs on the sender thread."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from runstream import artifacts
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import MAX_COMMAND_LEN, MAX_NAME_LEN, wire_text

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


def code_version(cwd: Path | None = None, artifacts_dir: Path | None = None
                 ) -> events_pb2.CodeVersion:
    """Git commit, branch, origin remote (credentials stripped) and dirtiness of ``cwd``
    (default: the current directory). When dirty, ``diff_sha256`` is the hex SHA-256 of
    ``git diff HEAD --binary`` (tracked files) and, with ``artifacts_dir``, the diff is
    stored there content-addressed and ``diff_uri`` points at it. ``in_git_repo`` is
    False outside a repository or without git. Blocks for a few git subprocesses (each
    at most 5 s)."""
    where = Path.cwd() if cwd is None else cwd
    if _git(where, "rev-parse", "--is-inside-work-tree") != "true":
        return events_pb2.CodeVersion(in_git_repo=False)
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


def environment() -> events_pb2.Environment:
    """Python version, OS, command line (<= 4096 chars), CPU model and count, physical
    memory, installed distributions (importlib.metadata) and GPUs with driver and CUDA
    version (from nvidia-smi, when present). Blocks for a moment (package metadata, one
    nvidia-smi run); run it off the training thread."""
    env = events_pb2.Environment(
        python_version=platform.python_version(),
        os=platform.platform(),
        command=wire_text(" ".join([sys.executable, *sys.argv]))[:MAX_COMMAND_LEN],
        cpu_count=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        memory_bytes=_memory_bytes(),
    )
    env.packages.extend(_packages())
    _gpus(env)
    return env
