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
