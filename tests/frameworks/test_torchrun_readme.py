"""The README's own launch line, for real: `torchrun --nproc-per-node N train.py` where
train.py is the quick start (plain ``runstream.init``, no run id, no RUNSTREAM_RUN_ID).
Under a static rendezvous torchrun sets TORCHELASTIC_RUN_ID=none (older releases; newer
ones a fresh uuid per torchrun); every rank must still join one run (named after the
torchrun agent, or that uuid), and two torchrun invocations are two runs. An
elastic restart (``--max-restarts``) keeps the run and starts attempt 1."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.query.client import Client
from tests.helpers import wait_for
from tests.integration.test_integrations_keras import finished_run, serving

EXPERIMENT = "readme-torchrun"

TRAIN = """
import os, sys
import runstream

with runstream.init(experiment="readme-torchrun", params={"lr": 0.1}) as run:
    for step in range(20):
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    marker = sys.argv[1] if len(sys.argv) > 1 else ""
    # The elastic case: rank 1 fails in the first attempt, so torchrun restarts both.
    if marker and os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        raise SystemExit(3)
"""


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(tmp_path) as env:  # no RUNSTREAM_* beyond the store's paths
        yield env


def torchrun(env: dict[str, str], script: Path, *args: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *args,
         str(script)], env=env, timeout=300).returncode


def test_the_readme_launch_line_makes_one_run_per_torchrun(serve_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    assert torchrun(serve_env, script) == 0
    assert torchrun(serve_env, script) == 0
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        wait_for(client.healthy, timeout_s=60, what="runstream serve")
        runs = wait_for(lambda: client.search_runs(EXPERIMENT)[0],
                        lambda found: len(found) >= 2, timeout_s=60, what="two runs")
        assert len(runs) == 2, [r.run_id for r in runs]
        for info in runs:
            # torchrun names the job itself (TORCHELASTIC_RUN_ID: "none" under a static
            # rendezvous in older releases, a fresh uuid per torchrun in newer ones): the
            # run id is then that, or the agent's own.
            run = finished_run(client, info.run_id, 2)
            assert run.info.world_size == 2 and run.env.launcher == "torchrun"
            assert sorted(r.rank for r in run.ranks) == [0, 1]
            history = client.metric_history(info.run_id, "train/loss")
            assert sorted(history.ranks) == [0] * 20 + [1] * 20


def test_an_elastic_restart_is_a_new_attempt_of_the_same_run(serve_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN.replace("sys.argv[1] if len(sys.argv) > 1 else \"\"", "'fail'"))
    assert torchrun(serve_env, script, "--max-restarts", "1") == 0
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        wait_for(client.healthy, timeout_s=60, what="runstream serve")
        runs = wait_for(lambda: client.search_runs(EXPERIMENT)[0], timeout_s=60,
                        what="the run")
        assert len(runs) == 1, [r.run_id for r in runs]

        def two_attempts() -> object:
            # Each rank's spool is ingested on its own, so the run can read FINISHED (the
            # lowest rank that started in the attempt: rank 1 until rank 0's start is in)
            # before rank 0 of the new attempt is: wait for both ranks' end as well.
            run = client.get_run(runs[0].run_id)
            done = (len(run.attempts) == 2 and run.info.status == "FINISHED" and len(run.ranks) == 2
                    and all(r.status == "FINISHED" for r in run.ranks))
            return run if done else None

        run = wait_for(two_attempts, timeout_s=120, what="two attempts, FINISHED")
        assert [(a.attempt, a.restart) for a in run.attempts] == [(0, 0), (1, 1)]
        assert run.attempts[0].status in ("FAILED", "KILLED", "CRASHED")
        assert run.attempts[1].status == "FINISHED"
        assert sorted(r.rank for r in run.ranks) == [0, 1]
