"""The CLI's commands about metric histories: ``history``, ``follow``, ``plot``.

Each ``cmd_*`` takes a query client, prints text (or JSON, or writes a PNG) and returns
the exit status (see :func:`runstream.cli.output.run_command`). ``plot`` needs matplotlib
(``pip install 'runstream[plot]'``) and uses the Agg backend (no display).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from runstream.cli.output import format_table, format_time_ms, format_value, run_command, to_json
from runstream.proto.errors import InvalidArgumentError
from runstream.query.models import MetricHistory, PointsUpdate, StatusUpdate

if TYPE_CHECKING:
    from runstream.query.client import Client


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

    return run_command(body, err)


def follow_lines(update: PointsUpdate | StatusUpdate, as_json: bool) -> list[str]:
    """What ``follow`` prints for one update: text lines, or with ``as_json`` one JSON
    object per line (``{"type": "point", "step", "rank", "key", "value", "ts_ms"}``,
    ``{"type": "status", "rank", "status", "error", "ts_ms"}``, ``{"type": "live"}``
    once the backfill has caught up)."""
    lines: list[str] = []
    if isinstance(update, StatusUpdate):
        if as_json:
            lines.append(to_json({"type": "status", "rank": update.rank, "status": update.status,
                                  "error": update.error, "ts_ms": update.ts_ms}, indent=None))
        else:
            lines.append(f"[status] rank {update.rank}: {update.status}"
                         + (f" ({update.error.splitlines()[-1]})" if update.error else ""))
        return lines
    for i in range(len(update)):
        key = update.keys[update.key_index[i]]
        if as_json:
            lines.append(to_json({"type": "point", "step": update.steps[i],
                                  "rank": update.ranks[i], "key": key,
                                  "value": update.values[i], "ts_ms": update.ts_ms[i]},
                                 indent=None))
        else:
            lines.append(f"step {update.steps[i]:>8}  rank {update.ranks[i]:>3}  "
                         f"{key} = {format_value(update.values[i])}")
    if update.live and not update.steps:
        lines.append(to_json({"type": "live"}, indent=None) if as_json
                     else "[live] caught up; waiting for new points")
    return lines


def cmd_follow(client: Client, run_id: str, keys: Sequence[str], from_step: int,
               out: TextIO, stop: threading.Event | None = None,
               *, err: TextIO | None = None, as_json: bool = False) -> int:
    """Print a live run's new points (one line per step and key) and status changes;
    with ``as_json`` one JSON object per line (see :func:`follow_lines`). Blocks until the
    run ends, ``stop`` is set or the stream breaks."""

    def body() -> str:
        for update in client.follow(run_id, keys, from_step=from_step, stop=stop):
            for line in follow_lines(update, as_json):
                print(line, file=out)
            out.flush()
        return ""

    return run_command(body, err)
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
             max_points: int, as_json: bool = False, *, err: TextIO | None = None) -> int:
    """Plot ``key`` of each run (mean across ranks, downsampled) into ``out_path``.

    A run without points of ``key`` is an error naming the keys it has; nothing is
    written then. With ``as_json`` prints the file path and each series' point counts."""

    def body() -> str:
        histories = [client.metric_history(r, key, max_points=max_points, aggregate="mean")
                     for r in run_ids]
        for h in histories:
            if not len(h):
                known = [m.key for m in client.get_run(h.run_id).metrics]
                raise InvalidArgumentError(
                    f"run {h.run_id!r} has no metric {key!r}; its metrics: "
                    + (", ".join(known) if known else "none yet"))
        plot_histories(histories, out_path, key)
        if as_json:
            return to_json({"path": out_path, "key": key, "series": [
                {"run_id": h.run_id, "points": len(h),
                 "total_points": h.total_points or len(h), "downsampled": h.downsampled}
                for h in histories]})
        return f"wrote {out_path}"

    return run_command(body, err)
