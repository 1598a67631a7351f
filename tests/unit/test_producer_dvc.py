"""run.log_input of DVC files: DVC's own hash recorded unchanged, the data never read.

The files below are exactly what DVC 3.67.1 wrote (`dvc add data/train.csv data/images`,
`dvc stage add` + `dvc repro` of three stages, one with `wdir`), the md5 values
included: data/train.csv is the 10 bytes "a,b\\r\\n1,2\\r\\n" (md5sum b202f333...);
dvc.yaml as DVC wrote it. The legacy entry (no `hash:`) has the shape DVC 2 wrote, and
its md5 of the same file (taken after CRLF -> LF).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import runstream
from runstream import artifacts, dvc
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.validation import validate
from tests.helpers import read_spool

TRAIN_CSV = b"a,b\r\n1,2\r\n"
TRAIN_DVC = """outs:
- md5: b202f333fba4fd38d4b8e5e693077aab
  size: 10
  hash: md5
  path: train.csv
"""
IMAGES_DVC = """outs:
- md5: 502165e34a266a711bc37d840418fc4a.dir
  size: 3
  nfiles: 2
  hash: md5
  path: images
"""
LEGACY_DVC = """outs:
- md5: e5ebd4c02cefbe7955977c67ada242b7
  size: 10
  path: train.csv
"""
DVC_LOCK = """schema: '2.0'
stages:
  prepare:
    cmd: python prep.py
    deps:
    - path: data/train.csv
      hash: md5
      md5: b202f333fba4fd38d4b8e5e693077aab
      size: 10
    - path: prep.py
      hash: md5
      md5: 05b53e21236e0a75d57672875a7136fc
      size: 117
    outs:
    - path: out/prepared
      hash: md5
      md5: f43e9e033aaa003c8f0747a0613fb5b1.dir
      size: 10
      nfiles: 1
  train:
    cmd: python train.py
    deps:
    - path: out/prepared
      hash: md5
      md5: f43e9e033aaa003c8f0747a0613fb5b1.dir
      size: 10
      nfiles: 1
    - path: train.py
      hash: md5
      md5: 1bd348dd367190741b5af3382c66b315
      size: 33
    params:
      params.yaml:
        train.lr: 0.1
    outs:
    - path: model.bin
      hash: md5
      md5: 6f8f57715090da2632453988d9a1501b
      size: 1
  inwd:
    cmd: cp in.txt out.txt
    deps:
    - path: in.txt
      hash: md5
      md5: fbade9e36a3f36d3d676c1b808451dd7
      size: 1
    outs:
    - path: out.txt
      hash: md5
      md5: fbade9e36a3f36d3d676c1b808451dd7
      size: 1
"""
DVC_YAML = """stages:
  prepare:
    cmd: python prep.py
    deps:
    - data/train.csv
    - prep.py
    outs:
    - out/prepared
  train:
    cmd: python train.py
    deps:
    - out/prepared
    - train.py
    params:
    - train.lr
    outs:
    - model.bin
  inwd:
    cmd: cp in.txt out.txt
    wdir: wd
    deps:
    - in.txt
    outs:
    - out.txt
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DVC project in tmp; any attempt to hash a file fails the test."""
    root = tmp_path / "project"
    (root / "data" / "images").mkdir(parents=True)
    (root / "data" / "train.csv").write_bytes(TRAIN_CSV)
    (root / "data" / "train.csv.dvc").write_text(TRAIN_DVC)
    (root / "data" / "images.dvc").write_text(IMAGES_DVC)
    (root / "data" / "legacy.dvc").write_text(LEGACY_DVC)
    (root / "dvc.lock").write_text(DVC_LOCK)
    (root / "dvc.yaml").write_text(DVC_YAML)

    def no_hashing(*args: object) -> str:
        raise AssertionError("the data was hashed again")

    monkeypatch.setattr(artifacts, "file_sha256", no_hashing)
    monkeypatch.setattr(artifacts.DigestCache, "file_sha256", no_hashing)
    return root


def test_the_md5_dvc_wrote_is_the_md5_of_the_content():
    # What makes "md5:" honest for DVC 3 entries: no CRLF conversion (DVC 2 had one).
    assert hashlib.md5(TRAIN_CSV).hexdigest() == "b202f333fba4fd38d4b8e5e693077aab"
    # DVC 2's md5 of the same text file (LEGACY_DVC) was taken after CRLF -> LF.
    assert hashlib.md5(TRAIN_CSV.replace(b"\r\n", b"\n")).hexdigest() == \
        "e5ebd4c02cefbe7955977c67ada242b7"


def test_a_dvc_file_records_dvcs_md5_and_the_path_beside_it(project: Path, tmp_path: Path,
                                                            env: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # paths resolve against the .dvc file, not the cwd
    run = runstream.init("exp", spool_dir=tmp_path / "spool", environ=env)
    assert run.log_input("project/data/train.csv.dvc") == \
        "md5:b202f333fba4fd38d4b8e5e693077aab"
    assert run.log_input(project / "data" / "images.dvc", role="eval") == \
        "md5:502165e34a266a711bc37d840418fc4a.dir"
    assert run.log_input(project / "data" / "legacy.dvc", name="csv v1") == \
        "md5-dos2unix:e5ebd4c02cefbe7955977c67ada242b7"
    run.finish()
    events = read_spool(tmp_path / "spool")
    for e in events:
        validate(e)
    inputs = [(i.name, i.uri, i.digest, i.role) for e in events if e.HasField("input")
              for i in (e.input,)]
    data = (project / "data").resolve()
    assert inputs == [
        ("train.csv", (data / "train.csv").as_uri(), "md5:b202f333fba4fd38d4b8e5e693077aab",
         "train"),
        ("images", (data / "images").as_uri(), "md5:502165e34a266a711bc37d840418fc4a.dir",
         "eval"),
        ("csv v1", (data / "train.csv").as_uri(),
         "md5-dos2unix:e5ebd4c02cefbe7955977c67ada242b7", "train"),
    ]


def test_a_dvc_file_of_data_not_checked_out_is_still_recorded(project: Path):
    (project / "data" / "train.csv").unlink()
    (ref,) = dvc.input_refs(project / "data" / "train.csv.dvc")
    assert ref.digest == "md5:b202f333fba4fd38d4b8e5e693077aab"


def test_a_lock_stage_records_its_deps_and_outs(project: Path, tmp_path: Path,
                                                env: dict[str, str]):
    run = runstream.init("exp", spool_dir=tmp_path / "spool", environ=env)
    digest = run.log_input(project / "dvc.lock", stage="prepare")
    assert digest == "md5:b202f333fba4fd38d4b8e5e693077aab"
    run.log_input(project / "dvc.lock", stage="inwd", role="test")
    run.finish()
    root = project.resolve()
    inputs = [(e.input.name, e.input.uri, e.input.digest, e.input.role)
              for e in read_spool(tmp_path / "spool") if e.HasField("input")]
    assert inputs == [
        ("data/train.csv", (root / "data/train.csv").as_uri(),
         "md5:b202f333fba4fd38d4b8e5e693077aab", "train"),
        ("prep.py", (root / "prep.py").as_uri(), "md5:05b53e21236e0a75d57672875a7136fc",
         "train"),
        ("out/prepared", (root / "out/prepared").as_uri(),
         "md5:f43e9e033aaa003c8f0747a0613fb5b1.dir", "output"),
        # dvc.yaml's wdir: the stage's paths are relative to wd/.
        ("in.txt", (root / "wd/in.txt").as_uri(), "md5:fbade9e36a3f36d3d676c1b808451dd7",
         "test"),
        ("out.txt", (root / "wd/out.txt").as_uri(), "md5:fbade9e36a3f36d3d676c1b808451dd7",
         "output"),
    ]


def test_a_lock_file_of_one_stage_needs_no_stage_and_dvc1_locks_are_read(tmp_path: Path):
    lock = tmp_path / "dvc.lock"
    # DVC 1's lock: stages at the top, no schema, no hash name.
    lock.write_text("train:\n  cmd: python t.py\n  deps:\n  - path: d.csv\n"
                    "    md5: 0123456789abcdef0123456789abcdef\n")
    (ref,) = dvc.input_refs(lock)
    assert (ref.name, ref.digest) == ("d.csv", "md5-dos2unix:0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize(("file", "text", "stage", "name", "match"), [
    ("dvc.lock", DVC_LOCK, None, None, "3 stages; say which"),
    ("dvc.lock", DVC_LOCK, "evaluate", None, "no stage 'evaluate'"),
    ("dvc.lock", DVC_LOCK, "prepare", "mine", "given for 3 entries"),
    ("a.dvc", TRAIN_DVC, "prepare", None, "is for a dvc.lock"),
    ("a.dvc", "outs: [\n", None, None, "not a DVC file"),
    ("a.dvc", "- just a list\n", None, None, "expected a YAML mapping"),
    ("a.dvc", "outs:\n- path: x\n", None, None, "'x' has no md5"),
    ("a.dvc", "outs:\n- md5: ab\n", None, None, "has no path"),
    ("a.dvc", "outs:\n- md5: ab\n  path: x\n  hash: 'MD 5'\n", None, None, "not a hash name"),
    ("a.dvc", "outs: 3\n", None, None, "not a list"),
    ("a.dvc", "frozen: true\n", None, None, "no entry"),
])
def test_what_is_not_a_dvc_entry_is_refused_and_nothing_recorded(
        file: str, text: str, stage: str | None, name: str | None, match: str,
        tmp_path: Path, env: dict[str, str]):
    path = tmp_path / file
    path.write_text(text)
    run = runstream.init("exp", spool_dir=tmp_path / "spool", environ=env)
    with pytest.raises(InvalidArgumentError, match=match):
        run.log_input(path, name=name, stage=stage)
    run.finish()
    assert not [e for e in read_spool(tmp_path / "spool") if e.HasField("input")]


def test_stage_is_only_for_a_lock_file_and_a_digest_bypasses_dvc(project: Path,
                                                                 tmp_path: Path,
                                                                 env: dict[str, str]):
    run = runstream.init("exp", spool_dir=tmp_path / "spool", environ=env)
    with pytest.raises(InvalidArgumentError, match="stage='train'"):
        run.log_input(project / "data" / "train.csv", stage="train")
    # An explicit digest records the path as given (the .dvc file itself), read nothing.
    assert run.log_input(project / "data" / "train.csv.dvc", digest="sha256:" + "0" * 64) \
        == "sha256:" + "0" * 64
    run.finish()
    (recorded,) = [e.input for e in read_spool(tmp_path / "spool") if e.HasField("input")]
    assert recorded.name == "train.csv.dvc"


def test_an_external_output_keeps_its_uri(tmp_path: Path):
    path = tmp_path / "ext.dvc"
    path.write_text("outs:\n- md5: 0123456789abcdef0123456789abcdef\n  hash: md5\n"
                    "  path: s3://bucket/data.csv\n")
    (ref,) = dvc.input_refs(path)
    assert (ref.uri, ref.name) == ("s3://bucket/data.csv", "s3://bucket/data.csv")


def test_ordinary_files_are_still_hashed_once_and_cached(tmp_path: Path, env: dict[str, str]):
    data = tmp_path / "plain.csv"
    data.write_bytes(TRAIN_CSV)
    run = runstream.init("exp", spool_dir=tmp_path / "spool",
                         artifacts_dir=tmp_path / "store", environ=env)
    assert run.log_input(data) == "sha256:" + hashlib.sha256(TRAIN_CSV).hexdigest()
    run.finish()
    assert (tmp_path / "store" / "index" / "file-digests.json").exists()
