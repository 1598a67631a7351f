"""The CLI's read commands (``runstream runs``, ``show``, ``history``) over a query Client.

``runstream.cli.main`` parses arguments and calls :func:`cmd_runs`, :func:`cmd_show` and
:func:`cmd_history`; each prints an aligned table (or JSON with ``as_json``) and returns
the process exit status: 0 on success, 1 when the query service reports an error
(printed to stderr as ``runstream: error: ...``). Times print in UTC.

The formatting helpers are pure functions. Nothing here imports ClickHouse.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from runstream.proto.errors import RunstreamError
from runstream.query.client import Client
from runstream.query.models import MetricHistory, Run, RunInfo

MAX_CELL = 60


# --- pure formatting -------------------------------------------------------------------


def format_time_ms(ts_ms: int) -> str:
    """Epoch milliseconds as "YYYY-MM-DD HH:MM:SS" in UTC; "-" for 0 (unknown)."""
    if ts_ms <= 0:
        return "-"
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_duration_s(seconds: float) -> str:
    """A duration as "45s", "3m07s", "2h05m" or "3d04h"; "-" when negative."""
    if seconds < 0 or math.isnan(seconds):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def run_duration(info: RunInfo, now_ms: int) -> str:
    """How long the run took, or has been running until ``now_ms`` (then suffixed "+")."""
    if info.start_ms <= 0:
        return "-"
    if info.end_ms:
        return format_duration_s((info.end_ms - info.start_ms) / 1000)
    return format_duration_s((now_ms - info.start_ms) / 1000) + "+"


def format_value(value: float) -> str:
    """A metric value with up to 6 significant digits ("nan", "inf" kept)."""
    return f"{value:.6g}"


def clip(text: str, width: int = MAX_CELL) -> str:
    """One line of at most ``width`` characters ("…" marks a cut)."""
    line = text.replace("\r", " ").replace("\n", " ")
    return line if len(line) <= width else line[: width - 1] + "…"


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[int] = ()
) -> str:
    """Rows under headers in aligned columns, two spaces apart; ``right`` columns align right."""
    cells = [[str(h) for h in headers]] + [[clip(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def runs_table(runs: Sequence[RunInfo], now_ms: int) -> str:
    return format_table(
        ["RUN ID", "EXPERIMENT", "NAME", "STATUS", "RANKS", "STARTED (UTC)", "DURATION"],
        [
            (r.run_id, r.experiment, r.name or "-", r.status, r.world_size,
             format_time_ms(r.start_ms), run_duration(r, now_ms))
            for r in runs
        ],
        right=(4, 6),
    )


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
            ],
        )
    ]

    def section(title: str, body: str | None) -> None:
        sections.append(f"{title}\n" + (body if body else "  (none)"))

    section("Params", format_table(["KEY", "VALUE", "TYPE"],
                                   [(p.key, p.value, p.type) for p in run.params])
            if run.params else None)
    section("Tags", format_table(["KEY", "VALUE"], [(t.key, t.value) for t in run.tags])
            if run.tags else None)
    section("Metrics", format_table(
        ["KEY", "LAST", "LAST STEP", "MIN", "MAX"],
        [(m.key, format_value(m.last), m.last_step, format_value(m.min), format_value(m.max))
         for m in run.metrics],
        right=(1, 2, 3, 4),
    ) if run.metrics else None)
    section("Ranks", format_table(
        ["RANK", "NODE", "LOCAL", "STATUS", "STARTED (UTC)", "ENDED (UTC)", "ERROR"],
        [(r.rank, r.node or "-", r.local_rank, r.status, format_time_ms(r.start_ms),
          format_time_ms(r.end_ms), r.error.splitlines()[-1] if r.error else "")
         for r in run.ranks],
        right=(0, 2),
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
    return "\n\n".join(sections)


def history_table(history: MetricHistory) -> str:
    if history.downsampled or history.aggregate:
        ranks: list[int] | list[str] = history.ranks or ["*"] * len(history)
        lo = history.min_values or history.values
        hi = history.max_values or history.values
        return format_table(
            ["RANK", "STEP", "VALUE", "BUCKET MIN", "BUCKET MAX", "TIME (UTC)"],
            [(r, s, format_value(v), format_value(a), format_value(b), format_time_ms(t))
             for r, s, v, a, b, t in zip(ranks, history.steps, history.values, lo, hi,
                                         history.ts_ms, strict=True)],
            right=(0, 1, 2, 3, 4),
        )
    return format_table(
        ["RANK", "STEP", "VALUE", "TIME (UTC)"],
        [
            (rank, step, format_value(value), format_time_ms(ts))
            for rank, step, value, ts in zip(
                history.ranks, history.steps, history.values, history.ts_ms, strict=True
            )
        ],
        right=(0, 1, 2),
    )


def to_json(obj: Any) -> str:
    """Dataclasses (and lists of them) as indented JSON; NaN/inf become strings."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return json.dumps(plain(obj), indent=2, ensure_ascii=False)


# --- commands --------------------------------------------------------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _run_command(body: Callable[[], str], err: TextIO | None) -> int:
    try:
        text = body()
    except RunstreamError as e:
        print(f"runstream: error: {e}", file=err or sys.stderr)
        return 1
    if text:
        print(text)
    return 0


def cmd_runs(client: Client, experiment: str | None, limit: int | None, as_json: bool,
             *, err: TextIO | None = None, filter_text: str = "",
             order_by: Sequence[str] = ()) -> int:
    """Print the first ``limit`` runs (None = all) matching ``filter_text``, in ``order_by``
    order (default newest first), of one experiment (None = all). Blocks."""

    def body() -> str:
        runs: list[RunInfo] = []
        page_size = min(limit, 1000) if limit else 1000
        search: dict[str, Any] = {}
        if filter_text or order_by:
            search = {"filter": filter_text, "order_by": order_by}
        for info in client.iter_runs(experiment, page_size=page_size, **search):
            runs.append(info)
            if limit and len(runs) >= limit:
                break
        if as_json:
            return to_json(runs)
        return runs_table(runs, _now_ms()) if runs else "no runs"

    return _run_command(body, err)


def cmd_show(client: Client, run_id: str, as_json: bool, *, err: TextIO | None = None) -> int:
    """Print everything recorded for one run. Blocks."""

    def body() -> str:
        run = client.get_run(run_id)
        return to_json(run) if as_json else run_text(run, _now_ms())

    return _run_command(body, err)


def cmd_history(client: Client, run_id: str, key: str, ranks: Sequence[int] | None,
                limit: int | None, as_json: bool, *, err: TextIO | None = None,
                max_points: int = 0, aggregate: str = "") -> int:
    """Print a metric's points ordered by (rank, step): the first ``limit`` (None = all),
    or downsampled to ``max_points`` per series, or aggregated across ranks."""

    def body() -> str:
        if max_points or aggregate:
            history = client.metric_history(run_id, key, ranks, max_points=max_points,
                                            aggregate=aggregate)
        elif limit:
            history = client.metric_history(run_id, key, ranks, page_size=limit, page_token="")
        else:
            history = client.metric_history(run_id, key, ranks)
        if as_json:
            return to_json(dataclasses.replace(history, next_page_token=""))
        return history_table(history) if len(history) else f"no points of {key!r}"

    return _run_command(body, err)
