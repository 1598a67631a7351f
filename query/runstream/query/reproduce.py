"""How to reproduce a run on another machine, from what it recorded (pure functions).

``runstream reproduce RUN`` prints :func:`reproduce_text` and the web UI's
``/api/runs/{run_id}/reproduce`` answers it: a commented shell script that clones and
checks out the code, applies the recorded diff, makes a virtual environment with the
pins that matter and launches the ranks as the recorded launcher did.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex

from runstream.query.compare import format_bytes, gpu_summary
from runstream.query.models import Run

#: Installer tooling: pinning it makes no difference to the run.
_TOOLING = frozenset({"pip", "setuptools", "wheel"})
_PYTHON = re.compile(r"python[0-9.]*")
_DEV = re.compile(r"\.dev\d*|dev$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Launch:
    """How the ranks were started, as far as the record tells: ``kind`` is "python" (one
    process), "torchrun", "srun", "mpirun" or "mpiexec"; ``recorded`` is True when the
    run recorded its launcher (else it is inferred); ``note`` says what was assumed."""

    kind: str
    world_size: int
    nnodes: int
    nproc_per_node: int
    note: str = ""
    recorded: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reproduction:
    """What ``runstream reproduce`` prints, as data (``--json``): ``requirements`` are
    pip specifiers, ``not_pinned`` says which recorded packages were left out and why,
    ``command`` is the launch line with paths relative to the repository root, and
    ``script`` the whole shell text."""

    run_id: str
    git_remote: str
    git_commit: str
    diff_uri: str
    python_version: str
    requirements: tuple[str, ...]
    not_pinned: tuple[str, ...]
    launch: Launch
    command: str
    foreign_paths: tuple[str, ...]
    script: str


#: The command each recorded launcher starts its ranks with again.
_LAUNCH_KINDS = {"torchrun": "torchrun", "slurm": "srun", "openmpi": "mpirun",
                 "pmi": "mpiexec", "none": "python"}


def launch_of(run: Run) -> Launch:
    """How the ranks were started: the recorded launcher and its shape (nodes, ranks per
    node) when the run recorded them; for runs of older SDKs, and for a shape the
    launcher did not state, world size, node count and ranks per node come from the
    ranks recorded (node names and local ranks) and the launcher is inferred from the
    run id (``mpi-…``: mpirun) or assumed to be torchrun."""
    world = max(run.info.world_size, len(run.ranks), 1)
    inferred = _inferred_launch(run, world)
    kind = _LAUNCH_KINDS.get(run.env.launcher)
    if kind is None:
        return inferred
    if world == 1 or kind == "python":
        return Launch(kind="python", world_size=world, nnodes=1, nproc_per_node=world,
                      recorded=True)
    nnodes = run.env.nnodes or 0
    nproc = run.env.nproc_per_node or 0
    note = ""
    if not nnodes or not nproc:
        nnodes = nnodes or (world // nproc if nproc and world % nproc == 0 else
                            inferred.nnodes)
        nproc = nproc or (world // nnodes if world % nnodes == 0 else inferred.nproc_per_node)
        note = (f"{run.env.launcher} did not state the job's shape: nodes and ranks per"
                " node inferred from the ranks recorded")
    return Launch(kind=kind, world_size=world, nnodes=nnodes, nproc_per_node=nproc,
                  note=note, recorded=True)


def _inferred_launch(run: Run, world: int) -> Launch:
    if world == 1:
        return Launch(kind="python", world_size=1, nnodes=1, nproc_per_node=1)
    per_node: dict[str, int] = {}
    for r in run.ranks:
        if r.node:
            per_node[r.node] = per_node.get(r.node, 0) + 1
    nproc = max([*per_node.values(), *(r.local_rank + 1 for r in run.ranks), 0])
    nproc = min(nproc, world) if nproc else world // max(len(per_node), 1)
    nnodes = max(len(per_node), -(-world // max(nproc, 1)))
    if world % nnodes == 0:
        nproc = world // nnodes  # ranks that never reported still count
    if run.info.run_id.startswith("mpi-"):
        return Launch(kind="mpirun", world_size=world, nnodes=nnodes, nproc_per_node=nproc,
                      note="launcher not recorded: mpirun inferred from the run id (OpenMPI)")
    note = "launcher not recorded: assumed torchrun"
    if run.info.run_id.startswith("slurm-"):
        note += (f" (the run id is SLURM's: srun --nodes {nnodes} --ntasks-per-node {nproc}"
                 " python ... is the other way it may have run)")
    return Launch(kind="torchrun", world_size=world, nnodes=nnodes, nproc_per_node=nproc,
                  note=note)


def repo_name(remote: str) -> str:
    """The directory ``git clone`` makes for ``remote`` ("" for none)."""
    tail = re.split(r"[/:]", remote.rstrip("/"))[-1] if remote else ""
    return tail.removesuffix(".git")


def requirements_of(run: Run) -> tuple[list[str], list[str]]:
    """(pip specifiers, "name version: why not pinned" lines) for the recorded packages.

    runstream itself is pinned only when the run recorded that it was not an editable
    install (older records cannot tell: a local editable install reports the same
    version as a release, so they leave it unpinned). Development
    builds (``.devN``) are on no index; a local label (``2.4.0+cu121``) pins its public
    version. Installer tooling (pip, setuptools, wheel) is left out."""
    pins: list[str] = []
    skipped: list[str] = []
    for p in run.env.packages:
        name = p.name.lower().replace("_", "-")
        if name in _TOOLING:
            continue
        if name == "runstream" and run.env.runstream_editable:
            skipped.append(f"runstream {p.version or '?'}: an editable install of a source"
                           " tree; install runstream from that source")
        elif name == "runstream" and not run.env.launcher:
            skipped.append(f"runstream {p.version or '?'}: installed unpinned (the recorded"
                           " version may be a local or editable build)")
        elif not p.version or _DEV.search(p.version):
            skipped.append(f"{p.name} {p.version or '?'}: a development build on no package"
                           " index; install it from its source")
        else:
            pins.append(f"{p.name}=={p.version.partition('+')[0]}")
    return pins, skipped


def _script_index(tokens: list[str]) -> int:
    """Index of the script among the command's tokens (after python and its options)."""
    i = 1 if tokens and _PYTHON.fullmatch(tokens[0].rsplit("/", 1)[-1]) else 0
    while i < len(tokens) and tokens[i].startswith("-") and tokens[i] not in ("-m", "-c"):
        i += 1
    return i


def portable_command(command: str, remote: str) -> tuple[list[str], str, list[str]]:
    """(argument tokens without the interpreter, the original repository root or "",
    absolute paths left that lie outside it) for a recorded command line.

    The producer records ``sys.executable`` and ``sys.argv`` joined with spaces; the
    working directory and git root are not recorded, so the root is the script's
    ancestor directory named like the remote's clone directory. Paths under it become
    relative to it (the clone's root)."""
    tokens = command.split()
    if tokens and _PYTHON.fullmatch(tokens[0].rsplit("/", 1)[-1]):
        tokens = tokens[1:]
    idx = _script_index(["python", *tokens]) - 1
    script = tokens[idx] if 0 <= idx < len(tokens) else ""
    root = ""
    name = repo_name(remote)
    if name and script.startswith("/"):
        parts = script.split("/")
        if name in parts[1:-1]:
            root = "/".join(parts[: parts.index(name, 1) + 1])
    out: list[str] = []
    foreign: list[str] = []
    for token in tokens:
        flag, eq, value = token.partition("=") if token.startswith("-") else ("", "", token)
        if value.startswith("/"):
            if root and (value == root or value.startswith(root + "/")):
                value = value[len(root) + 1:] or "."
            else:
                foreign.append(value)
        out.append(flag + eq + value)
    return out, root, foreign


def recorded_command(run: Run) -> tuple[list[str], str, list[str]]:
    """(arguments without the interpreter, the working directory relative to the
    repository root or "", absolute paths left that lie outside the repository) from a
    run's recorded argv, script and cwd.

    The script becomes its path relative to the working directory. The original root is
    known when argv[0] was absolute (it ends in the recorded script): paths under it
    become relative to the working directory too."""
    argv = list(run.env.argv)
    cwd = run.code.cwd
    script = run.code.script
    root = ""
    if argv and argv[0] != "-m" and script:
        if argv[0].startswith("/") and argv[0].endswith("/" + script):
            root = argv[0][: -len(script) - 1]
        argv[0] = posixpath.relpath(script, cwd or ".")
    here = posixpath.join(root, cwd) if root and cwd else root
    out: list[str] = []
    foreign: list[str] = []
    for i, token in enumerate(argv):
        if i == 1 and argv[0] == "-m":
            out.append(token)  # the module name
            continue
        flag, eq, value = token.partition("=") if token.startswith("-") else ("", "", token)
        if value.startswith("/"):
            if root and (value == root or value.startswith(root + "/")):
                value = posixpath.relpath(value, here)
            else:
                foreign.append(value)
        out.append(flag + eq + value)
    return out, cwd, foreign


def _launch_head(launch: Launch, args: list[str], lines: list[str]) -> list[str]:
    """The launcher's part of the command line (it may add a comment line first)."""
    module = ["-m"] if args and args[0] == "-m" else []
    if launch.kind == "torchrun":
        head = ["torchrun", "--nnodes", str(launch.nnodes), "--nproc-per-node",
                str(launch.nproc_per_node)]
        if launch.nnodes > 1:
            lines.append(f"# on each of the {launch.nnodes} nodes, MASTER_ADDR set to the"
                         " first node's address")
            head += ["--rdzv-backend", "c10d", "--rdzv-endpoint", '"$MASTER_ADDR:29500"']
        if module:
            del args[0]
        return head + module
    if launch.kind == "srun":
        return ["srun", "-N", str(launch.nnodes), "--ntasks-per-node",
                str(launch.nproc_per_node), "python"]
    if launch.kind == "mpirun":
        return ["mpirun", "-np", str(launch.world_size), "--map-by",
                f"ppr:{launch.nproc_per_node}:node", "python"]
    if launch.kind == "mpiexec":
        return ["mpiexec", "-n", str(launch.world_size), "-ppn", str(launch.nproc_per_node),
                "python"]
    return ["python"]


def reproduction(run: Run) -> Reproduction:
    """How to reproduce ``run`` on another machine: clone, checkout, the recorded diff,
    a virtual environment with the pins that matter, and the launch line."""
    code, env = run.code, run.env
    lines = [f"# Reproduce run {run.info.run_id} ({run.info.experiment}"
             + (f", {run.info.name}" if run.info.name else "") + ")"]
    if code.in_git_repo and code.git_commit:
        if code.git_remote:
            lines.append(f"git clone {shlex.quote(code.git_remote)} repo && cd repo")
        else:
            lines.append("# no remote recorded: cd into your clone of the repository")
        lines.append(f"git checkout {shlex.quote(code.git_commit)}")
        if code.git_dirty:
            if code.diff_uri:
                lines.append(f"# uncommitted changes (sha256 {code.diff_sha256 or '?'}), stored"
                             f" on the original machine at {code.diff_uri}: copy them to"
                             " run.diff here, then")
                lines.append("git apply run.diff")
            else:
                lines.append("# WARNING: the run had uncommitted changes that were not stored")
    else:
        lines.append("# the code was not in a git repository: no commit recorded")
    version = env.python_version
    lines.append(f"# python {version or '?'} on {env.os or '?'}")
    if version.count(".") >= 1:
        major_minor = ".".join(version.split(".")[:2])
        lines.append(f"python{major_minor} -m venv .venv && . .venv/bin/activate")
    pins, skipped = requirements_of(run)
    if pins:
        lines.append("pip install \\\n" + " \\\n".join(f"  {shlex.quote(p)}" for p in pins))
    if any(s.startswith("runstream ") for s in skipped):
        lines.append("pip install runstream  # or from its source")
    lines.extend(f"# not pinned: {s}" for s in skipped)
    if env.gpus or env.cuda_version:
        lines.append(f"# hardware: {gpu_summary(env) or 'no GPU'}, CUDA {env.cuda_version or '-'},"
                     f" driver {env.gpu_driver or '-'}, {env.cpu_count or '?'} CPUs"
                     f" {env.cpu_model}, {format_bytes(env.memory_bytes) or '? memory'},"
                     f" world_size {run.info.world_size}")
    for i in run.inputs:
        lines.append(f"# input {i.role or '-'} {i.name or '-'}: {i.uri} digest {i.digest or '-'}")
    if run.params:
        lines.append("# params: " + ", ".join(f"{p.key}={p.value}" for p in run.params))
    launch = launch_of(run)
    command = ""
    foreign: list[str] = []
    if env.argv:
        args, cwd, foreign = recorded_command(run)
        if cwd and cwd != ".":
            lines.append(f"cd {shlex.quote(cwd)}  # the recorded working directory, relative"
                         " to the repository root")
    elif env.command:
        if env.launcher:
            lines.append("# argv was too long to record in full: rebuilt from the command"
                         " line (an argument with spaces in it is split)")
        else:
            lines.append("# recorded before runstream kept the launcher, argv and working"
                         " directory: the line below is guessed from the command line")
        args, root, foreign = portable_command(env.command, code.git_remote)
        if root:
            lines.append(f"# paths made relative to the repository root ({root} on the"
                         " original machine)")
        else:
            lines.append("# run from the repository root (the original working directory"
                         " was not recorded)")
    else:
        args = []
    if args:
        if foreign:
            lines.append("# absolute paths of the original machine, outside the repository:"
                         " make them exist here or change them: " + " ".join(foreign))
        if launch.note:
            lines.append(f"# {launch.note}")
        command = " ".join(_launch_head(launch, args, lines)
                           + [shlex.quote(a) for a in args])
        lines.append(command)
    else:
        lines.append("# the command line was not recorded")
    return Reproduction(
        run_id=run.info.run_id, git_remote=code.git_remote, git_commit=code.git_commit,
        diff_uri=code.diff_uri, python_version=version, requirements=tuple(pins),
        not_pinned=tuple(skipped), launch=launch, command=command,
        foreign_paths=tuple(foreign), script="\n".join(lines),
    )


def reproduce_text(run: Run) -> str:
    """What it takes to reproduce a run, as a commented shell script."""
    return reproduction(run).script
