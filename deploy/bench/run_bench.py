"""`make bench`: run every benchmark of deploy/bench and print their tables.

Each ``bench_<part>.py`` is a standalone script that measures one part against a
baseline measured in the same run and prints a table of medians. Pass part names to
run a subset: ``python deploy/bench/run_bench.py producer query``.
``growth`` (bench_growth.py: how each cost grows with the store, up to 100M points and 1M
runs; ~10 minutes and ~1 GiB of temp disk; BENCH_GROWTH_MAX=1M for a 3-minute run).
``ui`` (bench_ui.py: the web UI in headless Chromium, /usr/bin/chromium from `make browser`,
next to the MLflow UI on the same data; ~5 minutes, most of it MLflow loading 5,000 runs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parts = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    failed = []
    for part in parts:
        script = HERE / f"bench_{part}.py"
        if not script.exists():
            print(f"bench: no benchmark named {part!r}", file=sys.stderr)
            return 2
        print(f"\n=== {part} ===", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(part)
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
