"""The CLI's commands about runs: ``runs``, ``show``, ``compare``, ``reproduce``,
``experiments``.

Each ``cmd_*`` takes a query client, prints text (or JSON) and returns the exit status
(see :func:`runstream.cli.output.run_command`); the ``*_text``/``*_table`` helpers are pure.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runstream.cli.output import (
    format_table,
    format_time_ms,
    format_value,
    now_ms,
    run_command,
    run_duration,
    to_json,
)
from runstream.query.compare import format_bytes, gpu_summary
from runstream.query.models import Attempt, Change, Comparison, Note, Run, RunInfo

if TYPE_CHECKING:
    from runstream.query.client import Client


def fork_text(info: RunInfo) -> str:
    """A fork's parent and the last step inherited from it, "parent@step" ("" if none)."""
    return f"{info.fork_run_id}@{info.fork_step}" if info.fork_run_id else ""


def run_flags(info: RunInfo) -> str:
    """What sets a run apart in a listing: "archived", "attempts 3", "fork of p@40"."""
    flags = []
    if info.archived:
        flags.append("archived")
    if info.attempts > 1:
        flags.append(f"attempts {info.attempts}")
    if info.fork_run_id:
        flags.append(f"fork of {fork_text(info)}")
    return ", ".join(flags)


def runs_table(runs: Sequence[RunInfo], now_ms: int) -> str:
    return format_table(
        ["RUN ID", "EXPERIMENT", "NAME", "STATUS", "RANKS", "STARTED (UTC)", "DURATION",
         "FLAGS"],
        [
            (r.run_id, r.experiment, r.name or "-", r.status, r.world_size,
             format_time_ms(r.start_ms), run_duration(r, now_ms), run_flags(r))
            for r in runs
        ],
        right=(4, 6),
    )


def attempt_how(a: Attempt) -> str:
    """How an attempt started: "start", "restart 2" (the launcher's count), "resume"."""
    if a.resume:
        return "resume"
    return f"restart {a.restart}" if a.restart else "start"


def attempts_table(attempts: Sequence[Attempt]) -> str:
    return format_table(
        ["ATTEMPT", "HOW", "WORLD", "RANKS", "STATUS", "STARTED (UTC)", "ENDED (UTC)", "ERROR"],
        [(a.attempt, attempt_how(a), a.world_size, len(a.ranks), a.status,
          format_time_ms(a.start_ms), format_time_ms(a.end_ms),
          a.error.splitlines()[-1] if a.error.strip() else "")
         for a in attempts],
        right=(0, 2, 3),
    )


def who(user: str, host: str) -> str:
    return f"{user or '?'}@{host or '?'}"


def notes_text(notes: Sequence[Note]) -> str:
    """Each note under a line saying when and by whom; its lines indented."""
    parts = []
    for n in notes:
        body = "\n".join(f"    {line}" for line in n.text.splitlines() or [""])
        parts.append(f"  {format_time_ms(n.ts_ms)} UTC  {who(n.user, n.host)}\n{body}")
    return "\n".join(parts)


def changes_table(changes: Sequence[Change]) -> str:
    return format_table(["TIME (UTC)", "WHO", "WHAT"],
                        [(format_time_ms(c.ts_ms), who(c.user, c.host), c.what)
                         for c in changes])


def run_text(run: Run, now_ms: int) -> str:
    """Every section of ``runstream show``, as text."""
    info = run.info
    sections = [
        format_table(
            ["FIELD", "VALUE"],
            [
                ("run_id", info.run_id),
                ("experiment", info.experiment),
                ("name", info.name or "-"),
                ("status", info.status),
                ("world_size", info.world_size),
                ("start", format_time_ms(info.start_ms)),
                ("end", format_time_ms(info.end_ms)),
                ("duration", run_duration(info, now_ms)),
                ("attempts", info.attempts or len(run.attempts) or 1),
                ("archived", "yes" if info.archived else "no"),
                ("fork of", fork_text(info) or "-"),
            ],
        )
    ]

    def section(title: str, body: str | None) -> None:
        sections.append(f"{title}\n" + (body if body else "  (none)"))

    section("Notes", notes_text(run.notes) if run.notes else None)

    params = format_table(["KEY", "VALUE", "TYPE"], [(p.key, p.value, p.type) for p in run.params])
    section("Params", "\n".join([params, *conflict_lines(run)]) if run.params else None)
    section("Tags", format_table(["KEY", "VALUE"], [(t.key, t.value) for t in run.tags])
            if run.tags else None)
    section("Metrics", format_table(
        ["KEY", "LAST", "LAST STEP", "MIN", "MAX"],
        [(m.key, format_value(m.last), m.last_step, format_value(m.min), format_value(m.max))
         for m in run.metrics],
        right=(1, 2, 3, 4),
    ) if run.metrics else None)
    section("Points", points_text(run))
    section("Attempts", attempts_table(run.attempts) if run.attempts else None)
    # With several attempts, say which one each rank's row belongs to.
    by_attempt = len({r.attempt for r in run.ranks}) > 1 or len(run.attempts) > 1
    section("Ranks", format_table(
        [*(["ATTEMPT"] if by_attempt else []), "RANK", "NODE", "LOCAL", "STATUS",
         "STARTED (UTC)", "ENDED (UTC)", "ERROR"],
        [(*((r.attempt,) if by_attempt else ()), r.rank, r.node or "-", r.local_rank,
          r.status, format_time_ms(r.start_ms), format_time_ms(r.end_ms),
          r.error.splitlines()[-1] if r.error.strip() else "")
         for r in run.ranks],
        right=(0, 1, 3) if by_attempt else (0, 2),
    ) if run.ranks else None)
    section("Artifacts", format_table(
        ["NAME", "SIZE", "SHA256", "URI"],
        [(a.name, a.size_bytes, a.sha256[:12], a.uri) for a in run.artifacts],
        right=(1,),
    ) if run.artifacts else None)
    section("Inputs", format_table(
        ["NAME", "ROLE", "DIGEST", "URI"],
        [(i.name or "-", i.role or "-", i.digest[:16] or "-", i.uri) for i in run.inputs],
    ) if run.inputs else None)
    code, env = run.code, run.env
    section("Code", format_table(["FIELD", "VALUE"], [
        ("git_commit", code.git_commit or "-"),
        ("git_branch", code.git_branch or "-"),
        ("git_remote", code.git_remote or "-"),
        ("git_dirty", str(code.git_dirty).lower() if code.in_git_repo else "-"),
        ("python", env.python_version or "-"),
        ("os", env.os or "-"),
        ("cpu_count", env.cpu_count or "-"),
        ("command", env.command or "-"),
    ]))
    section("Changes", changes_table(run.changes) if run.changes else None)
    return "\n\n".join(sections)


def conflict_lines(run: Run) -> list[str]:
    """One line per param that was logged again with another value (params are
    immutable: the first value stays), e.g.
    ``param lr: 0.1 (also logged: 0.2 by producer 4f1c at 2025-01-02 03:04:05 UTC)``."""
    values = {p.key: p.value for p in run.params}
    by_key: dict[tuple[str, int], list[str]] = {}
    for c in run.param_conflicts:
        by_key.setdefault((c.key, c.rank), []).append(
            f"{c.value} by producer {c.producer_id} at {format_time_ms(c.ts_ms)} UTC")
    # The value shown is the lowest rank's (rank 0's); another rank's conflict names it.
    return [f"param {key}: {values.get(key, '?')} (also logged: {'; '.join(others)})"
            if rank == 0 else f"param {key}, rank {rank}: also logged {'; '.join(others)}"
            for (key, rank), others in sorted(by_key.items())]


def points_text(run: Run) -> str | None:
    """The account of the run's metric points: one line per drop reason (e.g.
    ``70,000 points dropped (spool write failed: ENOSPC)``), points logged but neither
    stored nor dropped, then per rank: logged, stored, dropped. None when no rank
    logged or stored a point."""
    ranks = [r for r in run.ranks if r.points_logged or r.points_stored or r.dropped]
    if not ranks:
        return None
    lines = []
    drops: dict[str, tuple[int, int]] = {}
    for r in ranks:
        for d in r.dropped:
            events, points = drops.get(d.reason, (0, 0))
            drops[d.reason] = (events + d.events, points + d.points)
    for reason, (events, points) in sorted(drops.items()):
        what = f"{points:,} points" if points else f"{events:,} events"
        lines.append(f"{what} dropped ({reason})")
    finished = [r for r in ranks if r.producers_finished]
    missing = sum(max(0, r.points_logged - r.points_stored - sum(d.points for d in r.dropped))
                  for r in finished)
    if missing:
        lines.append(f"{missing:,} points logged but neither stored nor counted as dropped"
                     " (still on the way, or lost)")
    logged = sum(r.points_logged for r in ranks)
    stored = sum(r.points_stored for r in ranks)
    lines.append(f"{stored:,} points stored" + (f", {logged:,} logged" if finished else
                                                 " (logged: known once a rank finishes)"))
    lines.append(format_table(
        ["RANK", "LOGGED", "STORED", "DROPPED"],
        [(r.rank, f"{r.points_logged:,}" if r.producers_finished else "-", f"{r.points_stored:,}",
          f"{sum(d.points for d in r.dropped):,}") for r in ranks],
        right=(0, 1, 2, 3),
    ))
    return "\n".join(lines)


DIFF_MARK = "≠"


def comparison_text(c: Comparison, show_all: bool = False) -> str:
    """The compare table: a "≠" marks differing rows; identical rows only with ``show_all``."""
    headers = ["", "SECTION", "FIELD", *[r.run_id for r in c.runs]]
    rows = [(DIFF_MARK if f.differs else "", f.section, f.key, *[v or "-" for v in f.values])
            for f in c.fields if f.differs or show_all]
    same = sum(1 for f in c.fields if not f.differs)
    parts = [format_table(headers, rows) if rows else "no differing fields"]
    if same and not show_all:
        parts.append(f"({same} identical fields hidden; --all shows them)")
    metric_rows = []
    for m in c.metrics:
        cells = []
        for i, s in enumerate(m.stats):
            if not s.present:
                cells.append("-")
                continue
            star = "*" if i == m.best_run else ""
            cells.append(f"{star}{format_value(s.last)} (best {format_value(s.best)}"
                         f" @{s.best_step})")
        metric_rows.append((DIFF_MARK if m.differs else "", m.key,
                            "min" if m.goal == "minimize" else "max", *cells))
    if metric_rows:
        parts.append("Metrics: last (best @step); * = best run")
        parts.append(format_table(["", "METRIC", "GOAL", *[r.run_id for r in c.runs]],
                                  metric_rows))
    return "\n\n".join(parts)


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


#: SearchRuns views (RunView in query.proto): archived runs are hidden by default.
ACTIVE_ONLY = "ACTIVE_ONLY"
ARCHIVED_ONLY = "ARCHIVED_ONLY"
ALL = "ALL"


def cmd_runs(client: Client, experiment: str | None, limit: int | None, as_json: bool,
             *, err: TextIO | None = None, filter_text: str = "",
             order_by: Sequence[str] = (), view: str = ACTIVE_ONLY) -> int:
    """Print the first ``limit`` runs (None = all) matching ``filter_text``, in ``order_by``
    order (default newest first), of one experiment (None = all); ``view`` says whether
    archived runs are left out (ACTIVE_ONLY), the only ones (ARCHIVED_ONLY) or included
    (ALL). Blocks."""

    def body() -> str:
        runs: list[RunInfo] = []
        page_size = min(limit, 1000) if limit else 1000
        search: dict[str, Any] = {}
        if filter_text or order_by:
            search = {"filter": filter_text, "order_by": order_by}
        if view != ACTIVE_ONLY:
            search["view"] = view
        for info in client.iter_runs(experiment, page_size=page_size, **search):
            runs.append(info)
            if limit and len(runs) >= limit:
                break
        if as_json:
            return to_json(runs)
        if runs:
            return runs_table(runs, now_ms())
        if view == ACTIVE_ONLY:
            return "no runs (archived runs are hidden: --all shows them)"
        return "no runs"

    return run_command(body, err)


def cmd_show(client: Client, run_id: str, as_json: bool, *, err: TextIO | None = None,
             all_attempts: bool = False) -> int:
    """Print everything recorded for one run (``all_attempts``: the ranks of every
    attempt, not only the latest's). Blocks."""

    def body() -> str:
        run = client.get_run(run_id, all_attempts=True) if all_attempts else client.get_run(run_id)
        return to_json(run) if as_json else run_text(run, now_ms())

    return run_command(body, err)


def cmd_compare(client: Client, run_ids: Sequence[str], keys: Sequence[str], show_all: bool,
                as_json: bool, *, err: TextIO | None = None) -> int:
    """Print runs side by side, differing fields first. Blocks."""

    def body() -> str:
        c = client.compare_runs(run_ids, keys)
        return to_json(c) if as_json else comparison_text(c, show_all)

    return run_command(body, err)


def cmd_reproduce(client: Client, run_id: str, as_json: bool = False, *,
                  err: TextIO | None = None) -> int:
    """Print how to reproduce a run (a shell script, or its parts as JSON). Blocks."""

    def body() -> str:
        plan = reproduction(client.get_run(run_id))
        return to_json(plan) if as_json else plan.script

    return run_command(body, err)


def cmd_experiments(client: Client, as_json: bool, *, err: TextIO | None = None) -> int:
    def body() -> str:
        exps = client.list_experiments()
        if as_json:
            return to_json(exps)
        return format_table(["EXPERIMENT", "RUNS", "LAST START (UTC)"],
                            [(e.experiment, e.run_count, format_time_ms(e.last_start_ms))
                             for e in exps], right=(1,)) if exps else "no experiments"

    return run_command(body, err)
