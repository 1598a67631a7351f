"""runstream.artifacts: the content-addressed store and input digests."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import runstream
from runstream import artifacts
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.validation import validate
from tests.helpers import read_spool


def test_artifact_store_is_content_addressed(tmp_path: Path, env):
    store = tmp_path / "store"
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"hello")
    (src / "sub" / "b.bin").write_bytes(b"\x00\x01")
    run = runstream.init("exp", spool_dir=tmp_path / "spool", artifacts_dir=store, environ=env)
    sha_file = run.log_artifact(src / "a.txt")
    assert sha_file == hashlib.sha256(b"hello").hexdigest()
    blob = store / "sha256" / sha_file[:2] / sha_file
    assert blob.read_bytes() == b"hello"
    assert run.log_artifact(src / "a.txt", name="again") == sha_file  # stored once
    sha_dir = run.log_artifact(src, name="model")
    manifest = json.loads((store / "sha256" / sha_dir[:2] / sha_dir).read_bytes())
    assert manifest == {"files": [
        {"path": "a.txt", "sha256": sha_file, "size_bytes": 5},
        {"path": "sub/b.bin", "sha256": hashlib.sha256(b"\x00\x01").hexdigest(),
         "size_bytes": 2},
    ]}
    digest = run.log_input(src / "a.txt", role="validation")
    assert digest == "sha256:" + sha_file
    assert run.log_input("s3://bucket/data", digest="etag-1") == "etag-1"
    with pytest.raises(InvalidArgumentError):
        run.log_input(tmp_path / "missing")
    run.finish()
    events = read_spool(tmp_path / "spool")
    arts = [e.artifact for e in events if e.HasField("artifact")]
    assert [(a.name, a.sha256, a.size_bytes) for a in arts] == [
        ("a.txt", sha_file, 5), ("again", sha_file, 5), ("model", sha_dir, 7)]
    assert arts[0].uri == blob.resolve().as_uri()
    inputs = [e.input for e in events if e.HasField("input")]
    assert [(i.name, i.role, i.uri) for i in inputs] == [
        ("a.txt", "validation", (src / "a.txt").resolve().as_uri()),
        ("data", "train", "s3://bucket/data")]
    for e in events:
        validate(e)


def test_directory_input_digest_changes_with_a_file_and_uses_the_cache(tmp_path: Path,
                                                                      monkeypatch):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "x.csv").write_text("1,2\n")
    (data / "y.csv").write_text("3,4\n")
    cache = artifacts.DigestCache(tmp_path / "cache.json")
    first = artifacts.input_digest(data, cache)
    assert first == artifacts.input_digest(data)  # same digest with or without cache

    reads: list[Path] = []
    real = artifacts.file_sha256
    monkeypatch.setattr(artifacts, "file_sha256", lambda p: (reads.append(p), real(p))[1])
    assert artifacts.input_digest(data, artifacts.DigestCache(tmp_path / "cache.json")) == first
    assert reads == []  # unchanged size+mtime: nothing re-read, even by a new process' cache

    (data / "y.csv").write_text("3,5\n")
    os.utime(data / "y.csv", ns=(1, 1))
    second = artifacts.input_digest(data, cache)
    assert second != first and reads == [data / "y.csv"]


def test_content_sha256_is_the_digest_store_gives_without_storing(tmp_path: Path):
    data = tmp_path / "ckpt"
    (data / "sub").mkdir(parents=True)
    (data / "weights.bin").write_bytes(b"\x00" * 1000)
    (data / "sub" / "config.json").write_text('{"lr": 0.1}')
    root = tmp_path / "store"
    assert artifacts.content_sha256(data) == artifacts.store(root, data).sha256
    single = data / "weights.bin"
    assert artifacts.content_sha256(single) == artifacts.store(root, single).sha256
    # Nothing is written for the digest alone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "store"]
    before = artifacts.content_sha256(data)
    (data / "sub" / "config.json").write_text('{"lr": 0.2}')
    assert artifacts.content_sha256(data) != before
    with pytest.raises(InvalidArgumentError):
        artifacts.content_sha256(tmp_path / "missing")
