"""``runstream ranks RUN``: which rank of a run is slow or broken (GetRankHealth).

One line per rank (step time percentiles, lag behind the median rank, data wait, device
memory, last sign of life, status, problems), then the median step time, the lag key and
the suspects. ``--json`` prints the report as the query client returns it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from runstream.cli.output import format_table, format_time_ms, run_command, to_json
from runstream.query.models import RankHealth, RankHealthReport

if TYPE_CHECKING:
    from runstream.query.client import Client


def format_seconds(s: float) -> str:
    """A short duration: "850us", "20.1ms", "1.25s"; "-" for 0 (none logged)."""
    if s == 0:
        return "-"
    if abs(s) < 1e-3:
        return f"{s * 1e6:.0f}us"
    if abs(s) < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def format_bytes(n: int) -> str:
    """Bytes in binary units ("1.5GiB"); "-" for 0."""
    if n <= 0:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # not reached


def _lag_ms(report: RankHealthReport, r: RankHealth, value: float) -> str:
    """A lag cell; "-" without a lag key or when the rank has nothing to compare."""
    if not report.lag_key or (not r.steps and not (r.lag_p50_ms or r.lag_max_ms)):
        return "-"
    return f"{value:+.0f}ms"


def ranks_text(report: RankHealthReport) -> str:
    """The report as a table, a summary, and each suspect's problems in full (pure)."""
    table = format_table(
        ["RANK", "NODE", "STATUS", "STEPS", "STEP P50", "STEP P95", "LAG P50", "LAG MAX",
         "DATA WAIT", "MEM MAX", "LAST SEEN (UTC)", "PROBLEMS"],
        [(r.rank, r.node or "-", r.status.replace("RUN_STATUS_", ""), r.steps,
          format_seconds(r.step_time_p50_s), format_seconds(r.step_time_p95_s),
          _lag_ms(report, r, r.lag_p50_ms), _lag_ms(report, r, r.lag_max_ms),
          format_seconds(r.data_wait_p50_s), format_bytes(r.device_memory_max_bytes),
          format_time_ms(r.last_seen_ms), "; ".join(r.problems) or "ok")
         for r in report.ranks],
        right=(0, 3, 4, 5, 6, 7, 8, 9),
    )
    suspects = ", ".join(str(r) for r in report.suspects) or "none"
    lines = [table, "",
             f"median step time p50: {format_seconds(report.median_step_time_p50_s)}"
             f"; lag key: {report.lag_key or '-'}",
             f"suspects (slowest first): {suspects}"]
    by_rank = {r.rank: r for r in report.ranks}
    lines += [f"  rank {s}: {'; '.join(by_rank[s].problems)}" for s in report.suspects
              if s in by_rank]  # the problems whole (table cells are clipped)
    return "\n".join(lines)


def cmd_ranks(client: Client, run_id: str, as_json: bool, *, step_time_key: str = "",
              lag_key: str = "", err: TextIO | None = None) -> int:
    """Print the health of every rank of a run; 1 on a service error."""

    def body() -> str:
        report = client.rank_health(run_id, step_time_key, lag_key)
        if as_json:
            return to_json(report)
        if not report.ranks:
            return f"run {run_id} has no ranks yet"
        return ranks_text(report)

    return run_command(body, err)
