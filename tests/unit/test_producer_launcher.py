"""Rank and run id detection from launcher environments (runstream.launcher)."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from runstream import launcher
from runstream.launcher import (
    LauncherInfo,
    ProcessFacts,
    detect_launcher,
    process_facts,
    resolve_run_id,
    sanitize_run_id,
)
from runstream.proto.errors import ConfigError
from runstream.proto.validation import RUN_ID_PATTERN


def test_no_launcher_is_a_single_process():
    info = detect_launcher({})
    assert info == LauncherInfo(launcher="none", rank=0, world_size=1, local_rank=0, run_id=None)
    run_id = resolve_run_id(None, None, info)
    assert len(run_id) == 32 and RUN_ID_PATTERN.fullmatch(run_id)
    assert resolve_run_id(None, None, info) != run_id


def test_torchrun():
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job42"}
    info = detect_launcher(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("torchrun", 3, 8, 1)
    assert info.run_id == "job42"
    assert resolve_run_id(None, None, info) == "job42"


def test_torchrun_ignores_none_run_id_and_falls_back_to_slurm_step():
    env = {"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "none"}
    assert detect_launcher(env).run_id is None
    env |= {"SLURM_JOB_ID": "777", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
            "SLURM_NTASKS": "1"}
    info = detect_launcher(env)
    assert info.launcher == "torchrun"
    assert info.world_size == 2
    assert info.run_id == "slurm-777.0"


def test_slurm():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
           "SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "2"}
    info = detect_launcher(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("slurm", 5, 16, 1)
    assert info.run_id == "slurm-123456.2"


def test_openmpi_and_pmi():
    env = {"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4",
           "OMPI_COMM_WORLD_LOCAL_RANK": "0", "PMIX_NAMESPACE": "prterun-host-1234@1"}
    info = detect_launcher(env)
    assert (info.launcher, info.rank, info.world_size, info.local_rank) == ("openmpi", 2, 4, 0)
    assert info.run_id == "mpi-prterun-host-1234-1"
    info = detect_launcher({"PMI_RANK": "1", "PMI_SIZE": "2"})
    assert (info.launcher, info.rank, info.world_size) == ("pmi", 1, 2)


def test_multi_rank_without_shared_id_is_an_error_that_says_what_to_do():
    info = detect_launcher({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="RUNSTREAM_RUN_ID"):
        resolve_run_id(None, None, info)
    assert resolve_run_id(None, "shared-1", info) == "shared-1"
    assert resolve_run_id("explicit", "shared-1", info) == "explicit"


def test_precedence_argument_env_launcher():
    info = detect_launcher({"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "abc"})
    assert resolve_run_id(None, None, info) == "abc"
    assert resolve_run_id(None, "from-env", info) == "from-env"
    assert resolve_run_id("from-arg", "from-env", info) == "from-arg"


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "x", "WORLD_SIZE": "2"},
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"RANK": "-1", "WORLD_SIZE": "2"},
        {"RANK": "0", "WORLD_SIZE": "0"},
        {"OMPI_COMM_WORLD_RANK": "0"},
        {"SLURM_PROCID": "3", "SLURM_NTASKS": "2"},
    ],
)
def test_malformed_or_conflicting_launcher_values_raise_config_error(env):
    with pytest.raises(ConfigError) as e:
        detect_launcher(env)
    assert any(n in str(e.value) for n in (*env, "OMPI_COMM_WORLD_SIZE", "rank", "world size"))


def test_sanitize_run_id():
    assert sanitize_run_id("job 1/step:2") == "job-1-step-2"
    assert sanitize_run_id("   ") is None
    long = "x" * 200
    cleaned = sanitize_run_id(long)
    assert cleaned is not None and len(cleaned) == 64 and RUN_ID_PATTERN.fullmatch(cleaned)
    assert cleaned == sanitize_run_id(long)
    assert cleaned != sanitize_run_id("x" * 199 + "y")


def test_torchrun_shape_from_the_environment_torch_sets():
    """Rank 5 of `torchrun --nnodes 2 --nproc-per-node 4 --rdzv-id job42 ...` on the second
    node: every variable torch.distributed.elastic's agent sets for its workers."""
    env = {
        "LOCAL_RANK": "1", "RANK": "5", "GROUP_RANK": "1", "ROLE_RANK": "5",
        "ROLE_NAME": "default", "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8",
        "GROUP_WORLD_SIZE": "2", "ROLE_WORLD_SIZE": "8", "MASTER_ADDR": "node-a",
        "MASTER_PORT": "29500", "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0", "TORCHELASTIC_RUN_ID": "job42",
        "TORCHELASTIC_USE_AGENT_STORE": "False", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "TORCHELASTIC_ERROR_FILE": "/tmp/torchelastic_x/job42_y/attempt_0/1/error.json",
        "OMP_NUM_THREADS": "1",
    }
    assert detect_launcher(env) == LauncherInfo(
        launcher="torchrun", rank=5, world_size=8, local_rank=1, run_id="job42", nnodes=2,
        nproc_per_node=4, agent="/tmp/torchelastic_x/job42_y")
    # A bare RANK/WORLD_SIZE launch (not torchrun's agent) states no shape.
    bare = detect_launcher({"RANK": "1", "WORLD_SIZE": "2", "RUNSTREAM_RUN_ID": "x"})
    assert (bare.nnodes, bare.nproc_per_node) == (0, 0)


def test_slurm_shape_from_srun():
    """Task 5 of `srun -N 2 --ntasks-per-node 4 python train.py` inside an sbatch job."""
    env = {
        "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS": "8",
        "SLURM_NPROCS": "8", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4", "SLURM_TASKS_PER_NODE": "4(x2)",
        "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_JOB_ID": "123456", "SLURM_STEP_ID": "0",
        "SLURM_NODELIST": "gpu[01-02]", "SLURM_STEP_NODELIST": "gpu[01-02]",
    }
    info = detect_launcher(env)
    assert (info.launcher, info.nnodes, info.nproc_per_node) == ("slurm", 2, 4)
    assert info.run_id == "slurm-123456.0"
    # `srun -N 2 -n 6`: no SLURM_NTASKS_PER_NODE, the step's list says 3 on each node.
    env = {k: v for k, v in env.items() if k != "SLURM_NTASKS_PER_NODE"} | {
        "SLURM_NTASKS": "6", "SLURM_NPROCS": "6", "SLURM_STEP_NUM_TASKS": "6",
        "SLURM_TASKS_PER_NODE": "3(x2)", "SLURM_STEP_TASKS_PER_NODE": "3(x2)"}
    assert detect_launcher(env).nproc_per_node == 3
    # `srun -N 2 -n 5`: 3 and 2 tasks, no single per-node count.
    env |= {"SLURM_PROCID": "4", "SLURM_NTASKS": "5", "SLURM_STEP_TASKS_PER_NODE": "3,2"}
    assert (detect_launcher(env).nnodes, detect_launcher(env).nproc_per_node) == (2, 0)


def test_openmpi_and_mpich_shape():
    """Rank 5 of `mpirun -np 8 --map-by ppr:4:node python train.py` (Open MPI 5)."""
    env = {
        "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
        "OMPI_COMM_WORLD_NODE_RANK": "1", "OMPI_UNIVERSE_SIZE": "8", "PMIX_RANK": "5",
        "PMIX_NAMESPACE": "prterun-host-1234@1",
    }
    info = detect_launcher(env)
    assert (info.launcher, info.nnodes, info.nproc_per_node) == ("openmpi", 2, 4)
    # MPICH's Hydra: `mpiexec -n 4 -ppn 2`.
    info = detect_launcher({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1",
                            "MPI_LOCALNRANKS": "2", "PMI_FD": "6"})
    assert (info.launcher, info.nnodes, info.nproc_per_node) == ("pmi", 2, 2)


def test_a_shape_that_cannot_hold_the_job_is_unknown_and_a_malformed_one_raises():
    # A batch script's single task sees the allocation's node count, not its step's.
    info = detect_launcher({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_NNODES": "4"})
    assert (info.nnodes, info.nproc_per_node) == (0, 0)
    with pytest.raises(ConfigError, match="LOCAL_WORLD_SIZE"):
        detect_launcher({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "two"})


# --- shared ids the launcher does not name (issue 11) -----------------------------------------


AGENT_DIR = "/tmp/torchelastic_ab12/none_cd34"


def _rank_env(rank: int, world: int, local_world: int, groups: int, restart: int = 0,
              run_id: str = "none", agent: str | None = AGENT_DIR) -> dict[str, str]:
    """Every variable torch.distributed.elastic's agent sets for worker ``rank`` of
    ``torchrun --nnodes <groups> --nproc-per-node <local_world>`` (static rendezvous:
    TORCHELASTIC_RUN_ID is --rdzv-id's default, "none"). The error file lies in the
    agent's run log directory ``agent``; None: `--log-dir /dev/null`, no such directory."""
    base = agent if agent is not None else "/dev/null"
    attempt = f"attempt_{restart}/" if agent is not None else ""
    return {
        "LOCAL_RANK": str(rank % local_world), "RANK": str(rank),
        "GROUP_RANK": str(rank // local_world), "ROLE_RANK": str(rank),
        "ROLE_NAME": "default", "LOCAL_WORLD_SIZE": str(local_world),
        "WORLD_SIZE": str(world), "GROUP_WORLD_SIZE": str(groups),
        "ROLE_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
        "TORCHELASTIC_RESTART_COUNT": str(restart), "TORCHELASTIC_MAX_RESTARTS": "3",
        "TORCHELASTIC_RUN_ID": run_id, "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "OMP_NUM_THREADS": "1",
        "TORCHELASTIC_ERROR_FILE": f"{base}/{attempt}{rank % local_world}/error.json",
    }


def _child(pid: int, ppid: int = 4242, parent_start: int = 90_000,
           host: str = "gpu01") -> ProcessFacts:
    return ProcessFacts(host=host, boot_id="6f1c", pid=pid, start=pid * 10, ppid=ppid,
                        parent_start=parent_start)


def test_plain_torchrun_on_one_node_names_the_run_after_its_agent():
    """`torchrun --nproc-per-node 8 train.py`, the README's command: every rank derives
    one id from its agent's log directory and keeps it across elastic restarts (the agent
    makes the directory once and restarts workers itself), even through a wrapper script
    (a parent of its own per rank)."""
    ids = {resolve_run_id(None, None, detect_launcher(_rank_env(r, 8, 8, 1)),
                          facts=_child(pid=5000 + r, ppid=6000 + r)) for r in range(8)}
    assert len(ids) == 1
    [run_id] = ids
    assert run_id.startswith("torchrun-gpu01-") and RUN_ID_PATTERN.fullmatch(run_id)
    restarted = detect_launcher(_rank_env(3, 8, 8, 1, restart=2))
    assert restarted.restart == 2 and restarted.one_node and restarted.agent == AGENT_DIR
    assert resolve_run_id(None, None, restarted, facts=_child(pid=7003)) == run_id
    # Another agent is another run; so is the same directory name on another host.
    other = detect_launcher(_rank_env(0, 8, 8, 1, agent="/tmp/torchelastic_ab12/none_ef56"))
    assert resolve_run_id(None, None, other, facts=_child(5000)) != run_id
    info = detect_launcher(_rank_env(0, 8, 8, 1))
    assert resolve_run_id(None, None, info, facts=_child(5000, host="gpu02")) != run_id
    # An error file laid out otherwise (attempt or local rank not this worker's) is no
    # agent directory.
    env = _rank_env(0, 8, 8, 1) | {"TORCHELASTIC_ERROR_FILE": f"{AGENT_DIR}/attempt_1/0/error.json"}
    assert detect_launcher(env).agent == ""
    env = _rank_env(0, 8, 8, 1) | {"TORCHELASTIC_ERROR_FILE": f"{AGENT_DIR}/attempt_0/3/error.json"}
    assert detect_launcher(env).agent == ""


def test_plain_torchrun_without_a_log_directory_names_the_run_after_the_agent_process():
    """`torchrun --log-dir /dev/null ...`: no agent directory, so the agent process, which
    every worker is a child of and which torch keeps across restarts, names the run."""
    ids = {resolve_run_id(None, None, detect_launcher(_rank_env(r, 8, 8, 1, agent=None)),
                          facts=_child(pid=5000 + r)) for r in range(8)}
    assert len(ids) == 1
    [run_id] = ids
    assert run_id.startswith("torchrun-gpu01-4242-") and RUN_ID_PATTERN.fullmatch(run_id)
    restarted = detect_launcher(_rank_env(3, 8, 8, 1, restart=2, agent=None))
    assert restarted.agent == ""
    assert resolve_run_id(None, None, restarted, facts=_child(pid=7003)) == run_id
    # Another agent (a later torchrun, or the same pid handed out again) is another run.
    info = detect_launcher(_rank_env(0, 8, 8, 1, agent=None))
    assert resolve_run_id(None, None, info, facts=_child(5000, ppid=4243)) != run_id
    assert resolve_run_id(None, None, info, facts=_child(5000, parent_start=91_000)) != run_id
    assert resolve_run_id(None, None, info, facts=_child(5000, host="gpu02")) != run_id
    # One node also when GROUP_WORLD_SIZE is missing but LOCAL_WORLD_SIZE == WORLD_SIZE.
    env = {k: v for k, v in _rank_env(1, 4, 4, 1).items() if k != "GROUP_WORLD_SIZE"}
    assert detect_launcher(env).one_node
    # --nproc-per-node 1: still the agent's run, so a restart is an attempt of it.
    single = detect_launcher(_rank_env(0, 1, 1, 1))
    assert resolve_run_id(None, None, single, facts=_child(1)) == resolve_run_id(
        None, None, single, facts=_child(2))


def test_rdzv_id_and_runstream_run_id_still_win_over_the_agent():
    info = detect_launcher(_rank_env(2, 8, 8, 1, run_id="exp-7"))
    assert resolve_run_id(None, None, info, facts=_child(1)) == "exp-7"
    info = detect_launcher(_rank_env(2, 8, 8, 1))
    assert resolve_run_id(None, "mine", info, facts=_child(1)) == "mine"


def test_multi_node_static_torchrun_says_exactly_what_to_add_to_the_command():
    info = detect_launcher(_rank_env(9, 16, 8, 2))
    assert not info.one_node and info.run_id is None
    with pytest.raises(ConfigError) as e:
        resolve_run_id(None, None, info, facts=_child(1))
    message = str(e.value)
    assert "\n" not in message
    assert "RUNSTREAM_RUN_ID=<same value on every node> torchrun ..." in message
    assert "torchrun --rdzv-id=<same value on every node> ..." in message
    assert "rank 9 of 16 (torchrun, 2 nodes)" in message


def test_an_orphaned_rank_does_not_take_init_as_its_parent():
    info = detect_launcher(_rank_env(1, 4, 4, 1, agent=None))
    with pytest.raises(ConfigError, match="RUNSTREAM_RUN_ID"):
        resolve_run_id(None, None, info, facts=_child(5001, ppid=1))


def _hydra_env(rank: int, size: int, local_size: int) -> dict[str, str]:
    """What MPICH 5's Hydra (`mpiexec -n <size> -ppn <local_size>`) sets per rank, as
    measured with the mpich wheel's mpiexec."""
    return {"PMI_RANK": str(rank), "PMI_SIZE": str(size), "PMI_FD": "9",
            "PMI_HOSTNAME": "gpu01", "MPI_LOCALRANKID": str(rank % local_size),
            "MPI_LOCALNRANKS": str(local_size), "HYDI_CONTROL_FD": "7"}


def test_mpich_hydra_on_one_node_names_the_run_after_its_proxy():
    ids = {resolve_run_id(None, None, detect_launcher(_hydra_env(r, 4, 4)),
                          facts=_child(6000 + r, ppid=777)) for r in range(4)}
    assert len(ids) == 1 and ids.pop().startswith("pmi-gpu01-777-")
    info = detect_launcher(_hydra_env(3, 4, 2))
    assert not info.one_node
    with pytest.raises(ConfigError, match=r"mpiexec -genv RUNSTREAM_RUN_ID <same value> \.\.\."):
        resolve_run_id(None, None, info, facts=_child(1))
    openmpi = detect_launcher({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4",
                               "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})
    with pytest.raises(ConfigError, match=r"mpirun -x RUNSTREAM_RUN_ID=<same value> \.\.\."):
        resolve_run_id(None, None, openmpi, facts=_child(1))


def test_hydra_ranks_behind_a_wrapper_script_find_their_proxy():
    """`mpiexec -n 2 bash run.sh`: each rank's parent is a bash of its own; the nearest
    hydra_pmi_proxy above names the run, as for ranks started directly."""
    proxy, mpiexec = (777, 90_000, "hydra_pmi_proxy"), (770, 80_000, "mpiexec")
    direct = ProcessFacts(host="gpu01", boot_id="6f1c", pid=10, start=1, ppid=777,
                          parent_start=90_000, ancestors=(proxy, mpiexec))
    wrapped = [ProcessFacts(host="gpu01", boot_id="6f1c", pid=20 + r, start=2, ppid=900 + r,
                            parent_start=95_000 + r,
                            ancestors=((900 + r, 95_000 + r, "bash"), proxy, mpiexec))
               for r in range(2)]
    ids = {resolve_run_id(None, None, detect_launcher(_hydra_env(r, 2, 2)), facts=f)
           for r, f in ((0, direct), (0, wrapped[0]), (1, wrapped[1]))}
    assert len(ids) == 1 and ids.pop().startswith("pmi-gpu01-777-")
    # Only Hydra's proxy counts: torchrun's ranks are named after their own parent.
    info = detect_launcher(_rank_env(0, 2, 2, 1, agent=None))
    assert resolve_run_id(None, None, info, facts=wrapped[0]).startswith("torchrun-gpu01-900-")


def _batch_env(home: Path, restart: int = 0) -> dict[str, str]:
    """The batch script's environment under `sbatch --ntasks=4 -N 1 job.sh` (slurmstepd's
    batch step: the job's variables and task 0's ids, no SLURM_STEP_ID)."""
    env = {
        "SLURM_JOB_ID": "81234", "SLURM_JOBID": "81234", "SLURM_JOB_NAME": "job.sh",
        "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_TASKS_PER_NODE": "4", "SLURM_NODELIST": "gpu01",
        "SLURM_JOB_NODELIST": "gpu01", "SLURM_JOB_CPUS_PER_NODE": "4", "SLURM_CPUS_ON_NODE": "4",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_GTIDS": "0",
        "SLURM_TASK_PID": "31337", "SLURM_SUBMIT_DIR": "/home/u", "SLURM_SUBMIT_HOST": "login1",
        "SLURMD_NODENAME": "gpu01", "SLURM_CLUSTER_NAME": "c", "RUNSTREAM_HOME": str(home),
    }
    if restart:
        env["SLURM_RESTART_COUNT"] = str(restart)
    return env


def test_each_process_of_a_batch_script_is_its_own_run_of_world_size_one(tmp_path):
    info = detect_launcher(_batch_env(tmp_path))
    assert (info.launcher, info.rank, info.world_size, info.run_id) == ("slurm", 0, 1, None)
    assert info.batch_job == "81234" and info.state_dir == str(tmp_path / "launcher")
    first = resolve_run_id(None, None, info, facts=_child(100, ppid=50))
    second = resolve_run_id(None, None, info, facts=_child(200, ppid=50))
    assert (first, second) == ("slurm-81234-b0", "slurm-81234-b1")
    # init called again in the same process: the same run, not a third one.
    assert resolve_run_id(None, None, info, facts=_child(100, ppid=50)) == first
    # A requeued job counts again: its k-th process is the k-th run's next attempt.
    requeued = detect_launcher(_batch_env(tmp_path, restart=1))
    assert requeued.restart == 1
    assert [resolve_run_id(None, None, requeued, facts=_child(pid, ppid=60))
            for pid in (300, 400, 500)] == ["slurm-81234-b0", "slurm-81234-b1", "slurm-81234-b2"]
    # An explicit id takes no ordinal: the next process is still b2 of the first attempt.
    assert resolve_run_id(None, "named", info, facts=_child(600)) == "named"
    assert resolve_run_id(None, None, info, facts=_child(700)) == "slurm-81234-b2"


def test_torchrun_started_by_a_batch_script_is_one_run_per_torchrun(tmp_path):
    """Two `torchrun --nproc-per-node 4 train.py` lines in one sbatch script."""
    batch = _batch_env(tmp_path)
    ids = [resolve_run_id(None, None, detect_launcher(batch | _rank_env(r, 4, 4, 1, agent=dir_)),
                          facts=_child(1000 + r + 10 * ppid, ppid=ppid))
           for ppid, dir_ in ((70, "/tmp/torchelastic_1/none_a"), (80, None),
                              (90, "/tmp/torchelastic_2/none_b"))
           for r in range(4)]
    assert ids == ["slurm-81234-b0"] * 4 + ["slurm-81234-b1"] * 4 + ["slurm-81234-b2"] * 4


def test_srun_steps_keep_the_step_id_and_record_the_restart_count(tmp_path):
    env = _batch_env(tmp_path, restart=2) | {
        "SLURM_STEP_ID": "3", "SLURM_STEPID": "3", "SLURM_PROCID": "2",
        "SLURM_LOCALID": "2", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NUM_NODES": "1",
        "SLURM_STEP_TASKS_PER_NODE": "4"}
    info = detect_launcher(env)
    assert (info.rank, info.world_size, info.run_id, info.restart) == (2, 4, "slurm-81234.3", 2)
    assert info.batch_job == "" and info.state_dir == ""
    assert resolve_run_id(None, None, info) == "slurm-81234.3"
    assert not (tmp_path / "launcher").exists()
    # A task other than 0 without a step id is no batch step: nothing names its job.
    stray = detect_launcher(_batch_env(tmp_path) | {"SLURM_PROCID": "1"})
    assert (stray.rank, stray.world_size, stray.batch_job) == (1, 4, "")
    with pytest.raises(ConfigError, match="srun --export=ALL,RUNSTREAM_RUN_ID"):
        resolve_run_id(None, None, stray, facts=_child(1))


@pytest.mark.parametrize("env", [{"SLURM_RESTART_COUNT": "x"},
                                 {"TORCHELASTIC_RESTART_COUNT": "-1"}])
def test_a_malformed_restart_count_raises_config_error(tmp_path, env):
    base = _batch_env(tmp_path) if "SLURM_RESTART_COUNT" in env else _rank_env(0, 2, 2, 1)
    with pytest.raises(ConfigError, match=next(iter(env))):
        detect_launcher(base | env)


def test_an_unwritable_batch_counter_says_what_to_set(tmp_path):
    (tmp_path / "launcher").write_text("a file where the directory should be")
    info = detect_launcher(_batch_env(tmp_path))
    with pytest.raises(ConfigError, match="RUNSTREAM_HOME") as e:
        resolve_run_id(None, None, info, facts=_child(1))
    assert "RUNSTREAM_RUN_ID" in str(e.value)


def test_a_counter_line_cut_short_by_a_crash_is_not_merged_with_the_next(tmp_path):
    state = tmp_path / "launcher"
    state.mkdir()
    (state / "slurm-81234.0").write_text("gpu01 6f1c 100 1000\ngpu01 6f1c 20")
    info = detect_launcher(_batch_env(tmp_path))
    assert resolve_run_id(None, None, info, facts=_child(300)) == "slurm-81234-b2"
    assert resolve_run_id(None, None, info, facts=_child(300)) == "slurm-81234-b2"
    assert (state / "slurm-81234.0").read_text().splitlines() == [
        "gpu01 6f1c 100 1000", "gpu01 6f1c 20", "gpu01 6f1c 300 3000"]


class _FakeStore:
    """The default process group's key-value store: set, and a get that would block
    until the key is set (here: fails if it is not)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0

    def set(self, key: str, value: str) -> None:
        self.data[key] = value.encode()

    def get(self, key: str) -> bytes:
        self.gets += 1
        return self.data[key]


class _FakeDist:
    """torch.distributed as a process sees it after init_process_group."""

    def __init__(self, rank: int, store: _FakeStore, initialized: bool = True) -> None:
        self.rank, self.initialized = rank, initialized
        self.distributed_c10d = type("c10d", (), {"_get_default_store": lambda: store})

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def get_rank(self) -> int:
        return self.rank


def test_rank_0_shares_its_id_through_an_initialised_process_group(monkeypatch):
    """Multi-node static torchrun after init_process_group: rank 0's id (named after its
    agent, so stable across restarts) reaches every rank through the group's store, and
    rank 0 never waits for the others (a job where only rank 0 calls init still starts)."""
    store = _FakeStore()
    got = []
    for rank, host in ((0, "gpu01"), (9, "gpu02")):
        monkeypatch.setattr(launcher, "_torch_asks", itertools.count())
        monkeypatch.setitem(sys.modules, "torch.distributed", _FakeDist(rank, store))
        got.append(resolve_run_id(None, None, detect_launcher(_rank_env(rank, 16, 8, 2)),
                                  facts=_child(100 + rank, host=host)))
        assert store.gets == (0 if rank == 0 else 1)
    # Rank 9 on gpu02 holds rank 0's id, named after rank 0's agent on gpu01.
    assert got[0] == got[1] and got[0].startswith("torchrun-gpu01-")
    # A second init in the same processes reads a key of its own.
    assert list(store.data) == ["runstream/run_id/0"]
    # Imported but not initialised: the store is not touched, the same error as without
    # torch.
    monkeypatch.setitem(sys.modules, "torch.distributed",
                        _FakeDist(0, store, initialized=False))
    with pytest.raises(ConfigError, match="--rdzv-id"):
        resolve_run_id(None, None, detect_launcher(_rank_env(0, 16, 8, 2)), facts=_child(1))
    assert list(store.data) == ["runstream/run_id/0"] and store.gets == 1


def test_resolving_never_imports_torch(monkeypatch):
    for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError):
        resolve_run_id(None, None, detect_launcher(_rank_env(0, 16, 8, 2)), facts=_child(1))
    assert "torch" not in sys.modules and "torch.distributed" not in sys.modules


def test_process_facts_of_this_process_are_the_kernels():
    facts = process_facts()
    assert (facts.pid, facts.ppid) == (os.getpid(), os.getppid())
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert facts.start == int(stat.rsplit(")", 1)[1].split()[19]) > 0
    assert facts.parent_start > 0 and len(facts.boot_id) == 36
    # The chain up from the parent, each link the kernel's own record of that process.
    assert facts.ancestors[0][:2] == (os.getppid(), facts.parent_start)
    for pid, start, comm in facts.ancestors:
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert comm == stat[stat.index("(") + 1:stat.rindex(")")]
        assert start == int(stat.rsplit(")", 1)[1].split()[19])


def test_a_bare_rank_and_world_size_launch_is_not_told_to_use_torchrun():
    info = detect_launcher({"RANK": "1", "WORLD_SIZE": "2"})
    assert not info.one_node
    with pytest.raises(ConfigError) as e:
        resolve_run_id(None, None, info, facts=_child(1))
    assert "RUNSTREAM_RUN_ID=<same value on every rank> ..." in str(e.value)
    assert "--rdzv-id" not in str(e.value)
