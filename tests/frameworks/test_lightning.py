"""Lightning's Trainer on two CPU ranks (gloo) started by Lightning's own launcher (ddp,
ddp_spawn) or by torchrun (static rendezvous: no job id), with RunstreamLogger +
RunstreamCallback, through the whole pipeline (SDK -> local spool -> `runstream serve` ->
runstream.query.Client): exactly one run, rank 0's params, metrics and checkpoints, both
ranks' telemetry and status, FAILED on both ranks when training raises."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.proto.config import TELEMETRY_STEP_TIME
from runstream.query.client import Client
from tests.frameworks import lightning_job as job
from tests.helpers import wait_for
from tests.integration.test_integrations_keras import finished_run, serving

HERE = Path(__file__).resolve().parent


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(tmp_path) as env:
        yield env


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]


def the_one_run(client: Client) -> str:
    wait_for(client.healthy, timeout_s=60, what="runstream serve")
    runs = wait_for(lambda: client.search_runs(job.EXPERIMENT)[0], timeout_s=60,
                    what="the run")
    assert len(runs) == 1, f"one run per job, got {[r.run_id for r in runs]}"
    return runs[0].run_id


@pytest.mark.parametrize(("launcher", "strategy"), [
    ("lightning", "ddp"), ("lightning", "ddp_spawn"), ("torchrun", "ddp")])
def test_two_ranks_make_one_run(
    serve_env: dict[str, str], tmp_path: Path, launcher: str, strategy: str
) -> None:
    script = [str(HERE / "lightning_job.py"), str(tmp_path / "out"), strategy]
    command = [*TORCHRUN, *script] if launcher == "torchrun" else [sys.executable, *script]
    assert subprocess.run(command, env=serve_env, timeout=600).returncode == 0
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        run_id = the_one_run(client)
        run = finished_run(client, run_id, job.DEVICES)
        assert run.info.world_size == job.DEVICES
        assert run.info.name == f"tiny-{strategy}"
        assert {(r.rank, r.status) for r in run.ranks} == {(0, "FINISHED"), (1, "FINISHED")}
        assert {p.key: p.value for p in run.params} == {"lr": "0.05", "hidden": "8"}
        assert not run.param_conflicts
        steps = job.EPOCHS * job.STEPS_PER_EPOCH
        assert sorted(a.name for a in run.artifacts) == [
            f"checkpoints/epoch={e}-step={(e + 1) * job.STEPS_PER_EPOCH}.ckpt"
            for e in range(job.EPOCHS)]
        loss = client.metric_history(run_id, "train_loss")
        assert list(loss.steps) == list(range(steps)) and set(loss.ranks) == {0}
        assert set(client.metric_history(run_id, "val_loss").ranks) == {0}
        for rank in range(job.DEVICES):
            step_time = client.metric_history(run_id, TELEMETRY_STEP_TIME, ranks=[rank])
            assert list(step_time.steps) == list(range(steps))


def test_a_failing_fit_ends_every_rank_failed(serve_env: dict[str, str],
                                               tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(HERE / "lightning_job.py"),
                           str(tmp_path / "out"), "ddp", "2"], env=serve_env, timeout=600)
    assert done.returncode != 0
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        run_id = the_one_run(client)
        run = wait_for(lambda: client.get_run(run_id),
                       lambda r: len(r.ranks) == job.DEVICES
                       and all(rk.status == "FAILED" for rk in r.ranks),
                       timeout_s=120, what="both ranks FAILED")
        assert all("failing at step 2 as asked" in rk.error for rk in run.ranks)
        assert list(client.metric_history(run_id, "train_loss").steps) == [0, 1]


def test_lightnings_finalize_status_maps_onto_run_statuses() -> None:
    from runstream.integrations.lightning import run_status

    assert run_status("success", None) == ("FINISHED", "")
    failed, error = run_status("failed", ValueError("bad batch"))
    assert failed == "FAILED" and "ValueError: bad batch" in error
    assert run_status("failed", KeyboardInterrupt())[0] == "KILLED"
    assert run_status("finished", None) == (
        "KILLED", "stopped for a SLURM requeue (Lightning auto-requeue)")
