"""Progress rows and terminal lines from pipeline snapshots (no Kafka, no ClickHouse)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runstream.consumer.progress import format_rows, progress_rows


class FakePipeline:
    def __init__(self, points: int, offsets: dict[Any, tuple[int, int]], latency_ms: float,
                 spool_dir: Path = Path("/spool")) -> None:
        self.points = points
        self._offsets = offsets
        self._latency_ms = latency_ms
        self.config = type("C", (), {"spool_dir": spool_dir})()

    def progress(self) -> tuple[dict[Any, tuple[int, int]], float]:
        return self._offsets, self._latency_ms


def test_rows_per_partition_with_lag_and_totals():
    kafka = FakePipeline(700, {("events", 1): (90, 100), ("events", 0): (50, 50)}, 12.5)
    spool = FakePipeline(300, {("spool", 0): (3, 5)}, 4.0)
    rows = progress_rows("host:1", [kafka, spool], 2500.0, 1_760_000_000_000)  # type: ignore[list-item]
    assert [(r.source, r.topic, r.partition, r.committed_offset, r.end_offset, r.lag)
            for r in rows] == [
        ("kafka", "events", 0, 50, 50, 0), ("kafka", "events", 1, 90, 100, 10),
        ("spool", "/spool", 0, 3, 5, 2)]
    assert {(r.points_total, r.points_per_s, r.consumer_id) for r in rows} == {
        (1000, 2500.0, "host:1")}
    assert [r.batch_latency_ms for r in rows] == [12.5, 12.5, 4.0]
    lines = format_rows(rows)
    assert lines[0] == "runstream: 1,000 points, 2,500 points/s, batch 12 ms, lag 12"
    assert lines[2].strip() == "kafka events[1] committed 90 end 100 lag 10 batch 12 ms"


def test_a_progress_row_is_a_row_of_the_ingest_progress_table() -> None:
    import dataclasses

    from runstream.consumer.progress import ProgressRow
    from runstream.proto import tables
    from runstream.query.models import IngestPartition

    # The consumer writes these rows by column name and the query service reads them back
    # into IngestPartition by column name: the three must name the same fields in order.
    columns = list(tables.INGEST_PROGRESS.column_names)
    assert [f.name for f in dataclasses.fields(ProgressRow)] == columns
    assert [f.name for f in dataclasses.fields(IngestPartition)] == columns
