"""Nothing lost, ever, through the real broker, the real pipeline and the real engine:
each producer's account of its points (logged, stored, dropped by reason) in GetRun and
``runstream show``; params immutable across processes (the first value wins, later ones
are conflicts); a store of the previous schema upgraded at start; the dead-letter topic
created with an INFO line, not an ERROR."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from runstream.cli.runs import cmd_show
from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.proto import codec, tables
from runstream.proto.v1 import events_pb2 as pb
from runstream.query.client import Client
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService
from tests.factories import TS, envelope, insert, make_config, metrics_event
from tests.helpers import count, create_topic, produce, wait_for

pytestmark = pytest.mark.kafka


def ingest(bootstrap: str, topic: str, dsn: str, database: str, tmp_path: Path,
           events: list[pb.RunEvent]) -> None:
    """Send ``events`` through Kafka and a real pipeline into ``database``; wait for all."""
    produce(bootstrap, topic, events, codec.PROTOBUF)
    pipeline = build_kafka_pipeline(make_config(bootstrap, topic, dsn, database, tmp_path))
    try:
        assert pipeline.drain(timeout_s=60)
        assert pipeline.dead_lettered == 0
    finally:
        pipeline.close()


@pytest.fixture
def query(chdb_dsn: str) -> Iterator[Any]:
    """``open(database) -> Client`` of in-process query servers over the session's store."""
    opened: list[tuple[grpc.Server, ClickHouseRepository, Client]] = []

    def open_(database: str) -> Client:
        repository = ClickHouseRepository(chdb_dsn, database)
        server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4)
        server.start()
        client = Client(f"127.0.0.1:{port}", timeout_s=60)
        opened.append((server, repository, client))
        return client

    yield open_
    for server, repository, client in opened:
        client.close()
        stop(server, 1.0)
        repository.close()


def finished(run_id: str, rank: int, producer: str, seq: int, logged: int,
             drops: tuple[tuple[str, int, int], ...] = (),
             status: pb.RunStatus = pb.FINISHED) -> pb.RunEvent:
    e = envelope(run_id, rank, seq, producer_id=producer, ts_ms=TS + seq)
    e.run_finished.status = status
    e.run_finished.points_logged = logged
    for reason, events, points in drops:
        e.run_finished.dropped.add(reason=reason, events=events, points=points)
    return e


ENOSPC = "spool write failed: OSError(28, 'No space left on device')"


def account_events(run_id: str) -> list[pb.RunEvent]:
    """Rank 0: one producer, 300 points stored, 70,000 dropped on a full disk. Rank 1: a
    job restarted under the same run id and rank: two producers, 100 + 50 points."""
    events = [metrics_event(100, run_id=run_id, rank=0, seq=s, producer_id="pa", step0=s * 100)
              for s in (1, 2, 3)]
    events.append(finished(run_id, 0, "pa", 4, 70_300, ((ENOSPC, 70, 70_000),)))
    events.append(metrics_event(100, run_id=run_id, rank=1, seq=1, producer_id="pb1"))
    events.append(finished(run_id, 1, "pb1", 2, 100, status=pb.FAILED))
    events.append(metrics_event(50, run_id=run_id, rank=1, seq=1, producer_id="pb2",
                                step0=1000))
    events.append(finished(run_id, 1, "pb2", 2, 50, (("event could not be encoded", 1, 0),)))
    return events


def test_account_of_logged_stored_and_dropped_points(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path,
    query: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    events = account_events("acct-1")
    # Delivered twice (a replay): counts must not double.
    ingest(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path, events + events)
    ch = connect_clickhouse(chdb_dsn, ch_database)
    # A status row the consumer writes itself (liveness) carries no account.
    insert(ch, tables.RUN_STATUS, [{"run_id": "acct-1", "rank": 0, "experiment": "exp",
                                    "status": "FINISHED", "seq": 99, "ts_ms": TS + 99,
                                    "producer_id": tables.CONSUMER_PRODUCER_ID}])
    client = query(ch_database)
    ranks = client.get_run("acct-1").ranks
    assert [(r.rank, r.points_logged, r.points_stored, r.producers_finished) for r in ranks] == [
        (0, 70_300, 300, 1), (1, 150, 150, 2)]
    assert [(d.reason, d.events, d.points) for d in ranks[0].dropped] == [(ENOSPC, 70, 70_000)]
    assert [(d.reason, d.events, d.points) for d in ranks[1].dropped] == [
        ("event could not be encoded", 1, 0)]

    assert cmd_show(client, "acct-1", False) == 0
    text = capsys.readouterr().out
    assert f"70,000 points dropped ({ENOSPC})" in text
    assert "1 events dropped (event could not be encoded)" in text
    assert "450 points stored, 70,450 logged" in text
    assert "logged but neither stored nor counted" not in text  # 300 + 70,000 = 70,300
    assert cmd_show(client, "acct-1", True) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["ranks"][0]["dropped"] == [{"reason": ENOSPC, "events": 70, "points": 70_000}]
    assert shown["ranks"][1]["points_logged"] == 150


def params_event(run_id: str, producer: str, seq: int, ts_ms: int, value: str) -> pb.RunEvent:
    e = envelope(run_id, 0, seq, producer_id=producer, ts_ms=ts_ms)
    e.params.params.add(key="lr", value=value, type=pb.FLOAT)
    e.params.params.add(key="batch", value="64", type=pb.INT)
    return e


def test_a_param_keeps_its_first_value_across_processes(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, ch_database: str, tmp_path: Path,
    query: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    first = params_event("par-1", "p1", 2, TS, "0.1")
    second = params_event("par-1", "p2", 2, TS + 1000, "0.2")
    resumed = params_event("par-1", "p3", 2, TS + 2000, "0.1")  # the same value again
    # The same, arriving in the other order (the later value is in Kafka first).
    reversed_ = [params_event("par-2", "p2", 2, TS + 1000, "0.2"),
                 params_event("par-2", "p1", 2, TS, "0.1")]
    started = []
    for run_id in ("par-1", "par-2"):
        e = envelope(run_id, 0, 1, producer_id="p1", ts_ms=TS - 10)
        e.run_started.name = run_id
        started.append(e)
    ingest(kafka_bootstrap, kafka_topic, chdb_dsn, ch_database, tmp_path,
           [*started, first, second, resumed, *reversed_])
    ch = connect_clickhouse(chdb_dsn, ch_database)
    assert count(ch, tables.PARAMS.name) == 6  # (lr 0.1, lr 0.2, batch 64) x 2 runs
    client = query(ch_database)
    for optimized in (False, True):
        if optimized:  # merged parts must keep the same answer
            ch.command(f"OPTIMIZE TABLE {tables.PARAMS.name} FINAL")
        for run_id in ("par-1", "par-2"):
            run = client.get_run(run_id)
            assert [(p.key, p.value) for p in run.params] == [("batch", "64"), ("lr", "0.1")]
            assert [(c.key, c.rank, c.value, c.type, c.producer_id, c.ts_ms)
                    for c in run.param_conflicts] == [("lr", 0, "0.2", "FLOAT", "p2", TS + 1000)]
        for filter_text, expected in (("params.lr = '0.1'", ["par-1", "par-2"]),
                                      ("params.lr = '0.2'", []),
                                      ("params.lr > 0.15", []),
                                      ("params.lr < 0.15", ["par-1", "par-2"])):
            runs, _ = client.search_runs(filter=filter_text)
            assert sorted(r.run_id for r in runs) == expected, filter_text
    assert cmd_show(client, "par-1", False) == 0
    assert "param lr: 0.1 (also logged: 0.2 by producer p2 at" in capsys.readouterr().out


# The two tables of commit 8477644 that this schema changed, as that tables.py created them.
OLD_RUN_STATUS = (
    "CREATE TABLE IF NOT EXISTS `{db}`.`run_status` (`run_id` String, `rank` UInt32,"
    " `experiment` String, `status` LowCardinality(String), `error` String,"
    " `producer_id` String, `seq` UInt64, `ts_ms` Int64)"
    " ENGINE = ReplacingMergeTree ORDER BY (run_id, rank, producer_id, seq)"
    " SETTINGS non_replicated_deduplication_window = 10000"
)
OLD_PARAMS = (
    "CREATE TABLE IF NOT EXISTS `{db}`.`params` (`run_id` String, `key` String,"
    " `value` String, `type` LowCardinality(String), `rank` UInt32, `producer_id` String,"
    " `seq` UInt64, `ts_ms` Int64)"
    " ENGINE = ReplacingMergeTree(ts_ms) ORDER BY (run_id, key, rank)"
    " SETTINGS non_replicated_deduplication_window = 10000"
)


def test_a_store_of_the_previous_schema_is_upgraded_at_start(
    kafka_bootstrap: str, kafka_topic: str, chdb_dsn: str, tmp_path: Path, query: Any,
) -> None:
    database = f"rs_old_{uuid.uuid4().hex[:8]}"
    ch = connect_clickhouse(chdb_dsn, database)
    ch.command(OLD_RUN_STATUS.format(db=database))
    ch.command(OLD_PARAMS.format(db=database))
    new_only = (f"`{tables.PARAMS.name}`", f"`{tables.STORE_IDENTITY.name}`")
    for statement in tables.all_ddl(database):
        if not any(name in statement.split("(")[0] for name in new_only):
            ch.command(statement)
    # What the old consumer stored: a run with a param and a status row.
    ch.insert("params", [["old-1", "lr", "0.1", "FLOAT", 0, "p0", 2, TS]],
              column_names=["run_id", "key", "value", "type", "rank", "producer_id", "seq",
                            "ts_ms"])
    ch.insert("run_status", [["old-1", 0, "exp", "RUNNING", "", "p0", 1, TS]],
              column_names=["run_id", "rank", "experiment", "status", "error", "producer_id",
                            "seq", "ts_ms"])

    ingest(kafka_bootstrap, kafka_topic, chdb_dsn, database, tmp_path, [
        metrics_event(40, run_id="old-1", rank=0, seq=3, producer_id="p0"),
        finished("old-1", 0, "p0", 4, 40, (("queue full", 2, 10),)),
        params_event("old-1", "p9", 2, TS + 5000, "0.2"),  # a later process: a conflict
    ])
    columns = {name for (name,) in ch.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'run_status'",
        parameters={"db": database}).result_rows}
    assert columns == set(tables.RUN_STATUS.column_names)
    tables_now = {name for (name,) in ch.query(
        "SELECT name FROM system.tables WHERE database = {db:String}",
        parameters={"db": database}).result_rows}
    assert "params" not in tables_now and tables.LEGACY_PARAMS_MIGRATED in tables_now
    run = query(database).get_run("old-1")
    assert [(p.key, p.value) for p in run.params] == [("batch", "64"), ("lr", "0.1")]
    assert [(c.key, c.value, c.producer_id) for c in run.param_conflicts] == [("lr", "0.2", "p9")]
    assert [(r.rank, r.status, r.points_logged, r.points_stored) for r in run.ranks] == [
        (0, "FINISHED", 40, 40)]
    assert [(d.reason, d.events, d.points) for d in run.ranks[0].dropped] == [
        ("queue full", 2, 10)]
    # Started again on the upgraded store: nothing to do, nothing duplicated.
    again = build_kafka_pipeline(make_config(kafka_bootstrap, kafka_topic, chdb_dsn, database,
                                             tmp_path))
    again.close()
    assert count(ch, tables.PARAMS.name) == 3


def test_the_dead_letter_topic_is_created_with_an_info_line(
    kafka_bootstrap: str, chdb_dsn: str, ch_database: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"rs-test-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, topic)  # its .dlq does not exist
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, value=b"not an event", key=b"bad/0",
                  headers=[(codec.CONTENT_TYPE_HEADER, codec.PROTOBUF_CONTENT_TYPE.encode())])
    producer.flush()
    producer.close()
    caplog.set_level(logging.INFO)
    pipeline = build_kafka_pipeline(make_config(kafka_bootstrap, topic, chdb_dsn, ch_database,
                                                tmp_path))
    try:
        wait_for(lambda: pipeline.drain(timeout_s=30) and pipeline.dead_lettered, timeout_s=60,
                 what="the dead letter")
    finally:
        pipeline.close()
    assert pipeline.dead_lettered == 1
    assert f"created dead-letter topic {topic}.dlq" in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
