"""Ingest progress: points/s, batch latency and lag per partition, for people and machines.

Every ``interval_s`` the reporter reads the counters of this process's pipelines (plain
ints and :meth:`Pipeline.progress`, never the sources themselves), writes one row per
(source, topic, partition) into ``ingest_progress`` (the ``runstream status`` answer
reads the latest row per consumer and partition) and, if asked, prints a line per
partition. It runs on the daemon thread ``runstream-consumer-progress``.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runstream.consumer.periodic import run_every, start_daemon
from runstream.consumer.pipeline import Pipeline
from runstream.consumer.sources import is_spool
from runstream.proto import tables

log = logging.getLogger(__name__)


def default_consumer_id() -> str:
    """``host:pid:<4 random hex>``: unique per process, readable in a status listing."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True, slots=True)
class ProgressRow:
    """One ``ingest_progress`` row (offsets in messages; spool: files)."""

    consumer_id: str
    source: str
    topic: str
    partition: int
    committed_offset: int
    end_offset: int
    lag: int
    points_total: int
    points_per_s: float
    batch_latency_ms: float
    ts_ms: int


def progress_rows(
    consumer_id: str,
    pipelines: Sequence[Pipeline],
    points_per_s: float,
    now_ms: int,
) -> list[ProgressRow]:
    """The rows describing ``pipelines`` now (reads thread-safe snapshots only)."""
    rows = []
    points_total = sum(p.points for p in pipelines)
    for pipeline in pipelines:
        offsets, latency_ms = pipeline.progress()
        for (topic, partition), (committed, end) in sorted(offsets.items()):
            spool = is_spool(topic)
            rows.append(ProgressRow(
                consumer_id=consumer_id, source="spool" if spool else "kafka",
                topic=str(pipeline.config.spool_dir) if spool else topic, partition=partition,
                committed_offset=committed, end_offset=end, lag=max(0, end - committed),
                points_total=points_total, points_per_s=points_per_s,
                batch_latency_ms=latency_ms, ts_ms=now_ms,
            ))
    return rows


def format_rows(rows: Sequence[ProgressRow]) -> list[str]:
    """Terminal lines: a total, then one line per partition."""
    if not rows:
        return []
    first = rows[0]
    lines = [f"runstream: {first.points_total:,} points, {first.points_per_s:,.0f} points/s, "
             f"batch {statistics.median(r.batch_latency_ms for r in rows):,.0f} ms, "
             f"lag {sum(r.lag for r in rows):,}"]
    for r in rows:
        lines.append(f"  {r.source} {r.topic}[{r.partition}] committed {r.committed_offset:,}"
                     f" end {r.end_offset:,} lag {r.lag:,} batch {r.batch_latency_ms:,.0f} ms")
    return lines


class ProgressReporter:
    """Writes ``ingest_progress`` rows (and optional terminal lines) every ``interval_s``.

    ``client`` must be usable from the reporter's thread (chdb: the shared client; HTTP:
    its own). Write failures are logged and retried at the next interval.
    """

    def __init__(
        self,
        client: Any,
        database: str,
        pipelines: Sequence[Pipeline],
        *,
        interval_s: float = 5.0,
        consumer_id: str | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.pipelines = list(pipelines)
        self.interval_s = interval_s
        self.consumer_id = consumer_id or default_consumer_id()
        self._echo = echo
        self._last_points = sum(p.points for p in self.pipelines)
        self._last_t = time.monotonic()

    def report_once(self) -> list[ProgressRow]:
        """Compute, write and echo one round of rows. Blocks on ClickHouse."""
        points = sum(p.points for p in self.pipelines)
        now = time.monotonic()
        rate = (points - self._last_points) / max(now - self._last_t, 1e-9)
        self._last_points, self._last_t = points, now
        rows = progress_rows(self.consumer_id, self.pipelines, rate, time.time_ns() // 1_000_000)
        if rows:
            table = tables.INGEST_PROGRESS
            self.client.insert(
                table.name, [[getattr(r, c) for c in table.column_names] for r in rows],
                column_names=list(table.column_names), database=self.database,
            )
        if self._echo is not None and (rate > 0 or any(r.lag for r in rows)):
            for line in format_rows(rows):
                self._echo(line)
        return rows

    def run(self, stop: threading.Event) -> None:
        """Report every ``interval_s`` until ``stop`` is set. Blocks. Errors are logged
        (a progress row is never worth stopping ingestion for)."""
        run_every(self.interval_s, stop, self.report_once, "progress report")

    def start(self, stop: threading.Event) -> threading.Thread:
        """``run(stop)`` on a daemon thread named ``runstream-consumer-progress``."""
        return start_daemon(self.run, stop, "runstream-consumer-progress")
