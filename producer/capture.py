"""What produced a run: code version (git) and environment. Runs on the sender thread."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from runstream.proto.v1 import events_pb2

_GIT_TIMEOUT_S = 5.0
_MAX_COMMAND = 4096
_MAX_TEXT = 1024
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def strip_credentials(remote: str) -> str:
    """Drop ``user:token@`` from a remote URL so secrets never travel in events."""
    return _USERINFO.sub(r"\g<scheme>", remote)


def code_version(cwd: Path | None = None) -> events_pb2.CodeVersion:
    """Git commit, branch, origin remote and dirtiness of ``cwd`` (default: the current
    directory). ``in_git_repo`` is False outside a repository or without git. Blocks for
    a few git subprocesses (each at most 5 s)."""
    where = Path.cwd() if cwd is None else cwd
    if _git(where, "rev-parse", "--is-inside-work-tree") != "true":
        return events_pb2.CodeVersion(in_git_repo=False)
    commit = _git(where, "rev-parse", "HEAD") or ""
    branch = _git(where, "rev-parse", "--abbrev-ref", "HEAD") or ""
    remote = strip_credentials(_git(where, "config", "--get", "remote.origin.url") or "")
    status = _git(where, "status", "--porcelain", "--untracked-files=no")
    return events_pb2.CodeVersion(
        git_commit=commit[:_MAX_TEXT],
        git_branch=branch[:_MAX_TEXT],
        git_remote=remote[:_MAX_TEXT],
        git_dirty=bool(status),
        in_git_repo=True,
    )


def environment() -> events_pb2.Environment:
    """Python version, OS, command line (<= 4096 chars) and CPU count. Does not block."""
    return events_pb2.Environment(
        python_version=platform.python_version(),
        os=platform.platform(),
        command=" ".join([sys.executable, *sys.argv])[:_MAX_COMMAND],
        cpu_count=os.cpu_count() or 0,
    )
