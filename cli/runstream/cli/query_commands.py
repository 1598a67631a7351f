"""The CLI's newer read commands: compare, reproduce, follow, plot, status, experiments.

Each ``cmd_*`` takes a query :class:`Client`, prints text (or JSON) and returns the exit
status (0 ok, 1 when the service reports an error). Formatting helpers are pure. ``plot``
needs matplotlib (``pip install 'runstream[plot]'``) and uses the Agg backend (no display).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from typing import TextIO

from runstream.cli.read_commands import (
    _run_command,
    format_table,
    format_time_ms,
    format_value,
    to_json,
)
from runstream.query.client import Client
from runstream.query.compare import format_bytes, gpu_summary
from runstream.query.models import Comparison, MetricHistory, PointsUpdate, Run, StatusUpdate

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


def reproduce_text(run: Run) -> str:
    """What it takes to reproduce a run, as a commented shell script."""
    code, env = run.code, run.env
    lines = [f"# Reproduce run {run.info.run_id} ({run.info.experiment}"
             + (f", {run.info.name}" if run.info.name else "") + ")"]
    if code.in_git_repo and code.git_commit:
        if code.git_remote:
            lines.append(f"git clone {shlex.quote(code.git_remote)} repo && cd repo")
        lines.append(f"git checkout {shlex.quote(code.git_commit)}")
        if code.git_dirty:
            if code.diff_uri:
                lines.append(f"# uncommitted changes (sha256 {code.diff_sha256 or '?'}):")
                lines.append(f"git apply {shlex.quote(code.diff_uri.removeprefix('file://'))}")
            else:
                lines.append("# WARNING: the run had uncommitted changes that were not stored")
    else:
        lines.append("# the code was not in a git repository: no commit recorded")
    lines.append(f"# python {env.python_version or '?'} on {env.os or '?'}")
    if env.packages:
        reqs = " ".join(shlex.quote(f"{p.name}=={p.version}") for p in env.packages)
        lines.append(f"pip install {reqs}")
    if env.gpus or env.cuda_version:
        lines.append(f"# hardware: {gpu_summary(env) or 'no GPU'}, CUDA {env.cuda_version or '-'},"
                     f" driver {env.gpu_driver or '-'}, {env.cpu_count or '?'} CPUs"
                     f" {env.cpu_model}, {format_bytes(env.memory_bytes) or '? memory'},"
                     f" world_size {run.info.world_size}")
    for i in run.inputs:
        lines.append(f"# input {i.role or '-'} {i.name or '-'}: {i.uri} digest {i.digest or '-'}")
    if run.params:
        lines.append("# params: " + ", ".join(f"{p.key}={p.value}" for p in run.params))
    lines.append(env.command or "# the command line was not recorded")
    return "\n".join(lines)


def cmd_compare(client: Client, run_ids: Sequence[str], keys: Sequence[str], show_all: bool,
                as_json: bool, *, err: TextIO | None = None) -> int:
    """Print runs side by side, differing fields first. Blocks."""

    def body() -> str:
        c = client.compare_runs(run_ids, keys)
        return to_json(c) if as_json else comparison_text(c, show_all)

    return _run_command(body, err)


def cmd_reproduce(client: Client, run_id: str, *, err: TextIO | None = None) -> int:
    return _run_command(lambda: reproduce_text(client.get_run(run_id)), err)


def cmd_experiments(client: Client, as_json: bool, *, err: TextIO | None = None) -> int:
    def body() -> str:
        exps = client.list_experiments()
        if as_json:
            return to_json(exps)
        return format_table(["EXPERIMENT", "RUNS", "LAST START (UTC)"],
                            [(e.experiment, e.run_count, format_time_ms(e.last_start_ms))
                             for e in exps], right=(1,)) if exps else "no experiments"

    return _run_command(body, err)


def cmd_status(client: Client, as_json: bool, *, err: TextIO | None = None) -> int:
    """Print ingestion progress per consumer partition (last minute)."""

    def body() -> str:
        parts = client.ingest_status()
        if as_json:
            return to_json(parts)
        if not parts:
            return "no consumer reported progress in the last minute"
        return format_table(
            ["CONSUMER", "SOURCE", "TOPIC", "PART", "COMMITTED", "END", "LAG", "POINTS",
             "POINTS/S", "BATCH MS", "AT (UTC)"],
            [(p.consumer_id, p.source, p.topic or "-", p.partition, p.committed_offset,
              p.end_offset, p.lag, p.points_total, f"{p.points_per_s:,.0f}",
              f"{p.batch_latency_ms:.1f}", format_time_ms(p.ts_ms)) for p in parts],
            right=(3, 4, 5, 6, 7, 8, 9),
        )

    return _run_command(body, err)


def cmd_follow(client: Client, run_id: str, keys: Sequence[str], from_step: int,
               out: TextIO, stop: threading.Event | None = None,
               *, err: TextIO | None = None) -> int:
    """Print a live run's new points (one line per step and key) and status changes."""

    def body() -> str:
        for update in client.follow(run_id, keys, from_step=from_step, stop=stop):
            if isinstance(update, StatusUpdate):
                print(f"[status] rank {update.rank}: {update.status}"
                      + (f" ({update.error.splitlines()[-1]})" if update.error else ""),
                      file=out, flush=True)
            elif isinstance(update, PointsUpdate):
                for i in range(len(update)):
                    print(f"step {update.steps[i]:>8}  rank {update.ranks[i]:>3}  "
                          f"{update.keys[update.key_index[i]]} = {format_value(update.values[i])}",
                          file=out)
                if update.live and not update.steps:
                    print("[live] caught up; waiting for new points", file=out, flush=True)
                out.flush()
        return ""

    return _run_command(body, err)


def plot_histories(histories: Sequence[MetricHistory], out_path: str, key: str) -> None:
    """One line per run (its mean over ranks if several), with the min/max band when
    downsampled; written as PNG with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for h in histories:
        line = ax.plot(h.steps, h.values, label=h.run_id, linewidth=1.2)[0]
        if h.downsampled and h.min_values:
            ax.fill_between(h.steps, h.min_values, h.max_values, color=line.get_color(),
                            alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(f"{key}" + (" (min/max band per bucket)" if any(h.downsampled
                                                                 for h in histories) else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def cmd_plot(client: Client, run_ids: Sequence[str], key: str, out_path: str,
             max_points: int, *, err: TextIO | None = None) -> int:
    """Plot ``key`` of each run (mean across ranks, downsampled) into ``out_path``."""

    def body() -> str:
        histories = [client.metric_history(r, key, max_points=max_points, aggregate="mean")
                     for r in run_ids]
        plot_histories(histories, out_path, key)
        return f"wrote {out_path}"

    return _run_command(body, err)
