"""The browser tests' data, written by the real SDK (one process per job, as training does).

``python -m tests.browser.data_job MODE SPEC`` with SPEC a JSON object (run ids and paths
chosen by the test, so it knows what to look for):

* ``sweep``: ``{"runs": [{"run_id", "experiment", "lr", "batch_size"}], "steps"}``: one
  run after the other in this process, each logging ``loss`` and ``acc`` per step.
* ``rank``: one rank (``RANK``/``WORLD_SIZE``/``RUNSTREAM_RUN_ID`` from the environment)
  of a distributed job, ``{"steps", "slow_rank", "diverge_step", "barrier"}``: every step
  timed with StepTimer; the slow rank sleeps longer, so its steps' timestamps fall behind,
  and from ``diverge_step`` on its loss departs from the others'.
* ``long``: ``{"run_id", "points"}``: one series ``loss`` of that many steps.
* ``artifact``: ``{"run_id", "artifact", "input"}``: a run that logs a file as an
  artifact and another local file (no DVC) as its input.
* ``live``: ``{"run_id", "stop", "interval_s"}``: logs ``loss`` every ``interval_s``
  until the file ``stop`` exists, then finishes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import runstream
from runstream.telemetry import StepTimer


def sweep(spec: dict[str, Any]) -> None:
    steps = int(spec["steps"])
    for r in spec["runs"]:
        lr, batch = float(r["lr"]), int(r["batch_size"])
        with runstream.init(experiment=r["experiment"], run_id=r["run_id"],
                            name=r.get("name"), params={"lr": lr, "batch_size": batch},
                            tags={"team": "vision"}) as run:
            for step in range(steps):
                run.log({"loss": math.exp(-lr * step) + batch / 1e4,
                         "acc": 1.0 - math.exp(-lr * step) / 2}, step=step)


def rank(spec: dict[str, Any]) -> None:
    steps, slow, diverge = int(spec["steps"]), int(spec["slow_rank"]), int(spec["diverge_step"])
    barrier = Path(spec["barrier"])
    with runstream.init(experiment=spec["experiment"], params={"lr": 0.1}) as run:
        timer = StepTimer(run)
        (barrier / f"ready-{run.rank}").touch()
        while len(list(barrier.glob("ready-*"))) < run.world_size:
            time.sleep(0.002)
        step_s = float(spec["slow_step_s"] if run.rank == slow else spec["step_s"])
        for step in range(steps):
            with timer.step(step):
                time.sleep(step_s)  # the step's work
                # Ranks agree but for a little noise that takes turns being the extreme.
                loss = 1.0 / (step + 1) + ((step * 7 + run.rank * 13) % 5) * 1e-4
                if run.rank == slow and step >= diverge:
                    loss += 5.0 + step
                run.log({"loss": loss}, step=step)


def long(spec: dict[str, Any]) -> None:
    points = int(spec["points"])
    with runstream.init(experiment=spec["experiment"], run_id=spec["run_id"],
                        name="long-series") as run:
        for step in range(points):
            # A smooth decay with a spike every 10,007 steps: downsampling must keep spikes.
            run.log({"loss": 1.0 / (1 + step / 1000) + (3.0 if step % 10_007 == 0 else 0.0)},
                    step=step)


def artifact(spec: dict[str, Any]) -> None:
    with runstream.init(experiment=spec["experiment"], run_id=spec["run_id"],
                        name="with-artifact", params={"lr": 0.2}) as run:
        run.log_input(spec["input"], name="train.csv")
        for step in range(10):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.log_artifact(spec["artifact"], name="model.bin")


def live(spec: dict[str, Any]) -> None:
    stop, interval_s = Path(spec["stop"]), float(spec["interval_s"])
    with runstream.init(experiment=spec["experiment"], run_id=spec["run_id"],
                        name="live") as run:
        step = 0
        while not stop.exists():
            run.log({"loss": 1.0 / (step + 1)}, step=step)
            run.flush(5.0)
            step += 1
            time.sleep(interval_s)


MODES = {"sweep": sweep, "rank": rank, "long": long, "artifact": artifact, "live": live}

if __name__ == "__main__":
    MODES[sys.argv[1]](json.loads(sys.argv[2]))
