"""Ranks grouped into runs by real processes, with the environments real launchers set.

A parent python process stands in for the launcher process (the torchrun agent, MPICH's
hydra_pmi_proxy, slurmstepd's batch step) and starts real children with exactly the
variables that launcher gives its children; each child calls runstream.init through the
local spool, and the test reads back the events they wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import read_spool

# One rank: init through the spool, say what it got, finish.
CHILD = r"""
import json, os
import runstream
from runstream.launcher import detect_launcher
info = detect_launcher(os.environ)
run = runstream.init(experiment="launchers")
# One write() under PIPE_BUF, so sibling ranks sharing the pipe never interleave lines
# (print writes the text and its newline separately).
os.write(1, (json.dumps({"run_id": run.id, "rank": run.rank, "world_size": run.world_size,
                         "restart": info.restart, "launcher": info.launcher,
                         "pid": os.getpid()}) + "\n").encode())
run.finish()
"""

# The launcher process: starts nproc children per attempt, attempts 0..restarts, each
# attempt after the last one exited (as torch's agent does in _restart_workers).
# Kinds: "torchrun" (torch's default log directory: a mkdtemp made once per agent),
# "torchrun-wrapped" (the same, each worker run by a bash wrapper of its own),
# "torchrun-nolog" (`--log-dir /dev/null`), "hydra", "hydra-wrapped". The optional 5th
# argument is the children's interpreter (when the agent runs under another name).
AGENT = r"""
import os, subprocess, sys, tempfile
kind, nproc, restarts, child = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
python = sys.argv[5] if len(sys.argv) > 5 else sys.executable
if kind.startswith("torchrun") and kind != "torchrun-nolog":
    # DefaultLogsSpecs._make_log_dir: <mkdtemp torchelastic_>/<mkdtemp none_>
    run_log_dir = tempfile.mkdtemp(prefix="none_", dir=tempfile.mkdtemp(prefix="torchelastic_"))
for restart in range(restarts + 1):
    procs = []
    for local in range(nproc):
        if kind.startswith("torchrun"):
            error_file = ("/dev/null/%d/error.json" % local if kind == "torchrun-nolog" else
                          os.path.join(run_log_dir, "attempt_%d" % restart, str(local),
                                       "error.json"))
            # torch/distributed/elastic/agent/server/local_elastic_agent.py _start_workers
            env = {
                "LOCAL_RANK": str(local), "RANK": str(local), "GROUP_RANK": "0",
                "ROLE_RANK": str(local), "ROLE_NAME": "default",
                "LOCAL_WORLD_SIZE": str(nproc), "WORLD_SIZE": str(nproc),
                "GROUP_WORLD_SIZE": "1", "ROLE_WORLD_SIZE": str(nproc),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                "TORCHELASTIC_RESTART_COUNT": str(restart),
                "TORCHELASTIC_MAX_RESTARTS": str(restarts),
                "TORCHELASTIC_RUN_ID": "none", "TORCHELASTIC_USE_AGENT_STORE": "True",
                "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "OMP_NUM_THREADS": "1",
                "TORCHELASTIC_ERROR_FILE": error_file,
            }
        else:
            # MPICH 5's hydra_pmi_proxy for `mpiexec -n <nproc>` on one host, as measured
            env = {"PMI_RANK": str(local), "PMI_SIZE": str(nproc), "PMI_FD": str(9 + local),
                   "PMI_HOSTNAME": "localhost", "HYDI_CONTROL_FD": "7",
                   "MPI_LOCALRANKID": str(local), "MPI_LOCALNRANKS": str(nproc)}
        argv = [python, "-c", child]
        if kind.endswith("-wrapped"):
            # Not the last command, so bash cannot exec it: the worker's parent is bash.
            argv = ["bash", "-c", '"$0" -c "$1"; exit $?', *argv[:1], child]
        procs.append(subprocess.Popen(argv, env=dict(os.environ, **env)))
    if any(p.wait() for p in procs):
        sys.exit(1)
"""

_LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMIX_", "PMI_", "MPI_LOCAL", "TORCHELASTIC_",
                      "PRTE_", "RUNSTREAM_")
_LAUNCHER_NAMES = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"}


def clean_env(tmp_path: Path) -> dict[str, str]:
    """os.environ without any launcher's or Runstream's variables (the test itself may
    run under SLURM or torchrun), with a home and spool of this test's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_LAUNCHER_PREFIXES) and k not in _LAUNCHER_NAMES}
    return env | {"RUNSTREAM_HOME": str(tmp_path / "home"),
                  "RUNSTREAM_SPOOL_DIR": str(tmp_path / "spool"),
                  "RUNSTREAM_SYSTEM_METRICS_S": "0"}


def reports(out: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert out.returncode == 0, out.stderr[-4000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def started(tmp_path: Path) -> set[tuple[str, int, int]]:
    """(run id, rank, world size) of every run_started event in the test's spool."""
    return {(e.run_id, e.rank, e.world_size) for e in read_spool(tmp_path / "spool")
            if e.WhichOneof("body") == "run_started"}


def agent(kind: str, nproc: int, restarts: int, env: dict[str, str],
          interpreter: str = sys.executable) -> list[dict[str, Any]]:
    return reports(subprocess.run(
        [interpreter, "-c", AGENT, kind, str(nproc), str(restarts), CHILD, sys.executable],
        env=env, capture_output=True, text=True, timeout=240))


@pytest.mark.parametrize("kind", ["torchrun", "torchrun-wrapped", "torchrun-nolog"])
def test_plain_torchrun_ranks_share_one_run_that_survives_elastic_restarts(tmp_path, kind):
    """`torchrun --nproc-per-node 4 --max-restarts 1 train.py`: 4 workers, restarted once
    by the same agent; every one of the 8 processes joins one run."""
    env = clean_env(tmp_path)
    got = agent(kind, 4, 1, env)
    assert len(got) == 8 and len({r["pid"] for r in got}) == 8
    [run_id] = {r["run_id"] for r in got}
    assert run_id.startswith("torchrun-")
    assert sorted((r["restart"], r["rank"], r["world_size"]) for r in got) == [
        (restart, rank, 4) for restart in (0, 1) for rank in range(4)]
    assert started(tmp_path) == {(run_id, rank, 4) for rank in range(4)}
    # The next torchrun is another agent: another run.
    again = agent(kind, 2, 0, env)
    assert {r["run_id"] for r in again} != {run_id} and len({r["run_id"] for r in again}) == 1


def test_mpich_hydra_ranks_on_one_node_share_one_run(tmp_path):
    env = clean_env(tmp_path)
    got = agent("hydra", 3, 0, env)
    [run_id] = {r["run_id"] for r in got}
    assert run_id.startswith("pmi-") and {r["launcher"] for r in got} == {"pmi"}
    assert started(tmp_path) == {(run_id, rank, 3) for rank in range(3)}
    assert {r["run_id"] for r in agent("hydra", 3, 0, env)} != {run_id}


def test_mpich_hydra_ranks_behind_a_wrapper_script_find_their_proxy(tmp_path):
    """`mpiexec -n 3 bash run.sh`: each rank's parent is a bash of its own; the process
    named hydra_pmi_proxy above them (here python under that name) names the run."""
    proxy = tmp_path / "bin" / "hydra_pmi_proxy"
    proxy.parent.mkdir()
    proxy.symlink_to(sys.executable)
    env = clean_env(tmp_path)
    got = agent("hydra-wrapped", 3, 0, env, interpreter=str(proxy))
    assert sorted(r["rank"] for r in got) == [0, 1, 2]
    [run_id] = {r["run_id"] for r in got}
    assert run_id.startswith("pmi-")
    assert started(tmp_path) == {(run_id, rank, 3) for rank in range(3)}


def _batch_env(tmp_path: Path, restart: int) -> dict[str, str]:
    """The batch script's environment under `sbatch --ntasks=4 job.sh` (no SLURM_STEP_ID)."""
    env = clean_env(tmp_path) | {
        "SLURM_JOB_ID": "4711", "SLURM_JOBID": "4711", "SLURM_JOB_NAME": "job.sh",
        "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_TASKS_PER_NODE": "4", "SLURM_NODELIST": "n1",
        "SLURM_JOB_NODELIST": "n1", "SLURM_CPUS_ON_NODE": "4", "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_GTIDS": "0",
        "SLURM_TASK_PID": str(os.getpid()), "SLURM_SUBMIT_DIR": str(tmp_path)}
    if restart:
        env["SLURM_RESTART_COUNT"] = str(restart)
    return env


# job.sh: two trainings in parallel (`&`), then one more after them.
_BATCH_SCRIPT = """
"$PY" -c "$CHILD" & "$PY" -c "$CHILD" & wait
"$PY" -c "$CHILD"
"""


def test_each_python_line_of_a_batch_script_is_its_own_run_and_a_requeue_meets_them(tmp_path):
    runs = []
    for restart in (0, 1):
        env = _batch_env(tmp_path, restart) | {"PY": sys.executable, "CHILD": CHILD}
        got = reports(subprocess.run(["bash", "-c", _BATCH_SCRIPT], env=env,
                                     capture_output=True, text=True, timeout=240))
        assert [(r["rank"], r["world_size"], r["restart"]) for r in got] == [
            (0, 1, restart)] * 3
        # The parallel pair took b0 and b1 in whichever order their locks went; the
        # line after them is b2 in every attempt.
        assert {r["run_id"] for r in got[:2]} == {"slurm-4711-b0", "slurm-4711-b1"}
        assert got[2]["run_id"] == "slurm-4711-b2"
        runs.append({r["run_id"] for r in got})
    assert runs[0] == runs[1]
    assert started(tmp_path) == {(f"slurm-4711-b{k}", 0, 1) for k in range(3)}


def test_each_torchrun_of_a_batch_script_is_one_run(tmp_path):
    env = _batch_env(tmp_path, 0)
    first = agent("torchrun", 3, 0, env)
    second = agent("torchrun", 2, 0, env)
    assert {r["run_id"] for r in first} == {"slurm-4711-b0"}
    assert {r["run_id"] for r in second} == {"slurm-4711-b1"}
    assert started(tmp_path) == ({("slurm-4711-b0", r, 3) for r in range(3)}
                                 | {("slurm-4711-b1", r, 2) for r in range(2)})
