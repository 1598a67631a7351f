"""The straggler, through the whole pipeline: four real rank processes of one job time
their steps with StepTimer, one of them 30% slower; `runstream serve` ingests their spool;
GetRankHealth over real gRPC (and `runstream ranks`) names exactly that rank.

Steps are sleeps (100 ms, the slow rank 130 ms), so the four processes hardly compete for
the CPU, and long enough that a loaded machine's late wake-ups (they add to every rank's
steps alike) leave the 1.3x well above the 1.2x threshold; the checks compare ranks with
each other (ratios, orderings), never with the clock. A file barrier lines the ranks up
before their first step, as a job's rendezvous does, so start-up skew does not pass for
lag.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.proto import config as names
from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from runstream.query.models import RankHealthReport
from runstream.query.ranks import STRAGGLER_RATIO
from tests.e2e.test_pipeline_e2e import start_serve, stop
from tests.helpers import local_store_env, wait_for

WORLD_SIZE = 4
STEPS = 80
STEP_S = 0.100
SLOW_RANK = 3
SLOW_STEP_S = STEP_S * 1.3

# One rank: join the run, wait for the others at the barrier, then time every step.
RANK_SCRIPT = """
import sys, time
from pathlib import Path

import runstream
from runstream.telemetry import StepTimer

steps, step_s, barrier = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
with runstream.init(experiment="straggler") as run:
    timer = StepTimer(run)
    (barrier / f"ready-{run.rank}").touch()
    while len(list(barrier.glob("ready-*"))) < run.world_size:
        time.sleep(0.002)
    for step in range(steps):
        with timer.step(step):
            time.sleep(step_s)  # the step's work
            run.log({"loss": 1.0 / (step + 1)}, step=step)
"""


@pytest.fixture
def service_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = local_store_env(tmp_path, RUNSTREAM_SYSTEM_METRICS_S="0")
    yield env


def run_ranks(env: dict[str, str], run_id: str, barrier: Path) -> None:
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(STEPS),
             str(SLOW_STEP_S if r == SLOW_RANK else STEP_S), str(barrier)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(WORLD_SIZE),
                 "RUNSTREAM_RUN_ID": run_id},
        )
        for r in range(WORLD_SIZE)
    ]
    assert [p.wait(timeout=180) for p in procs] == [0] * WORLD_SIZE


def health_or_none(client: Client, run_id: str) -> RankHealthReport | None:
    try:
        return client.rank_health(run_id)
    except NotFoundError:  # not ingested yet
        return None


def all_in(report: RankHealthReport | None) -> bool:
    return report is not None and len(report.ranks) == WORLD_SIZE and all(
        r.steps == STEPS and r.status == "FINISHED" for r in report.ranks)


def test_get_rank_health_names_the_slow_rank(service_env: dict[str, str],
                                             tmp_path: Path) -> None:
    serve = start_serve(service_env)
    run_id = f"e2e-straggler-{uuid.uuid4().hex[:8]}"
    addr = service_env["RUNSTREAM_QUERY_ADDR"]
    try:
        with Client(addr) as client:
            wait_for(client.healthy, timeout_s=120, what="runstream serve")
            run_ranks(service_env, run_id, tmp_path / "barrier")
            report = wait_for(lambda: health_or_none(client, run_id), all_in,
                              timeout_s=120, what="every step of every rank")
        assert report is not None
        assert report.suspects == (SLOW_RANK,), report
        assert report.lag_key == names.TELEMETRY_STEP_TIME
        median = report.median_step_time_p50_s
        slow = report.ranks[SLOW_RANK]
        others = [r for r in report.ranks if r.rank != SLOW_RANK]
        assert slow.step_time_p50_s > STRAGGLER_RATIO * median
        assert slow.problems[0] == (
            f"step time p50 {slow.step_time_p50_s / median:.2f}x the median rank")
        assert all(r.step_time_p50_s <= STRAGGLER_RATIO * median and not r.problems
                   for r in others)
        # The slow rank falls further behind at every step (a stall of one other rank
        # on a loaded machine may put that one behind too, so: beyond the others' median).
        assert slow.lag_p50_ms > statistics.median(r.lag_p50_ms for r in others)
        assert slow.lag_max_ms > statistics.median(r.lag_max_ms for r in others)
        assert all(r.data_wait_p50_s < r.step_time_p50_s for r in report.ranks)
        assert all(r.last_seen_ms > 0 and r.node for r in report.ranks)

        cli = [sys.executable, "-m", "runstream.cli.main", "ranks", run_id, "--addr", addr]
        text = subprocess.run(cli, env=service_env, capture_output=True, text=True,
                              timeout=60, check=True).stdout
        assert f"\nsuspects (slowest first): {SLOW_RANK}\n  rank {SLOW_RANK}: step time p50 " \
            in text, text
        as_json = json.loads(subprocess.run([*cli, "--json"], env=service_env,
                                            capture_output=True, text=True, timeout=60,
                                            check=True).stdout)
        assert as_json["suspects"] == [SLOW_RANK]
    finally:
        assert stop(serve) == 0
