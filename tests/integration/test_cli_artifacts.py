"""runstream artifacts / download / lineage through the real pipeline: a real ``runstream
serve`` (spool ingestion, embedded chdb, gRPC) fed by SDK processes that log a file and a
directory artifact and inputs; the commands run as subprocesses against it and the
artifact store the SDK wrote."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream import artifacts as store
from tests.helpers import serving, wait_for
from tests.integration.test_cli_annotate import cli, cli_json, serve_env

__all__ = ["serve_env"]  # the fixture, shared

#: Training logs the model (a file) and a checkpoint directory; evaluation reads the
#: model as its input.
TRAIN = """
import sys, runstream
run_id, model, ckpt, data = sys.argv[1:5]
with runstream.init(experiment="cli-artifacts", run_id=run_id, name="train",
                    params={"lr": 0.1, "epochs": 3}) as run:
    run.log_input(data, name="train-data")
    run.log({"loss": 0.5}, step=1)
    run.log_artifact(model, name="model.bin")
    run.log_artifact(ckpt, name="ckpt")
"""
EVAL = """
import sys, runstream
run_id, model = sys.argv[1:3]
with runstream.init(experiment="cli-artifacts", run_id=run_id, name="eval") as run:
    run.log_input(model, name="model")
"""


@pytest.fixture
def served(serve_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(serve_env, tmp_path / "serve.log"):
        yield serve_env


def python(env: dict[str, str], code: str, *args: str) -> None:
    job = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert job.returncode == 0, job.stderr


def stored(env: dict[str, str], run_id: str) -> dict[str, object]:
    run = wait_for(lambda: cli_json(env, "show", run_id),
                   lambda r: r is not None and r["info"]["status"] == "FINISHED",
                   interval_s=0.5, timeout_s=120, what=f"run {run_id} stored")
    assert isinstance(run, dict)
    return run


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*")
            if p.is_file()}


@pytest.fixture
def logged(served: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], str, Path, Path]:
    """(env, run id, model file, checkpoint directory) of a stored training run."""
    env = served
    model = tmp_path / "work" / "model.bin"
    ckpt = tmp_path / "work" / "ckpt"
    (ckpt / "opt").mkdir(parents=True)
    model.write_bytes(os.urandom(1 << 20) + b"\x00\xff")
    (ckpt / "weights.pt").write_bytes(os.urandom(200_000))
    (ckpt / "opt" / "state.json").write_text('{"step": 40}')
    data = tmp_path / "work" / "train.csv"
    data.write_text("x,y\n1,2\n")
    run_id = f"train-{uuid.uuid4().hex[:8]}"
    python(env, TRAIN, run_id, str(model), str(ckpt), str(data))
    stored(env, run_id)
    return env, run_id, model, ckpt


def test_artifacts_lists_and_download_gets_them_back_byte_identical(
    logged: tuple[dict[str, str], str, Path, Path], tmp_path: Path
) -> None:
    env, run_id, model, ckpt = logged
    listed = cli_json(env, "artifacts", run_id)
    by_name = {a["name"]: a for a in listed}
    assert set(by_name) == {"model.bin", "ckpt"}
    assert by_name["model.bin"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert by_name["model.bin"]["size_bytes"] == model.stat().st_size
    text = cli(env, "artifacts", run_id)
    assert text.returncode == 0
    row = next(line for line in text.stdout.splitlines() if line.startswith("model.bin"))
    assert by_name["model.bin"]["sha256"] in row and by_name["model.bin"]["uri"] in row

    out = tmp_path / "out"
    out.mkdir()
    got = cli(env, "download", run_id, "model.bin", "--out", str(out / "m.bin"))
    assert got.returncode == 0, got.stderr
    assert (out / "m.bin").read_bytes() == model.read_bytes()
    assert f"sha256 {by_name['model.bin']['sha256']} verified" in got.stdout
    again = cli(env, "download", run_id, "model.bin", "--out", str(out / "m.bin"))
    assert again.returncode == 1 and "exists; --force replaces it" in again.stderr
    assert cli(env, "download", run_id, "model.bin", "--out", str(out / "m.bin"),
               "--force").returncode == 0

    got_dir = cli(env, "download", run_id, "ckpt", "--out", str(out / "ckpt"), "--json")
    assert got_dir.returncode == 0, got_dir.stderr
    assert json.loads(got_dir.stdout)["files"] == 2
    assert tree(out / "ckpt") == tree(ckpt)
    assert sorted(p.name for p in out.iterdir()) == ["ckpt", "m.bin"]  # no temporaries

    missing = cli(env, "download", run_id, "nope", "--out", str(out / "x"))
    assert missing.returncode == 1 and "no artifact 'nope'" in missing.stderr


def test_a_corrupted_blob_fails_download_and_leaves_nothing(
    logged: tuple[dict[str, str], str, Path, Path], tmp_path: Path
) -> None:
    env, run_id, model, _ = logged
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    blob = store.blob_path(Path(env["RUNSTREAM_ARTIFACTS"]), sha)
    damaged = bytearray(blob.read_bytes())
    damaged[1000] ^= 0x01  # one bit
    blob.write_bytes(bytes(damaged))
    out = tmp_path / "out"
    out.mkdir()
    done = cli(env, "download", run_id, "model.bin", "--out", str(out / "m.bin"))
    assert done.returncode == 1
    assert f"not the {sha} recorded for it: the store is damaged" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(out.iterdir()) == []


def test_lineage_finds_the_producer_and_the_runs_that_used_it(
    logged: tuple[dict[str, str], str, Path, Path]
) -> None:
    env, run_id, model, ckpt = logged
    eval_id = f"eval-{uuid.uuid4().hex[:8]}"
    python(env, EVAL, eval_id, str(model))
    stored(env, eval_id)

    found = cli_json(env, "lineage", str(model))
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert found["sha256"] == sha
    (producer,) = found["produced_by"]
    assert (producer["run_id"], producer["name"], producer["rank"]) == (run_id, "model.bin", 0)
    assert {p["key"]: p["value"] for p in producer["run"]["params"]} == {"lr": "0.1",
                                                                       "epochs": "3"}
    assert [i["name"] for i in producer["run"]["inputs"]] == ["train-data"]
    assert [m["run_id"] for m in found["used_by"]] == [eval_id]

    text = cli(env, "lineage", str(model))
    assert text.returncode == 0, text.stderr
    assert f"  run {run_id} (cli-artifacts, train): artifact 'model.bin', rank 0" in text.stdout
    assert "    params: epochs=3, lr=0.1\n" in text.stdout  # sorted by key, as GetRun's
    assert "environment: python " in text.stdout and eval_id in text.stdout

    # A directory is looked up by its manifest digest, as log_artifact recorded it.
    by_dir = cli_json(env, "lineage", str(ckpt))
    assert [(m["run_id"], m["name"]) for m in by_dir["produced_by"]] == [(run_id, "ckpt")]
    by_sha = cli_json(env, "lineage", sha)
    assert [m["run_id"] for m in by_sha["produced_by"]] == [run_id]
    unknown = cli(env, "lineage", "0" * 64)
    assert unknown.returncode == 0 and "no run logged this content" in unknown.stdout
