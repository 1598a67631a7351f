"""A consumer killed between an insert and its commit, restarted with other batch limits:
the replayed batch is cut to the recorded plan, its insert token repeats, and ClickHouse
drops the re-insert, so the tables hold every row once without FINAL (real Kafka broker,
real chdb)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.consumer.pipeline import Pipeline
from runstream.proto import codec, tables
from tests.factories import make_config, sample_run
from tests.helpers import produce

pytestmark = pytest.mark.kafka


class Crash(BaseException):
    """The process dying right after an insert, before the commit that follows it."""


def crash_after_first_insert(pipeline: Pipeline) -> None:
    """Make ``pipeline`` die at its first commit after an insert finished (plans are
    recorded by the commits before each insert, which still go through)."""
    written = threading.Event()
    write, commit = pipeline.sink.write, pipeline.source.commit

    def write_then_note(*args: Any, **kwargs: Any) -> None:
        write(*args, **kwargs)
        written.set()

    def commit_unless_written(*args: Any, **kwargs: Any) -> None:
        if written.is_set():
            raise Crash
        commit(*args, **kwargs)

    pipeline.sink.write = write_then_note  # type: ignore[method-assign]
    pipeline.source.commit = commit_unless_written  # type: ignore[method-assign]


def raw_counts(client: Any) -> dict[str, int]:
    """Rows per table as stored, no FINAL (merges are stopped, so nothing collapsed)."""
    return {t.name: int(client.query(f"SELECT count() FROM {t.name}").result_rows[0][0])
            for t in tables.TABLES}


def test_replay_after_a_crash_is_deduplicated_at_insert(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path
) -> None:
    events = [e for run in ("run-a", "run-b", "run-c", "run-d") for rank in range(2)
              for e in sample_run(run, rank, points=40, producer_id=f"{run}-p{rank}")]
    produce(kafka_bootstrap, kafka_topic, events, codec.PROTOBUF)
    admin = connect_clickhouse(chdb_dsn, ch_database)
    # No background merge may collapse duplicates before they are counted (a global
    # STOP MERGES does not reach tables created after it: create them first).
    merging = []
    for database in (ch_database, f"{ch_database}_ref"):
        for statement in tables.all_ddl(database):
            admin.command(statement)
        merging += [f"`{database}`.`{t.name}`" for t in tables.TABLES]
    for table in merging:
        admin.command(f"SYSTEM STOP MERGES {table}")
    try:
        # The reference: the same topic ingested once, by a consumer that never crashed.
        reference = build_kafka_pipeline(make_config(
            kafka_bootstrap, kafka_topic, chdb_dsn, f"{ch_database}_ref", tmp_path))
        try:
            assert reference.drain(timeout_s=60)
        finally:
            reference.close()
        expected = raw_counts(connect_clickhouse(chdb_dsn, f"{ch_database}_ref"))
        assert expected["metrics"] == 8 * 80

        # Batches of ~400 rows over several partitions, one insert at a time; dies after
        # the first insert, before committing it.
        # Static membership, as deployed (deploy/clickhouse/README.md): the restarted
        # consumer takes the dead one's place and partitions at once.
        first = make_config(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path,
                            max_batch_rows=400, writers=1, instance_id="consumer-1")
        crashed = build_kafka_pipeline(first)
        crash_after_first_insert(crashed)
        try:
            with pytest.raises(Crash):
                crashed.drain(timeout_s=60)
        finally:
            crashed.close()
        stored = raw_counts(admin)
        assert 0 < stored["metrics"] < expected["metrics"]  # one batch in, uncommitted

        # Restarted in the same group with other limits: a naive re-cut would differ.
        again = build_kafka_pipeline(dataclasses.replace(
            first, max_batch_rows=7, max_batch_age_s=0.05, writers=2))
        try:
            assert again.drain(timeout_s=60)
            assert again.events == len(events)  # the crashed batch was read again
        finally:
            again.close()
        got = raw_counts(admin)
        assert got == expected  # every row once: the re-insert was dropped by its token
        assert again.replayed_plans == 1
        final = int(admin.query("SELECT count() FROM metrics FINAL").result_rows[0][0])
        assert final == got["metrics"]
    finally:
        for table in merging:
            admin.command(f"SYSTEM START MERGES {table}")
