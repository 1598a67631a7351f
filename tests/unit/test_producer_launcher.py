"""Rank and run id detection from launcher environments (runstream.launcher)."""

from __future__ import annotations

import pytest

from runstream.launcher import LauncherInfo, detect_launcher, resolve_run_id, sanitize_run_id
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
        nproc_per_node=4)
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
