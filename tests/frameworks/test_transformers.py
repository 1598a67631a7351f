"""Hugging Face's Trainer on two CPU ranks (gloo) under torchrun's static rendezvous
(TORCHELASTIC_RUN_ID=none, no job id: the callback broadcasts rank 0's), with
RunstreamCallback, through the whole pipeline: exactly one run, rank 0's params, logs,
checkpoints and inputs, both ranks' telemetry and status."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.proto.config import TELEMETRY_STEP_TIME
from runstream.query.client import Client
from tests.frameworks import hf_job as job
from tests.helpers import wait_for
from tests.integration.test_integrations_keras import finished_run, serving

HERE = Path(__file__).resolve().parent


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(tmp_path) as env:
        yield env


def test_two_ranks_under_torchrun_make_one_run(serve_env: dict[str, str],
                                               tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         str(HERE / "hf_job.py"), str(tmp_path / "out")], env=serve_env, timeout=600)
    assert done.returncode == 0
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        wait_for(client.healthy, timeout_s=60, what="runstream serve")
        runs = wait_for(lambda: client.search_runs(job.EXPERIMENT)[0], timeout_s=60,
                        what="the run")
        assert len(runs) == 1, f"one run per job, got {[r.run_id for r in runs]}"
        run_id = runs[0].run_id
        run = finished_run(client, run_id, 2)
        assert run.info.world_size == 2 and run.info.name == "tiny-bert"
        params = {p.key: p.value for p in run.params}
        assert params["learning_rate"] == "0.0005"
        assert params["max_steps"] == str(job.MAX_STEPS)
        assert params["model.hidden_size"] == "16"
        assert not run.param_conflicts
        assert sorted(a.name for a in run.artifacts) == [
            f"checkpoints/checkpoint-{s}" for s in (job.SAVE_STEPS, job.MAX_STEPS)]
        assert all(a.size_bytes > 0 for a in run.artifacts)
        assert [(i.name, i.uri) for i in run.inputs] == [("toy", "memory://toy")]
        steps = list(range(1, job.MAX_STEPS + 1))
        loss = client.metric_history(run_id, "loss")
        assert list(loss.steps) == steps and set(loss.ranks) == {0}
        assert set(client.metric_history(run_id, "eval_loss").ranks) == {0}
        for rank in (0, 1):
            step_time = client.metric_history(run_id, TELEMETRY_STEP_TIME, ranks=[rank])
            assert list(step_time.steps) == steps
