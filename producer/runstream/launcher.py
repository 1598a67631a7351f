"""Rank and shared run id from the launcher's environment (torchrun, SLURM, MPI, PMI).

Pure functions over a mapping, so tests pass dicts. When several launchers' variables
are present the innermost one wins: torchrun (often started by srun) before OpenMPI and
PMI (set per process by mpirun), before SLURM (set per task by srun).
"""

from __future__ import annotations

import dataclasses
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
    "openmpi", "pmi" or "none"; ``run_id`` is the job's shared id, sanitised, or None.
    ``nnodes`` and ``nproc_per_node`` are the job's shape as its launcher states it
    (0 = the launcher does not say): what ``runstream reproduce`` starts again."""

    launcher: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_id: str | None = None
    nnodes: int = 0
    nproc_per_node: int = 0


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


def _tasks_per_node(raw: str) -> int:
    """SLURM's compressed per-node task counts ("4(x2)", "4,4", "2(x3),1"): the count
    when every node runs the same number, else 0 (a job of uneven shape)."""
    counts: set[int] = set()
    for part in raw.strip().split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:\(x\d+\))?\s*", part)
        if match is None:
            return 0
        counts.add(int(match.group(1)))
    return counts.pop() if len(counts) == 1 else 0


def _nodes_of(world_size: int, per_node: int) -> int:
    """Node count from world size and ranks per node, when they divide evenly."""
    if per_node <= 0 or world_size % per_node:
        return 0
    return world_size // per_node


def _slurm_shape(environ: Mapping[str, str]) -> tuple[int, int]:
    """(nodes, tasks per node) of the SLURM step (srun) or else the job (sbatch)."""
    nnodes = _int(environ, "SLURM_STEP_NUM_NODES", 0) or _int(environ, "SLURM_NNODES", 0) \
        or _int(environ, "SLURM_JOB_NUM_NODES", 0)
    # Set only when --ntasks-per-node was given; the *_TASKS_PER_NODE lists always are.
    per_node = _int(environ, "SLURM_NTASKS_PER_NODE", 0)
    if not per_node:
        # The step's own list (srun) over the job's (sbatch), whichever is set first.
        for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
            if environ.get(name, "").strip():
                per_node = _tasks_per_node(environ[name])
                break
    return nnodes, per_node


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
        world_size = _int(environ, "WORLD_SIZE")
        # torchrun sets LOCAL_WORLD_SIZE (--nproc-per-node) and GROUP_WORLD_SIZE (the
        # number of agents, one per node); a bare RANK/WORLD_SIZE launch sets neither.
        nproc = _int(environ, "LOCAL_WORLD_SIZE", 0)
        info = LauncherInfo(
            launcher="torchrun",
            rank=_int(environ, "RANK"),
            world_size=world_size,
            local_rank=_int(environ, "LOCAL_RANK", 0),
            # srun torchrun ...: every node's agent shares one SLURM step.
            run_id=run_id or _slurm_run_id(environ),
            nnodes=_int(environ, "GROUP_WORLD_SIZE", 0) or _nodes_of(world_size, nproc),
            nproc_per_node=nproc,
        )
    elif "OMPI_COMM_WORLD_RANK" in environ:
        world_size = _int(environ, "OMPI_COMM_WORLD_SIZE")
        nproc = _int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE", 0)
        info = LauncherInfo(
            launcher="openmpi",
            rank=_int(environ, "OMPI_COMM_WORLD_RANK"),
            world_size=world_size,
            local_rank=_int(environ, "OMPI_COMM_WORLD_LOCAL_RANK", 0),
            run_id=_pmix_run_id(environ),
            nnodes=_nodes_of(world_size, nproc),
            nproc_per_node=nproc,
        )
    elif "PMI_RANK" in environ:
        world_size = _int(environ, "PMI_SIZE")
        # MPICH's Hydra sets MPI_LOCALNRANKS beside MPI_LOCALRANKID.
        nproc = _int(environ, "MPI_LOCALNRANKS", 0)
        info = LauncherInfo(
            launcher="pmi",
            rank=_int(environ, "PMI_RANK"),
            world_size=world_size,
            local_rank=_int(environ, "MPI_LOCALRANKID", 0),
            run_id=_slurm_run_id(environ) or _pmix_run_id(environ),
            nnodes=_nodes_of(world_size, nproc),
            nproc_per_node=nproc,
        )
    elif "SLURM_PROCID" in environ and ("SLURM_NTASKS" in environ or "SLURM_NPROCS" in environ):
        size_var = "SLURM_NTASKS" if "SLURM_NTASKS" in environ else "SLURM_NPROCS"
        nnodes, nproc = _slurm_shape(environ)
        info = LauncherInfo(
            launcher="slurm",
            rank=_int(environ, "SLURM_PROCID"),
            world_size=_int(environ, size_var),
            local_rank=_int(environ, "SLURM_LOCALID", 0),
            run_id=_slurm_run_id(environ),
            nnodes=nnodes,
            nproc_per_node=nproc,
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
    if info.nnodes > info.world_size or info.nproc_per_node > info.world_size:
        # A shape that cannot hold the job (a batch script's SLURM_NNODES seen by one
        # task of a smaller step) says nothing about it: record it as unknown.
        return dataclasses.replace(info, nnodes=0, nproc_per_node=0)
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
