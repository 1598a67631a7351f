"""Rank and shared run id from the launcher's environment (torchrun, SLURM, MPI, PMI).

Pure functions over a mapping, so tests pass dicts. When several launchers' variables
are present the innermost one wins: torchrun (often started by srun) before OpenMPI and
PMI (set per process by mpirun), before SLURM (set per task by srun).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from runstream.proto import config as names
from runstream.proto.errors import ConfigError
from runstream.proto.validation import MAX_WORLD_SIZE, check_run_id

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_RUN_ID = 64


@dataclass(frozen=True, kw_only=True)
class LauncherInfo:
    """Where this process sits in its job. ``launcher`` is "torchrun", "slurm",
    "openmpi", "pmi" or "none"; ``run_id`` is the job's shared id, sanitised, or None."""

    launcher: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_id: str | None = None


def sanitize_run_id(raw: str) -> str | None:
    """Map a launcher's job id onto the run id alphabet; hash the tail if it is too long.

    Returns None for an empty id. Deterministic, so every rank derives the same id.
    """
    cleaned = _UNSAFE.sub("-", raw.strip()).strip("-")
    if not cleaned:
        return None
    if len(cleaned) > _MAX_RUN_ID:
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
        cleaned = f"{cleaned[: _MAX_RUN_ID - 17]}-{digest}"
    return cleaned


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ConfigError(f"{name} is not set but other variables of its launcher are")
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a non-negative integer") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r}: expected a non-negative integer")
    return value


def _slurm_run_id(environ: Mapping[str, str]) -> str | None:
    job = environ.get("SLURM_JOB_ID", "").strip()
    if not job:
        return None
    step = environ.get("SLURM_STEP_ID", "").strip()
    return sanitize_run_id(f"slurm-{job}.{step}" if step else f"slurm-{job}")


def _pmix_run_id(environ: Mapping[str, str]) -> str | None:
    namespace = environ.get("PMIX_NAMESPACE", "").strip()
    return sanitize_run_id(f"mpi-{namespace}") if namespace else None


def detect_launcher(environ: Mapping[str, str]) -> LauncherInfo:
    """Rank, world size, local rank and shared job id; ConfigError on malformed values."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        elastic = environ.get("TORCHELASTIC_RUN_ID", "").strip()
        # torchrun's --rdzv-id is the user's own name for the job: keep it as the run id.
        run_id = sanitize_run_id(elastic) if elastic and elastic != "none" else None
        info = LauncherInfo(
            launcher="torchrun",
            rank=_int(environ, "RANK"),
            world_size=_int(environ, "WORLD_SIZE"),
            local_rank=_int(environ, "LOCAL_RANK", 0),
            # srun torchrun ...: every node's agent shares one SLURM step.
            run_id=run_id or _slurm_run_id(environ),
        )
    elif "OMPI_COMM_WORLD_RANK" in environ:
        info = LauncherInfo(
            launcher="openmpi",
            rank=_int(environ, "OMPI_COMM_WORLD_RANK"),
            world_size=_int(environ, "OMPI_COMM_WORLD_SIZE"),
            local_rank=_int(environ, "OMPI_COMM_WORLD_LOCAL_RANK", 0),
            run_id=_pmix_run_id(environ),
        )
    elif "PMI_RANK" in environ:
        info = LauncherInfo(
            launcher="pmi",
            rank=_int(environ, "PMI_RANK"),
            world_size=_int(environ, "PMI_SIZE"),
            local_rank=_int(environ, "MPI_LOCALRANKID", 0),
            run_id=_slurm_run_id(environ) or _pmix_run_id(environ),
        )
    elif "SLURM_PROCID" in environ and ("SLURM_NTASKS" in environ or "SLURM_NPROCS" in environ):
        size_var = "SLURM_NTASKS" if "SLURM_NTASKS" in environ else "SLURM_NPROCS"
        info = LauncherInfo(
            launcher="slurm",
            rank=_int(environ, "SLURM_PROCID"),
            world_size=_int(environ, size_var),
            local_rank=_int(environ, "SLURM_LOCALID", 0),
            run_id=_slurm_run_id(environ),
        )
    else:
        return LauncherInfo(launcher="none")
    if not 1 <= info.world_size <= MAX_WORLD_SIZE:
        raise ConfigError(
            f"{info.launcher}: world size {info.world_size} out of range 1..{MAX_WORLD_SIZE}"
        )
    if info.rank >= info.world_size:
        raise ConfigError(
            f"{info.launcher}: rank {info.rank} is not below world size {info.world_size}"
        )
    return info


def resolve_run_id(explicit: str | None, env_run_id: str | None, info: LauncherInfo) -> str:
    """run_id argument > RUNSTREAM_RUN_ID > the launcher's job id > a fresh uuid4 hex.

    A fresh id is only safe for a single process: with world_size > 1 and no shared id
    every rank would start its own run, so that raises ConfigError instead.
    """
    for name, candidate in (("run_id", explicit), (names.RUN_ID, env_run_id)):
        if candidate is not None:
            return check_run_id(candidate, name=name, error=ConfigError)
    if info.run_id is not None:
        return info.run_id
    if info.world_size > 1:
        raise ConfigError(
            f"this process is rank {info.rank} of {info.world_size} ({info.launcher}) but the "
            f"launcher gives no job id all ranks share; set {names.RUN_ID} to the same value "
            "on every rank (or pass run_id=...)"
        )
    return uuid.uuid4().hex
