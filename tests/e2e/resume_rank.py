"""One rank of the resume e2e job: logs ``loss`` for N steps without step=, so where the
steps start says where init put them. Resumes when RUNSTREAM_RESUME=1 is set.

Usage: resume_rank.py STEPS ATTEMPT; value of the i-th call: see :func:`value`.
"""

from __future__ import annotations

import sys

import runstream


def value(rank: int, attempt: int, i: int) -> float:
    return rank * 1000.0 + attempt * 100.0 + i + 0.25


def main() -> None:
    steps, attempt = int(sys.argv[1]), int(sys.argv[2])
    with runstream.init(experiment="e2e-resume", params={"lr": 0.1}) as run:
        for i in range(steps):
            run.log({"loss": value(run.rank, attempt, i)})


if __name__ == "__main__":
    main()
