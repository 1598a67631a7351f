"""One rank of a live job for the FollowRun tests: logs ``steps`` steps of two keys, a few
milliseconds apart, right up to ``finish`` (the tail is what a follower must not lose)."""

from __future__ import annotations

import sys
import time

import runstream

KEYS = ("loss", "acc")


def main() -> None:
    steps, pause_s = int(sys.argv[1]), float(sys.argv[2])
    with runstream.init(experiment="follow") as run:
        for step in range(steps):
            run.log({key: run.rank * 1000.0 + step for key in KEYS}, step=step)
            time.sleep(pause_s)


if __name__ == "__main__":
    main()
