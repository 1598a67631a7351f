"""The CLI's commands about runs: ``runs``, ``show``, ``compare``, ``reproduce``,
``experiments``.

Each ``cmd_*`` takes a query client, prints text (or JSON) and returns the exit status
(see :func:`runstream.cli.output.run_command`); the ``*_text``/``*_table`` helpers are pure.
"""

from __future__ import annotations

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
from runstream.query.models import Attempt, Change, Comparison, Note, Run, RunInfo

# How to reproduce a run lives in the query package (the web UI shows the same text);
# these names stay importable from here.
from runstream.query.reproduce import Launch as Launch
from runstream.query.reproduce import Reproduction as Reproduction
from runstream.query.reproduce import launch_of as launch_of
from runstream.query.reproduce import portable_command as portable_command
from runstream.query.reproduce import recorded_command as recorded_command
from runstream.query.reproduce import repo_name as repo_name
from runstream.query.reproduce import reproduce_text as reproduce_text
from runstream.query.reproduce import reproduction as reproduction
from runstream.query.reproduce import requirements_of as requirements_of

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
