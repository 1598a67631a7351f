"""One rank of the e2e job: deterministic values so the test can check every point."""

from __future__ import annotations

import sys

import runstream


def value(rank: int, step: int, key: str) -> float:
    return rank * 1000.0 + step + (0.25 if key == "loss" else 0.5)


def main() -> None:
    steps = int(sys.argv[1])
    with runstream.init(experiment="e2e", params={"lr": 0.1, "opt": {"name": "sgd"}}) as run:
        for step in range(steps):
            run.log({"loss": value(run.rank, step, "loss"), "acc": value(run.rank, step, "acc")},
                    step=step)


if __name__ == "__main__":
    main()
