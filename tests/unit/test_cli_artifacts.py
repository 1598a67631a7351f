"""runstream artifacts / download / lineage: the listing, choosing an artifact, copying
files and directories out of a real content-addressed store (tmp_path) with their
digests verified, and the lineage text."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runstream import artifacts as store
from runstream.cli import artifacts as cli
from runstream.cli.output import format_size, format_table
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.query.models import (
    Artifact,
    CodeVersion,
    Environment,
    Input,
    Lineage,
    LineageMatch,
    Package,
    Param,
    Run,
)
from tests.factories import T0, run_info

SHA = "ab" * 32


def artifact_of(root: Path, source: Path, name: str) -> Artifact:
    stored = store.store(root, source)
    return Artifact(name=name, uri=stored.uri, size_bytes=stored.size_bytes, sha256=stored.sha256)


def test_sizes_and_uncut_columns() -> None:
    assert [format_size(n) for n in (0, 1023, 1536, 5 << 20, 3 << 30, 2 << 40)] == [
        "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2.0 TiB"]
    long = "x" * 100
    assert format_table(["A", "B"], [(long, long)], keep=(1,)).splitlines()[1] == (
        "x" * 59 + "…  " + long)


def test_artifacts_table_keeps_whole_digests_and_uris() -> None:
    uri = "file:///a/very/long/store/root/that/goes/on/sha256/ab/" + SHA
    text = cli.artifacts_table([Artifact(name="model.pt", uri=uri, size_bytes=2048,
                                         sha256=SHA)])
    header, row = text.splitlines()
    assert header.split() == ["NAME", "SIZE", "SHA256", "URI"]
    assert row.split() == ["model.pt", "2.0", "KiB", SHA, uri]


def test_choose_artifact() -> None:
    a = Artifact(name="m.pt", uri="u", size_bytes=1, sha256="aa" * 32)
    b = Artifact(name="m.pt", uri="u", size_bytes=1, sha256="bb" * 32)
    run = Run(info=run_info(), artifacts=(a, a, Artifact(name="x", uri="u", size_bytes=1,
                                                         sha256=SHA)))
    assert cli.choose_artifact(run, "m.pt") == a  # two ranks, one content
    with pytest.raises(NotFoundError, match=r"no artifact 'nope' \(its artifacts: m.pt, x\)"):
        cli.choose_artifact(run, "nope")
    two = Run(info=run_info(), artifacts=(a, b))
    with pytest.raises(InvalidArgumentError, match=r"2 different artifacts named 'm\.pt'"):
        cli.choose_artifact(two, "m.pt")
    assert cli.choose_artifact(two, "m.pt", sha256="BB") == b


def test_a_file_comes_back_byte_identical(tmp_path: Path) -> None:
    root = tmp_path / "store"
    data = os.urandom(3 << 20)
    (tmp_path / "model.pt").write_bytes(data)
    art = artifact_of(root, tmp_path / "model.pt", "model.pt")
    out = tmp_path / "out"
    out.mkdir()
    done = cli.download(art, None, root, cwd=out)
    assert done.path == str(out / "model.pt") and (out / "model.pt").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]  # no temporary left
    # An existing directory as --out: the file goes inside it.
    sub = tmp_path / "sub"
    sub.mkdir()
    assert cli.download(art, sub, root).path == str(sub / "model.pt")


def test_an_existing_file_is_replaced_only_with_force(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (tmp_path / "a.txt").write_bytes(b"new content")
    art = artifact_of(root, tmp_path / "a.txt", "a.txt")
    target = tmp_path / "there.txt"
    target.write_bytes(b"keep me")
    with pytest.raises(InvalidArgumentError, match="exists; --force replaces it"):
        cli.download(art, target, root)
    assert target.read_bytes() == b"keep me"
    cli.download(art, target, root, force=True)
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "store", "there.txt"]


def test_a_corrupted_blob_fails_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (tmp_path / "a.bin").write_bytes(b"x" * 100_000)
    art = artifact_of(root, tmp_path / "a.bin", "a.bin")
    blob = store.blob_path(root, art.sha256)
    blob.write_bytes(b"x" * 99_999 + b"y")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(cli.CorruptArtifactError, match=f"not the {art.sha256} recorded"):
        cli.download(art, out / "a.bin", root)
    assert list(out.iterdir()) == []


def test_a_blob_missing_from_the_store_says_where_it_looked(tmp_path: Path) -> None:
    art = Artifact(name="a", uri=f"file:///nowhere/sha256/ab/{SHA}", size_bytes=1, sha256=SHA)
    with pytest.raises(NotFoundError, match="RUNSTREAM_ARTIFACTS") as e:
        cli.download(art, tmp_path / "a", tmp_path / "store")
    assert str(store.blob_path(tmp_path / "store", SHA)) in str(e.value)
    s3 = Artifact(name="a", uri="s3://bucket/a", size_bytes=1, sha256=SHA)
    with pytest.raises(InvalidArgumentError, match="only file://"):
        cli.download(s3, tmp_path / "a", tmp_path / "store")


def test_the_recorded_uri_is_read_when_the_local_store_lacks_it(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("elsewhere")
    art = artifact_of(tmp_path / "other-store", tmp_path / "a.txt", "a.txt")
    done = cli.download(art, tmp_path / "b.txt", tmp_path / "empty-store")
    assert Path(done.path).read_text() == "elsewhere"


def make_tree(base: Path) -> Path:
    tree = base / "ckpt"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "weights.bin").write_bytes(os.urandom(10_000))
    (tree / "sub" / "config.json").write_text('{"lr": 0.1}')
    (tree / "sub" / "deeper" / "empty").write_bytes(b"")
    return tree


def tree_of(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*")
            if p.is_file()}


def test_a_directory_comes_back_whole(tmp_path: Path) -> None:
    root = tmp_path / "store"
    tree = make_tree(tmp_path)
    art = artifact_of(root, tree, "ckpt")
    done = cli.download(art, tmp_path / "restored", root)
    assert done.directory and done.files == 3
    assert tree_of(tmp_path / "restored") == tree_of(tree)
    # An existing directory as --out: the artifact goes inside it, under its name.
    parent = tmp_path / "parent"
    parent.mkdir()
    assert cli.download(art, parent, root).path == str(parent / "ckpt")
    with pytest.raises(InvalidArgumentError, match="ckpt exists; --force replaces it"):
        cli.download(art, parent, root)
    (parent / "ckpt" / "stale").write_text("old")
    cli.download(art, parent, root, force=True)
    assert tree_of(parent / "ckpt") == tree_of(tree)
    assert sorted(p.name for p in parent.iterdir()) == ["ckpt"]  # nothing set aside is left


def test_a_corrupted_file_of_a_directory_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    tree = make_tree(tmp_path)
    art = artifact_of(root, tree, "ckpt")
    weights = hashlib.sha256((tree / "weights.bin").read_bytes()).hexdigest()
    store.blob_path(root, weights).write_bytes(b"garbage")
    with pytest.raises(cli.CorruptArtifactError, match=r"file 'weights\.bin'"):
        cli.download(art, tmp_path / "restored", root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "store"]


def test_a_manifest_naming_a_path_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    blob = store.store_bytes(root, b"pwned")
    manifest = json.dumps({"files": [{"path": "../escape", "sha256": blob, "size_bytes": 5}]},
                          sort_keys=True, separators=(",", ":")).encode()
    sha = store.store_bytes(root, manifest)
    art = Artifact(name="d", uri="", size_bytes=5, sha256=sha)
    with pytest.raises(cli.CorruptArtifactError, match="outside the directory"):
        cli.download(art, tmp_path / "d", root)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "d").exists()


def test_a_file_that_looks_like_json_stays_a_file(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (tmp_path / "m.json").write_text('{"files":[]}')
    art = artifact_of(root, tmp_path / "m.json", "m.json")
    done = cli.download(art, tmp_path / "copy.json", root)
    assert not done.directory and (tmp_path / "copy.json").read_text() == '{"files":[]}'


# --- lineage ---------------------------------------------------------------------------


def test_content_sha256_is_the_digest_log_artifact_records(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    tree = make_tree(tmp_path)
    root = tmp_path / "store"
    assert cli.content_sha256(str(tmp_path / "f"))[0] == hashlib.sha256(b"hello").hexdigest()
    assert cli.content_sha256(str(tree)) == (store.store(root, tree).sha256,
                                             f"directory {tree}")
    assert cli.content_sha256(SHA.upper()) == (SHA, "sha256")
    assert cli.content_sha256("sha256:" + SHA) == (SHA, "sha256")
    with pytest.raises(InvalidArgumentError, match="neither an existing file"):
        cli.content_sha256(str(tmp_path / "missing"))


def producer_run() -> Run:
    return Run(
        info=run_info(run_id="train-1", experiment="vision", name="resnet"),
        params=(Param(key="lr", value="0.1", type="FLOAT"),
                Param(key="epochs", value="3", type="INT")),
        inputs=(Input(name="train.csv", uri="file:///d/train.csv", digest="sha256:" + "cd" * 32,
                      role="train"),),
        code=CodeVersion(git_commit="0123abc", git_branch="main", git_dirty=True,
                         in_git_repo=True, diff_sha256="ef" * 32),
        env=Environment(python_version="3.11.4", launcher="torchrun", nnodes=2,
                        nproc_per_node=4, packages=(Package(name="torch", version="2.4.0"),
                                                    Package(name="numpy", version="2.0"))),
    )


def test_lineage_text_names_the_producer_and_the_users() -> None:
    produced = (LineageMatch(run_id="train-1", name="model.pt", rank=0, uri="file:///s/x",
                             size_bytes=2048, ts_ms=T0, run=producer_run()),)
    used = (LineageMatch(run_id="eval-1", name="model", rank=0, uri="file:///m.pt",
                         ts_ms=T0 + 1000),)
    text = cli.lineage_text(SHA, "file m.pt", produced, used)
    lines = text.splitlines()
    assert lines[0] == f"sha256 {SHA} (file m.pt)"
    assert lines[2] == ("  run train-1 (vision, resnet): artifact 'model.pt', rank 0, 2.0 KiB,"
                        " logged 2023-11-14 22:13:20 UTC")
    assert "    code: commit 0123abc on main (dirty: uncommitted changes, diff sha256 " in text
    assert "    params: lr=0.1, epochs=3" in lines
    assert f"    inputs: train.csv (sha256:{'cd' * 32})" in lines
    assert ("    environment: python 3.11.4, 2 packages, launcher torchrun (2 nodes x 4),"
            " world_size 8") in lines
    assert "used as an input by 1 run(s):" in lines
    assert lines[-1].split()[:3] == ["eval-1", "model", "0"]


def test_lineage_of_unknown_content_says_so(capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    class Client:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get_lineage(self, sha256: str) -> Lineage:
            self.asked.append(sha256)
            return Lineage()

    client: Any = Client()
    (tmp_path / "f").write_bytes(b"hello")
    assert cli.cmd_lineage(client, str(tmp_path / "f"), False) == 0
    assert client.asked == [hashlib.sha256(b"hello").hexdigest()]
    out = capsys.readouterr().out
    assert "no run logged this content" in out and "no run recorded it as an input" in out
    assert cli.cmd_lineage(client, SHA, True) == 0
    assert json.loads(capsys.readouterr().out) == {"sha256": SHA, "source": "sha256",
                                                   "produced_by": [], "used_by": []}
