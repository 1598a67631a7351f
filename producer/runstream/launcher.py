"""Rank and shared run id from the launcher's environment (torchrun, SLURM, MPI, PMI).

:func:`detect_launcher` is a pure function over a mapping, so tests pass dicts. When
several launchers' variables are present the innermost one wins: torchrun (often started
by srun) before OpenMPI and PMI (set per process by mpirun), before SLURM (set per task
by srun).

Where the launcher names no job that every rank shares, :func:`resolve_run_id` derives
one: on one node from the launcher process all ranks run under (torchrun's agent log
directory, or the agent's or hydra_pmi_proxy's pid and start time, so a recycled pid is
another job); in a SLURM batch step from an ordinal per (job, restart) kept in a small
file under Runstream's home; with torch.distributed initialised, from rank 0 through the
process group. The process facts it reads from /proc are an argument, for tests.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import itertools
import os
import re
import socket
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

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
    (0 = the launcher does not say): what ``runstream reproduce`` starts again.

    ``restart`` is the launcher's restart count (TORCHELASTIC_RESTART_COUNT for torchrun,
    SLURM_RESTART_COUNT for SLURM, 0 otherwise): what RunStarted.restart records.
    ``one_node`` is True when the launcher says every rank runs on this host as a child
    of one launcher process (torchrun with one agent, Hydra with one proxy, mpirun on one
    node). ``batch_job`` is the SLURM job id when this process runs in the job's batch
    step (the sbatch script itself, no srun step), else ""; ``state_dir`` is where
    :func:`resolve_run_id` then keeps its per-job ordinals (RUNSTREAM_HOME/launcher).
    ``agent`` is torchrun's per-agent log directory (from TORCHELASTIC_ERROR_FILE), which
    the agent makes once and keeps across restarts, shared by all its workers even when a
    wrapper script stands between them; "" when not known."""

    launcher: str
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    run_id: str | None = None
    nnodes: int = 0
    nproc_per_node: int = 0
    restart: int = 0
    one_node: bool = False
    batch_job: str = ""
    state_dir: str = ""
    agent: str = ""


@dataclass(frozen=True, kw_only=True)
class ProcessFacts:
    """This process and its parent as the kernel reports them. ``start`` and
    ``parent_start`` are field 22 of /proc/<pid>/stat (clock ticks after boot; 0 = not
    known), so a recycled pid reads as another process; ``boot_id`` tells boots apart
    ("" = not known). ``ancestors`` are (pid, start, command name) of the parent, its
    parent and so on, up to 8, to find a launcher a wrapper script stands below."""

    host: str
    boot_id: str
    pid: int
    start: int
    ppid: int
    parent_start: int
    ancestors: tuple[tuple[int, int, str], ...] = ()


_HYDRA_PROXY = "hydra_pmi_proxy"  # MPICH's and Intel MPI's per-node launcher
_MAX_ANCESTORS = 8


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, start time) from /proc/<pid>/stat; None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    comm = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode("utf-8", "replace")
    fields = raw[raw.rfind(b")") + 2:].split()  # fields[0] is field 3
    try:
        return comm, int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def process_facts() -> ProcessFacts:
    """Read this process's :class:`ProcessFacts` from the OS (/proc on Linux; elsewhere
    the start times, ancestors and boot id are unknown). Blocks for some microseconds."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    pid, ppid = os.getpid(), os.getppid()
    mine = _stat(pid)
    ancestors: list[tuple[int, int, str]] = []
    up = ppid
    while up > 1 and len(ancestors) < _MAX_ANCESTORS and (stat := _stat(up)) is not None:
        ancestors.append((up, stat[2], stat[0]))
        up = stat[1]
    parent_start = ancestors[0][1] if ancestors and ancestors[0][0] == ppid else 0
    return ProcessFacts(host=socket.gethostname(), boot_id=boot_id, pid=pid,
                        start=mine[2] if mine else 0, ppid=ppid, parent_start=parent_start,
                        ancestors=tuple(ancestors))


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


def _slurm_job(environ: Mapping[str, str]) -> str:
    return environ.get("SLURM_JOB_ID", "").strip()


def _slurm_step(environ: Mapping[str, str]) -> str:
    """The srun step id; "" in the batch step (sbatch's script), which srun never set up.
    SLURM_STEPID is the older name srun still sets beside it."""
    return (environ.get("SLURM_STEP_ID", "") or environ.get("SLURM_STEPID", "")).strip()


def _slurm_run_id(environ: Mapping[str, str]) -> str | None:
    """``slurm-<job>.<step>`` for a process of an srun step; None outside SLURM and in
    the batch step, whose processes each start a run of their own (see resolve_run_id)."""
    job, step = _slurm_job(environ), _slurm_step(environ)
    return sanitize_run_id(f"slurm-{job}.{step}") if job and step else None


def _batch_job(environ: Mapping[str, str]) -> str:
    """The SLURM job id when this process runs in the job's batch step, else ""."""
    return _slurm_job(environ) if _slurm_job(environ) and not _slurm_step(environ) else ""


def _torchrun_agent(environ: Mapping[str, str], restart: int, local_rank: int) -> str:
    """The run log directory of the torchrun agent that started this worker: its error
    file is <run log dir>/attempt_<restart>/<local rank>/error.json (torch's
    DefaultLogsSpecs, which makes the directory with mkdtemp once per agent and reuses it
    for every restart). "" when the variable is missing or laid out otherwise (--log-dir
    /dev/null, another LogsSpecs)."""
    path = PurePosixPath(environ.get("TORCHELASTIC_ERROR_FILE", "").strip())
    attempt = path.parent.parent
    if (path.name != "error.json" or path.parent.name != str(local_rank)
            or attempt.name != f"attempt_{restart}" or len(attempt.parts) < 3):
        return ""
    return str(attempt.parent)


def _pmix_run_id(environ: Mapping[str, str]) -> str | None:
    namespace = environ.get("PMIX_NAMESPACE", "").strip()
    return sanitize_run_id(f"mpi-{namespace}") if namespace else None


def detect_launcher(environ: Mapping[str, str]) -> LauncherInfo:
    """Rank, world size, local rank, restart count and shared job id; ConfigError on
    malformed values. Pure: reads only ``environ``."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        elastic = environ.get("TORCHELASTIC_RUN_ID", "").strip()
        # torchrun's --rdzv-id is the user's own name for the job: keep it as the run id.
        # Without one (static rendezvous) torchrun sets "none".
        run_id = sanitize_run_id(elastic) if elastic and elastic != "none" else None
        world_size = _int(environ, "WORLD_SIZE")
        # torchrun sets LOCAL_WORLD_SIZE (--nproc-per-node) and GROUP_WORLD_SIZE (the
        # number of agents, one per node); a bare RANK/WORLD_SIZE launch sets neither.
        nproc = _int(environ, "LOCAL_WORLD_SIZE", 0)
        groups = _int(environ, "GROUP_WORLD_SIZE", 0)
        restart = _int(environ, "TORCHELASTIC_RESTART_COUNT", 0)
        local_rank = _int(environ, "LOCAL_RANK", 0)
        info = LauncherInfo(
            launcher="torchrun",
            rank=_int(environ, "RANK"),
            world_size=world_size,
            local_rank=local_rank,
            # srun torchrun ...: every node's agent shares one SLURM step.
            run_id=run_id or _slurm_run_id(environ),
            nnodes=groups or _nodes_of(world_size, nproc),
            nproc_per_node=nproc,
            restart=restart,
            # One agent: its workers are all children of the torchrun process.
            one_node=groups == 1 or nproc == world_size,
            batch_job=_batch_job(environ),
            agent=_torchrun_agent(environ, restart, local_rank) if nproc else "",
        )
    elif "OMPI_COMM_WORLD_RANK" in environ:
        world_size = _int(environ, "OMPI_COMM_WORLD_SIZE")
        nproc = _int(environ, "OMPI_COMM_WORLD_LOCAL_SIZE", 0)
        info = LauncherInfo(
            launcher="openmpi",
            rank=_int(environ, "OMPI_COMM_WORLD_RANK"),
            world_size=world_size,
            local_rank=_int(environ, "OMPI_COMM_WORLD_LOCAL_RANK", 0),
            # Never the SLURM step: mpirun in a batch script starts its remote daemons
            # with srun, so only some ranks would see one.
            run_id=_pmix_run_id(environ),
            nnodes=_nodes_of(world_size, nproc),
            nproc_per_node=nproc,
            one_node=nproc == world_size,
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
            # One hydra_pmi_proxy on this host is the parent of every rank.
            one_node=nproc == world_size,
            batch_job=_batch_job(environ),
        )
    elif "SLURM_PROCID" in environ and ("SLURM_NTASKS" in environ or "SLURM_NPROCS" in environ):
        restart = _int(environ, "SLURM_RESTART_COUNT", 0)
        batch = _batch_job(environ)
        if batch and _int(environ, "SLURM_PROCID") == 0:
            # The batch step runs the script once, on the first node; SLURM_NTASKS and
            # the node counts there are the allocation's, for srun steps to use.
            info = LauncherInfo(launcher="slurm", restart=restart, batch_job=batch)
        else:
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
                restart=restart,
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
    if info.batch_job:
        info = dataclasses.replace(info, state_dir=str(names.home(environ) / "launcher"))
    if info.nnodes > info.world_size or info.nproc_per_node > info.world_size:
        # A shape that cannot hold the job (a batch script's SLURM_NNODES seen by one
        # task of a smaller step) says nothing about it: record it as unknown.
        return dataclasses.replace(info, nnodes=0, nproc_per_node=0)
    return info


def _digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:8]


def _launcher_process(info: LauncherInfo, facts: ProcessFacts) -> tuple[int, int]:
    """(pid, start time) of the process that started this rank on this node: for Hydra
    the nearest hydra_pmi_proxy above it (`mpiexec bash run.sh` puts a shell of its own
    between each rank and the proxy), else the parent."""
    if info.launcher == "pmi":
        for pid, start, comm in facts.ancestors:
            if comm == _HYDRA_PROXY:
                return pid, start
    return facts.ppid, facts.parent_start


def _parent_run_id(info: LauncherInfo, facts: ProcessFacts) -> str | None:
    """The run id every rank of this node's launcher process derives alike. From
    torchrun's agent directory when known (``torchrun-<host>-<digest>``), else from the
    launcher process: launcher, host, its pid, and a digest of the boot and its start
    time, so a pid the kernel hands out again later names another job. None for an
    orphan (parent pid 0 or 1) with no agent directory."""
    if info.agent:
        return sanitize_run_id(
            f"{info.launcher}-{facts.host}-{_digest(facts.host, facts.boot_id, info.agent)}")
    pid, start = _launcher_process(info, facts)
    if pid <= 1:
        return None
    digest = _digest(facts.host, facts.boot_id, pid, start)
    return sanitize_run_id(f"{info.launcher}-{facts.host}-{pid}-{digest}")


def _batch_ordinal(state_dir: Path, job: str, restart: int, key: str) -> int:
    """The index of ``key`` among the process groups seen in this attempt of batch job
    ``job``, adding it if new, under an exclusive flock (processes of one script may run
    in parallel). One file per (job, restart): a requeued job counts again from 0, so its
    k-th process meets the run of the first attempt's k-th. Blocks while another process
    holds the lock (a read and a short append)."""
    path = state_dir / f"slurm-{sanitize_run_id(job) or 'job'}.{restart}"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # flock, not fcntl locks: NFS without a lock manager says so (ENOLCK) here.
            fcntl.flock(fd, fcntl.LOCK_EX)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
            keys = data.decode("utf-8", "replace").splitlines()
            if key in keys:
                return keys.index(key)
            # A line cut short by a crash stays a line of its own.
            cut = b"\n" if data and not data.endswith(b"\n") else b""
            os.write(fd, cut + key.encode() + b"\n")
            return len(keys)
        finally:
            os.close(fd)  # releases the lock
    except OSError as e:
        raise ConfigError(
            f"cannot keep the SLURM batch-step counter in {path} ({e.strerror}); set "
            f"{names.HOME} to a writable local directory or {names.RUN_ID} to name the run"
        ) from e


_torch_asks = itertools.count()


def _torch_shared_run_id(candidate: str) -> str | None:
    """Rank 0's ``candidate`` on every rank, through the default process group's key-value
    store, when torch.distributed is already imported and initialised; None otherwise
    (or when this torch has no default store). Never imports torch.

    Not a collective: rank 0 sets the key and returns at once (so a job where only rank 0
    calls init, W&B's usual pattern, never blocks); other ranks wait for it, up to the
    store's timeout. The n-th init of a process reads the n-th key, so sequential runs in
    one job do not read each other's ids."""
    dist: Any = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None
    key = f"runstream/run_id/{next(_torch_asks)}"
    if dist.get_rank() == 0:
        store.set(key, candidate)
        return candidate
    raw = store.get(key)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _launch_hint(info: LauncherInfo) -> str:
    """What to add to the launch command so every rank gets one run id."""
    if info.launcher == "torchrun" and info.nproc_per_node:
        return ("RUNSTREAM_RUN_ID=<same value on every node> torchrun ... "
                "(or torchrun --rdzv-id=<same value on every node> ...)")
    if info.launcher == "openmpi":
        return "mpirun -x RUNSTREAM_RUN_ID=<same value> ..."
    if info.launcher == "pmi":
        return "mpiexec -genv RUNSTREAM_RUN_ID <same value> ..."
    if info.launcher == "slurm":
        return "srun --export=ALL,RUNSTREAM_RUN_ID=<same value> ..."
    return "RUNSTREAM_RUN_ID=<same value on every rank> ..."


def resolve_run_id(
    explicit: str | None,
    env_run_id: str | None,
    info: LauncherInfo,
    *,
    facts: ProcessFacts | None = None,
    state_dir: Path | None = None,
) -> str:
    """run_id argument > RUNSTREAM_RUN_ID > the launcher's job id > a derived shared id
    > a fresh uuid4 hex for a single process.

    Derived, in this order: a SLURM batch-step process gets ``slurm-<job>-b<k>``, k
    counting the script's processes (or the ranks' launcher, for torchrun and Hydra
    started by the script) in start order, the same k again when the job is requeued;
    ranks on one node get an id named after their common launcher process (which torchrun
    keeps across elastic restarts); with torch.distributed initialised, rank 0's id
    through the process group's store (rank 0 never waits). Several ranks with
    none of these raise ConfigError saying what to add to the launch command.

    ``facts`` (default: :func:`process_facts`) and ``state_dir`` (default:
    ``info.state_dir``) are for tests. Blocks briefly on the batch-step counter's lock.
    """
    for name, candidate in (("run_id", explicit), (names.RUN_ID, env_run_id)):
        if candidate is not None:
            return check_run_id(candidate, name=name, error=ConfigError)
    if info.run_id is not None:
        return info.run_id
    if info.batch_job or info.one_node:
        facts = facts or process_facts()
    if info.batch_job and facts is not None:
        directory = state_dir or Path(info.state_dir or names.home(os.environ) / "launcher")
        # The process group this process belongs to: its launcher's, or itself.
        if info.one_node and info.agent:
            key = f"{facts.host} {facts.boot_id} agent {_digest(info.agent)}"
        elif info.one_node and _launcher_process(info, facts)[0] > 1:
            launcher_pid, launcher_start = _launcher_process(info, facts)
            key = f"{facts.host} {facts.boot_id} {launcher_pid} {launcher_start}"
        else:
            key = f"{facts.host} {facts.boot_id} {facts.pid} {facts.start}"
        k = _batch_ordinal(directory, info.batch_job, info.restart, key)
        shared = sanitize_run_id(f"slurm-{info.batch_job}-b{k}")
        if shared is not None:
            return shared
    if info.one_node and facts is not None:
        derived = _parent_run_id(info, facts)
        if derived is not None:
            return derived
    if info.world_size > 1:
        own = _parent_run_id(info, facts or process_facts()) or uuid.uuid4().hex
        shared = _torch_shared_run_id(own)
        if shared is not None:
            return check_run_id(shared, name="torch.distributed rank 0's run id",
                                error=ConfigError)
        raise ConfigError(
            f"this process is rank {info.rank} of {info.world_size} ({info.launcher}"
            f"{f', {info.nnodes} nodes' if info.nnodes > 1 else ''}) and the launcher names "
            f"no job that every rank shares; add to the launch command: {_launch_hint(info)} "
            "(or pass run_id=... to runstream.init)"
        )
    return uuid.uuid4().hex
