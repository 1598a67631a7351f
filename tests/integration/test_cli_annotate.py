"""runstream tag / note / archive through the real pipeline: a real ``runstream serve``
(its own process: spool ingestion, embedded chdb, gRPC) fed by the SDK in a process of
its own, then the commands as subprocesses; ``runstream show --json`` and ``runstream
runs`` read the changes back. Also through the real Kafka broker."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.proto import codec, spool
from tests.helpers import free_port, local_store_env, serving, wait_for

#: A training script: one run with a param and a point, finished.
JOB = """
import sys, runstream
with runstream.init(experiment=sys.argv[2], run_id=sys.argv[1], params={"lr": 0.1}) as run:
    run.log({"loss": 0.5}, step=1)
"""


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runstream.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def cli_json(env: dict[str, str], *args: str) -> Any:
    done = cli(env, *args, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else None


def shown(env: dict[str, str], run_id: str) -> dict[str, Any] | None:
    """What ``show --json`` says of the run's status and its after-the-fact changes
    (the rest left out, so that a failed wait prints something readable)."""
    run = cli_json(env, "show", run_id)
    if run is None:
        return None
    return {"info": run["info"], "tags": run["tags"], "notes": run["notes"],
            "changes": run["changes"]}


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    env = local_store_env(tmp_path, RUNSTREAM_SYSTEM_METRICS_S="0")
    return env


@pytest.fixture
def serve(serve_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(serve_env, tmp_path / "serve.log"):
        yield serve_env


def finished_run(env: dict[str, str], experiment: str = "cli-annotate") -> str:
    """A run logged by the SDK (another process) and stored, FINISHED."""
    run_id = f"ann-{uuid.uuid4().hex[:8]}"
    job = subprocess.run([sys.executable, "-c", JOB, run_id, experiment], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert job.returncode == 0, job.stderr
    wait_for(lambda: shown(env, run_id),
             lambda r: r is not None and r["info"]["status"] == "FINISHED",
             interval_s=0.5, timeout_s=120,
             what=f"run {run_id} stored")
    return run_id


def run_ids(env: dict[str, str], *flags: str) -> list[str] | None:
    runs = cli_json(env, "runs", "--experiment", "cli-annotate", *flags)
    return None if runs is None else [r["run_id"] for r in runs]


def test_tag_note_archive_show_up_in_show_and_runs(serve: dict[str, str]) -> None:
    env = serve
    run_id = finished_run(env)
    other = finished_run(env)

    tagged = cli(env, "tag", run_id, "reviewed=yes", "model=bert=base")
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.startswith(f"run {run_id}: tags set: reviewed=yes, model=bert=base (by ")
    assert f"written to the spool {env['RUNSTREAM_SPOOL_DIR']}" in tagged.stdout
    noted = cli(env, "note", run_id, "lr too high\nafter step 40 ☃")
    assert noted.returncode == 0, noted.stderr
    archived = cli(env, "archive", run_id)
    assert archived.returncode == 0 and "archived" in archived.stdout, archived.stderr

    run = wait_for(lambda: shown(env, run_id),
                   lambda r: r is not None and r["info"]["archived"] and r["notes"]
                     and len(r["changes"]) >= 3,
                     interval_s=0.5, timeout_s=60, what="the tag, note and archive stored")
    assert run is not None
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["reviewed"] == "yes" and tags["model"] == "bert=base"
    user, host = getpass.getuser(), socket.gethostname()
    assert [(n["text"], n["user"], n["host"]) for n in run["notes"]] == [
        ("lr too high\nafter step 40 ☃", user, host)]
    assert {(c["user"], c["host"]) for c in run["changes"]} == {(user, host)}
    whats = [c["what"] for c in run["changes"]]
    assert any(w.startswith("tag") and "reviewed=yes" in w for w in whats), whats
    assert "note" in whats and "archive" in whats
    text = cli(env, "show", run_id)
    assert text.returncode == 0
    assert "lr too high" in text.stdout and f"{user}@{host}" in text.stdout
    assert "archived    yes" in text.stdout

    # Archived runs are hidden unless asked for.
    assert run_ids(env) == [other]
    assert sorted(run_ids(env, "--all") or []) == sorted([run_id, other])
    assert run_ids(env, "--archived") == [run_id]
    listing = cli(env, "runs", "--all", "--experiment", "cli-annotate")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(run_id))
    assert row.endswith("archived")

    restored = cli(env, "archive", run_id, "--restore")
    assert restored.returncode == 0, restored.stderr
    wait_for(lambda: run_ids(env), lambda ids: ids is not None and run_id in ids,
             interval_s=0.5, timeout_s=60, what="the restored run listed again")
    # The other run was never touched.
    untouched = shown(env, other)
    assert untouched is not None
    assert untouched["notes"] == [] and untouched["changes"] == []
    assert not untouched["info"]["archived"]


def test_a_wrong_run_id_or_no_service_sends_nothing(serve: dict[str, str],
                                                   tmp_path: Path) -> None:
    env = serve
    # A spool no serve reads: whatever lands there stays for the test to see.
    aside = tmp_path / "aside"
    unknown = cli(env, "tag", "no-such-run", "a=1", "--spool-dir", str(aside))
    assert unknown.returncode == 1
    assert "no run 'no-such-run' is known to the query service" in unknown.stderr
    assert "nothing was sent" in unknown.stderr
    down = cli(env, "note", "some-run", "text", "--spool-dir", str(aside),
               "--addr", f"127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "is not reachable" in down.stderr and "nothing was sent" in down.stderr
    bad = cli(env, "tag", "some-run", "no-equals-sign", "--spool-dir", str(aside))
    assert bad.returncode == 2
    assert "runstream: error: 'no-equals-sign': expected key=value" in bad.stderr
    too_long = cli(env, "tag", "some-run", "k=" + "v" * 5001, "--spool-dir", str(aside))
    assert too_long.returncode == 2 and "expected 0..5000" in too_long.stderr
    assert "Traceback" not in unknown.stderr + down.stderr + bad.stderr + too_long.stderr
    assert not aside.exists()


@pytest.mark.kafka
def test_with_kafka_the_change_goes_through_the_broker(
    serve_env: dict[str, str], kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    env = {**serve_env, "RUNSTREAM_KAFKA": kafka_bootstrap, "RUNSTREAM_TOPIC": kafka_topic,
           "RUNSTREAM_CONSUMER_GROUP": f"rs-ann-{uuid.uuid4().hex[:8]}"}
    with serving(env, tmp_path / "serve.log"):
        run_id = finished_run(env)
        tagged = cli(env, "tag", run_id, "stage=prod")
        assert tagged.returncode == 0, tagged.stderr
        assert f"sent to Kafka {kafka_bootstrap} topic {kafka_topic}" in tagged.stdout
        run = wait_for(lambda: shown(env, run_id),
                       lambda r: r is not None and r["changes"]
                       and any(t["key"] == "stage" for t in r["tags"]),
                       interval_s=0.5, timeout_s=60, what="the tag stored")
        assert run is not None
        assert {t["key"]: t["value"] for t in run["tags"]}["stage"] == "prod"
        assert [(c["user"], c["host"]) for c in run["changes"]] == [
            (getpass.getuser(), socket.gethostname())]


def test_a_kafka_that_does_not_answer_leaves_the_change_in_the_spool(
    serve: dict[str, str], tmp_path: Path
) -> None:
    env = serve
    run_id = finished_run(env)
    aside = tmp_path / "aside"  # no serve reads it: the spooled change stays for the test
    nobody = f"127.0.0.1:{free_port()}"
    done = cli(env, "tag", run_id, "stage=prod", "--kafka", nobody, "--spool-dir", str(aside))
    assert done.returncode == 0, done.stderr
    assert (f"Kafka {nobody} did not answer: kept in the spool {aside}; `runstream sync` "
            "sends it") in done.stdout
    (published,) = aside.glob("*.spool")
    (frame,) = list(spool.scan(published.read_bytes()))
    assert not isinstance(frame, spool.Damage)
    event = codec.decode(frame.payload)
    assert (event.run_id, event.experiment, event.rank, event.world_size) == (
        run_id, "cli-annotate", 0, 1)
    assert [(t.key, t.value) for t in event.annotation.tags] == [("stage", "prod")]
    assert not list(aside.glob("*.part"))
