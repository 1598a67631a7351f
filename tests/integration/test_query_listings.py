"""ListExperiments, ListMetricKeys and GetIngestStatus through the real engine and gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from tests.factories import seed_runs


def test_listings_and_ingest_status_without_its_table(ch: Any, client: Client) -> None:
    seed_runs(ch, 12)
    exps = {e.experiment: e.run_count for e in client.list_experiments()}
    assert exps == {"exp": 10, "other": 2}
    assert [m.key for m in client.list_metric_keys("r03")] == ["loss", "val_acc"]
    with pytest.raises(NotFoundError):
        client.list_metric_keys("ghost")
    ch.command("DROP TABLE IF EXISTS ingest_progress")
    assert client.ingest_status() == []


def test_ingest_status_reads_the_latest_row_per_partition(ch: Any, client: Client) -> None:
    ch.command(
        "CREATE TABLE IF NOT EXISTS ingest_progress (consumer_id String, source String,"
        " topic String,"
        " partition Int32, committed_offset Int64, end_offset Int64, lag Int64,"
        " points_total UInt64, points_per_s Float64, batch_latency_ms Float64, ts_ms Int64)"
        " ENGINE = ReplacingMergeTree(ts_ms) ORDER BY (consumer_id, source, topic, partition)")
    import time
    now = int(time.time() * 1000)
    cols = ["consumer_id", "source", "topic", "partition", "committed_offset", "end_offset",
            "lag", "points_total", "points_per_s", "batch_latency_ms", "ts_ms"]
    ch.insert("ingest_progress", [
        ["c1", "kafka", "t", 0, 10, 20, 10, 100, 5.0, 3.0, now - 5000],
        ["c1", "kafka", "t", 0, 15, 20, 5, 150, 6.0, 2.0, now - 100],
        ["c2", "spool", "", 0, 1, 1, 0, 7, 0.0, 1.0, now - 600_000],  # stale
    ], column_names=cols)
    (p,) = client.ingest_status()
    assert (p.consumer_id, p.committed_offset, p.lag, p.points_total) == ("c1", 15, 5, 150)
