"""What the CLI prints: aligned tables, times, durations, values and JSON (pure), and
:func:`run_command`, which every read command goes through.

A read command prints its text (or JSON with ``--json``) and returns the process exit
status: 0 on success, 1 when the query service reports an error (printed to stderr as
``runstream: error: ...``). Times print in UTC. Nothing here imports grpcio or
ClickHouse.
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
from runstream.query.models import RunInfo

MAX_CELL = 60


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


def format_size(size_bytes: int) -> str:
    """Bytes for people: "512 B", "1.5 KiB", "2.0 MiB", "3.1 GiB", "1.2 TiB"."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def format_value(value: float) -> str:
    """A metric value with up to 6 significant digits ("nan", "inf" kept)."""
    return f"{value:.6g}"


def clip(text: str, width: int = MAX_CELL) -> str:
    """One line of at most ``width`` characters ("…" marks a cut)."""
    line = text.replace("\r", " ").replace("\n", " ")
    return line if len(line) <= width else line[: width - 1] + "…"


def format_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[int] = (),
    keep: Sequence[int] = (),
) -> str:
    """Rows under headers in aligned columns, two spaces apart; ``right`` columns align
    right; cells are cut at MAX_CELL characters, except in ``keep`` columns (digests and
    URIs someone copies)."""
    cells = [[str(h) for h in headers]] + [
        [clip(str(c), 1 << 30 if i in keep else MAX_CELL) for i, c in enumerate(row)]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def to_json(obj: Any, *, indent: int | None = 2) -> str:
    """Dataclasses (and lists of them) as indented JSON (``indent=None``: one line);
    NaN/inf become strings."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return json.dumps(plain(obj), indent=indent, ensure_ascii=False)


def now_ms() -> int:
    return int(time.time() * 1000)


def run_command(body: Callable[[], str], err: TextIO | None) -> int:
    """Print what ``body`` returns (nothing for ""); 0, or 1 with the error on ``err``
    (default stderr) when it raises a RunstreamError."""
    try:
        text = body()
    except RunstreamError as e:
        print(f"runstream: error: {e}", file=err or sys.stderr)
        return 1
    if text:
        print(text)
    return 0
