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


def test_cwd_and_script_are_recorded_relative_to_the_repository_root(tmp_path: Path) -> None:
    repo = tmp_path / "vision"
    (repo / "experiments").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "experiments" / "train.py").write_text("pass\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    sub = repo / "experiments"
    # `cd experiments && torchrun ... train.py`: argv[0] relative to the working directory.
    at_sub = capture.code_version(sub, script="train.py")
    assert (at_sub.cwd, at_sub.script) == ("experiments", "experiments/train.py")
    # An absolute argv[0] from the root; a script outside the repository is not named.
    at_root = capture.code_version(repo, script=str(sub / "train.py"))
    assert (at_root.cwd, at_root.script) == (".", "experiments/train.py")
    outside = tmp_path / "other.py"
    outside.write_text("pass\n")
    elsewhere = capture.code_version(sub, script=str(outside))
    assert (elsewhere.cwd, elsewhere.script) == ("experiments", "")
    assert not any(str(tmp_path) in v for v in (at_sub.cwd, at_sub.script, at_root.script))
    assert capture.code_version(sub, script="").script == ""


def test_invocation_records_argv_exactly_and_python_m_as_such() -> None:
    argv = ["train.py", "--name", "two words", "--data=/d"]
    assert capture.invocation(argv, ["/usr/bin/python3", "-u", *argv]) == (argv, "train.py")
    # python -m: sys.argv[0] is the module's file; the record says -m and the module.
    module = ["/repo/vision/train.py", "--lr", "0.1"]
    assert capture.invocation(module, ["python", "-X", "dev", "-m", "vision.train", "--lr",
                                       "0.1"]) == (["-m", "vision.train", "--lr", "0.1"], "")
    assert capture.invocation(["-c"], ["python", "-c", "print(1)"]) == (["-c"], "")


def test_environment_records_argv_launcher_and_editable(monkeypatch) -> None:
    import sys

    from runstream.launcher import detect_launcher

    monkeypatch.setattr(sys, "argv", ["train.py", "--name", "two words"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-u", "train.py", "--name",
                                           "two words"])
    env = capture.environment()
    assert list(env.argv) == ["train.py", "--name", "two words"]
    assert env.command.endswith("train.py --name two words")
    assert env.runstream_editable is capture.editable_install()
    info = detect_launcher({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0",
                            "LOCAL_WORLD_SIZE": "4", "GROUP_WORLD_SIZE": "1",
                            "TORCHELASTIC_RUN_ID": "j"})
    launch = capture.launch_environment(info)
    assert (launch.launcher, launch.nnodes, launch.nproc_per_node) == ("torchrun", 1, 4)
    env.MergeFrom(launch)
    assert env.launcher == "torchrun" and list(env.argv) == ["train.py", "--name", "two words"]
    # Too long to record exactly: no argv at all rather than a different command.
    monkeypatch.setattr(sys, "argv", ["train.py", "x" * 5000])
    assert list(capture.environment().argv) == []


def test_editable_install_reads_pep_660_direct_url(monkeypatch) -> None:
    import importlib.metadata

    class Dist:
        def __init__(self, direct: str | None) -> None:
            self.direct = direct

        def read_text(self, name: str) -> str | None:
            return self.direct if name == "direct_url.json" else None

    def installed(direct: str | None):
        return lambda name: Dist(direct)

    editable = '{"dir_info": {"editable": true}, "url": "file:///home/alice/runstream"}'
    monkeypatch.setattr(importlib.metadata, "distribution", installed(editable))
    assert capture.editable_install() is True
    monkeypatch.setattr(importlib.metadata, "distribution", installed(None))  # from an index
    assert capture.editable_install() is False
    monkeypatch.setattr(importlib.metadata, "distribution",
                        installed('{"dir_info": {}, "url": "file:///tmp/runstream.whl"}'))
    assert capture.editable_install() is False

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)  # a checkout on sys.path
    assert capture.editable_install() is True
