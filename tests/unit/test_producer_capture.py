"""runstream.capture: the code version (git) a run records."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runstream import capture
from runstream.proto.v1 import events_pb2


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@e", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_code_version_dirty_clean_and_no_repo(tmp_path: Path):
    store = tmp_path / "store"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert capture.code_version(outside, store) == events_pb2.CodeVersion(in_git_repo=False)

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "remote", "add", "origin", "https://user:s3cret@example.com/team/repo.git")
    (repo / "train.py").write_text("lr = 0.1\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    clean = capture.code_version(repo, store)
    assert clean.in_git_repo and not clean.git_dirty and len(clean.git_commit) == 40
    assert clean.git_branch == "main"
    assert clean.git_remote == "https://example.com/team/repo.git"
    assert clean.diff_sha256 == "" and clean.diff_uri == ""

    (repo / "train.py").write_text("lr = 0.2\n")
    dirty = capture.code_version(repo, store)
    assert dirty.git_dirty and dirty.git_commit == clean.git_commit
    diff = Path(dirty.diff_uri.removeprefix("file://")).read_bytes()
    assert b"-lr = 0.1" in diff and b"+lr = 0.2" in diff
    assert __import__("hashlib").sha256(diff).hexdigest() == dirty.diff_sha256


def test_a_command_line_that_is_not_utf8_is_captured_not_lost(monkeypatch) -> None:
    """A non-UTF-8 file name in argv (os.fsdecode gives lone surrogates) must not make
    RunStarted lose the environment: the bytes are shown as \\xNN."""
    import sys

    from runstream import capture
    from runstream.proto.v1 import events_pb2

    monkeypatch.setattr(sys, "argv", ["train.py", "data/caf\udce9.csv"])
    env = capture.environment()
    assert env.command.endswith("train.py data/caf\\xe9.csv")
    events_pb2.RunStarted(env=env).SerializeToString()
