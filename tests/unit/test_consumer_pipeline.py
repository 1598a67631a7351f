"""Pipeline logic with in-memory fakes: dead letters, commit-after-write, retries, tokens."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError, ProgrammingError

from runstream.consumer.config import ConsumerConfig
from runstream.consumer.pipeline import Pipeline, dedup_token
from runstream.consumer.rows import RowBatch
from runstream.consumer.sink import ClickHouseSink
from runstream.consumer.sources import Message, Position
from runstream.proto import codec
from runstream.proto.errors import RunstreamError, UnavailableError
from tests.factories import metrics_event, sample_run
from tests.fakes import TOPIC, FakeClient, FakeDeadLetters, FakeSource
from tests.helpers import wait_for


def config(**kw: Any) -> ConsumerConfig:
    base: dict[str, Any] = {"clickhouse_dsn": "chdb:///tmp/unused", "spool_dir": Path("/tmp/x"),
                            "max_batch_age_s": 3600.0, "poll_timeout_s": 0.0}
    return ConsumerConfig(**{**base, **kw})


def messages(payloads: list[bytes], partition: int = 0, start: int = 0,
             content_type: str | None = codec.PROTOBUF_CONTENT_TYPE) -> list[Message]:
    return [Message(value=p, content_type=content_type, topic=TOPIC, partition=partition,
                    offset=start + i) for i, p in enumerate(payloads)]


def build(msgs: list[Message], failures: list[Exception] | None = None, **kw: Any):
    source = FakeSource(msgs)
    client = FakeClient(failures, source.log)
    dead = FakeDeadLetters(source.log)
    sink = ClickHouseSink(client, "db", initial_backoff_s=0.001, max_backoff_s=0.001)
    return Pipeline(source, sink, dead, config(**kw)), source, client, dead


def test_dedup_token_depends_on_ranges_and_bytes_not_order():
    digests = {("t", 0): 42, ("t", 1): 7}
    a = dedup_token({("t", 0): (5, 9), ("t", 1): (0, 3)}, digests)
    b = dedup_token({("t", 1): (0, 3), ("t", 0): (5, 9)}, dict(reversed(digests.items())))
    assert a == b
    assert a.startswith("rs2-")
    assert a != dedup_token({("t", 0): (5, 10), ("t", 1): (0, 3)}, digests)
    assert a != dedup_token({("t", 0): (5, 9), ("t", 1): (0, 3)}, {("t", 0): 43, ("t", 1): 7})
    assert a != dedup_token({("u", 0): (5, 9), ("t", 1): (0, 3)}, digests)
    # The bytes are checksummed per partition: swapping them between partitions counts.
    assert a != dedup_token({("t", 0): (5, 9), ("t", 1): (0, 3)}, {("t", 0): 7, ("t", 1): 42})


def test_valid_events_stored_then_committed_last():
    events = sample_run(points=6)
    pipe, source, client, _dead = build(messages([codec.encode(e) for e in events]))
    assert pipe.drain(5)
    assert client.rows("metrics") == 12
    assert client.rows("runs") == 1
    assert client.rows("run_status") == 2
    assert source.commits == [{(TOPIC, 0): len(events) - 1}]
    assert source.log[-1] == "commit"
    assert source.log.index("dlq-flush") > max(
        i for i, x in enumerate(source.log) if x.startswith("insert"))
    assert (pipe.events, pipe.points, pipe.batches, pipe.dead_lettered) == (9, 12, 1, 0)
    # One batch -> one token, suffixed per table.
    tokens = {tok for _, _, tok in client.inserts}
    assert len(tokens) == len(client.inserts)
    assert {tok.rsplit(":", 1)[0] for tok in tokens} == {
        dedup_token({(TOPIC, 0): (0, 8)}, {(TOPIC, 0): pipe_digest(events)})}


def pipe_digest(events: list[Any]) -> int:
    import zlib
    digest = 0
    for e in events:
        digest = zlib.crc32(codec.encode(e), digest)
    return digest


def test_avro_and_protobuf_messages_both_decode():
    events = sample_run(points=4)
    msgs = [Message(value=codec.encode(e, codec.AVRO), content_type=codec.AVRO_CONTENT_TYPE,
                    topic=TOPIC, partition=0, offset=i) for i, e in enumerate(events)]
    pipe, _, client, dead = build(msgs)
    assert pipe.drain(5)
    assert client.rows("metrics") == 8
    assert not dead.flushed


def test_malformed_messages_are_dead_lettered_not_stored():
    good = metrics_event(3, seq=1)
    bad_valid = metrics_event(3, seq=2)
    bad_valid.run_id = "no spaces allowed"
    truncated = codec.encode(metrics_event(3, seq=3))[:-5]
    payloads = [codec.encode(good), b"\xff\x00garbage", truncated, codec.encode(bad_valid)]
    msgs = messages(payloads)
    msgs.append(Message(value=b"tail", content_type=None, topic=TOPIC, partition=0, offset=4,
                        error="corrupt spool file: checksum mismatch"))
    pipe, source, client, dead = build(msgs)
    assert pipe.drain(5)
    assert client.rows("metrics") == 3
    assert [m.offset for m, _ in dead.flushed] == [1, 2, 3, 4]
    reasons = [r for _, r in dead.flushed]
    assert reasons[0].startswith("DecodeError")
    assert reasons[2].startswith("ValidationError") and "run_id" in reasons[2]
    assert reasons[3] == "corrupt spool file: checksum mismatch"
    assert source.commits == [{(TOPIC, 0): 4}]
    assert pipe.dead_lettered == 4


def test_unknown_content_type_is_dead_lettered():
    msgs = messages([codec.encode(metrics_event(2))], content_type="text/plain")
    pipe, _, client, dead = build(msgs)
    assert pipe.drain(5)
    assert client.inserts == []
    assert "content-type" in dead.flushed[0][1]


def test_failed_write_commits_nothing_and_keeps_the_batch():
    msgs = messages([codec.encode(metrics_event(4, seq=i + 1)) for i in range(3)])
    pipe, source, client, _dead = build(msgs, failures=[ProgrammingError("no such table")])
    with pytest.raises(RunstreamError, match="no such table"):
        pipe.drain(5)
    assert source.commits == []
    assert "dlq-flush" not in source.log
    # The batch is still in hand: the next flush writes it (same token) and commits.
    pipe.flush()
    assert client.rows("metrics") == 12
    assert source.commits == [{(TOPIC, 0): 2}]


def test_transient_errors_are_retried_with_the_same_token():
    msgs = messages([codec.encode(metrics_event(4))])
    pipe, source, client, dead = build(
        msgs, failures=[OperationalError("connection refused"), ConnectionResetError("reset")])
    assert pipe.drain(5)
    assert pipe.sink.retries == 2
    assert client.rows("metrics") == 4
    assert source.commits == [{(TOPIC, 0): 0}]
    assert not dead.flushed


def test_transient_error_gives_up_once_stop_is_set():
    stop = threading.Event()
    stop.set()
    client = FakeClient([OperationalError("down")] * 3)
    sink = ClickHouseSink(client, "db", initial_backoff_s=0.001)
    batch = RowBatch()
    batch.add(metrics_event(2))
    with pytest.raises(UnavailableError):
        sink.write(batch, "tok", stop)
    assert len(client.failures) == 2  # tried exactly once


def test_batches_cut_by_rows_and_ranges_per_partition():
    msgs = [*messages([codec.encode(metrics_event(10, seq=i + 1)) for i in range(4)], 0),
            *messages([codec.encode(metrics_event(10, seq=i + 11)) for i in range(4)], 1, 100)]
    msgs = [m for pair in zip(msgs[:4], msgs[4:], strict=True) for m in pair]  # interleave
    pipe, source, client, _ = build(msgs, max_batch_rows=40)
    assert pipe.drain(5)
    assert client.rows("metrics") == 80
    assert pipe.batches == 2
    assert source.commits == [{(TOPIC, 0): 1, (TOPIC, 1): 101}, {(TOPIC, 0): 3, (TOPIC, 1): 103}]


def test_batch_flushed_when_old():
    now = [0.0]
    source = FakeSource(messages([codec.encode(metrics_event(2))]))
    client = FakeClient()
    pipe = Pipeline(source, ClickHouseSink(client, "db"), FakeDeadLetters(source.log),
                    config(max_batch_age_s=0.5), clock=lambda: now[0])
    pipe.run_once()
    assert source.commits == []
    now[0] = 0.6
    pipe.run_once()  # due: sealed and written on the writer thread, committed once written
    wait_for(lambda: pipe.run_once() or source.commits, lambda c: c == [{(TOPIC, 0): 0}],
             timeout_s=10)
    assert client.rows("metrics") == 2


def test_next_batch_is_decoded_while_one_is_written_and_commits_follow_writes():
    gate = threading.Event()

    class HeldClient(FakeClient):
        def insert_arrow(self, *args: Any, **kwargs: Any) -> None:
            assert gate.wait(10)
            super().insert_arrow(*args, **kwargs)

    source = FakeSource(messages([codec.encode(metrics_event(10, seq=i + 1)) for i in range(3)]))
    client = HeldClient(log=source.log)
    pipe = Pipeline(source, ClickHouseSink(client, "db"), FakeDeadLetters(source.log),
                    config(max_batch_rows=11, max_poll_records=1))  # one event per batch
    pipe.run_once()  # batch 1 sealed; its write is held at the gate
    second = threading.Thread(target=pipe.run_once)
    second.start()  # polls and decodes message 2, then waits for write 1 (one batch waits)
    wait_for(lambda: len(source.messages), lambda n: n == 1, timeout_s=10)
    assert client.inserts == [] and source.commits == []
    gate.set()
    second.join(10)
    assert pipe.drain(10)
    assert client.rows("metrics") == 30
    # Commits only ever move forward, and each follows the insert of what it covers.
    committed = [c[(TOPIC, 0)] for c in source.commits]
    assert committed == sorted(committed) and committed[-1] == 2
    for offset, at in zip(committed, [i for i, x in enumerate(source.log) if x == "commit"],
                          strict=True):
        assert source.log[:at].count("insert:metrics") >= offset + 1


def test_parallel_writes_are_committed_in_sealing_order():
    gate = threading.Event()

    class HoldFirstBatch(FakeClient):
        def insert_arrow(self, table: str, data: Any, **kwargs: Any) -> None:
            if data.column("seq")[0].as_py() == 1:
                assert gate.wait(10)
            super().insert_arrow(table, data, **kwargs)

    source = FakeSource(messages([codec.encode(metrics_event(10, seq=i + 1)) for i in range(3)]))
    first, second = HoldFirstBatch(log=source.log), HoldFirstBatch(log=source.log)
    sink = ClickHouseSink(first, "db", more_clients=[second])
    assert sink.concurrency == 2
    pipe = Pipeline(source, sink, FakeDeadLetters(source.log),
                    config(max_batch_rows=11, max_poll_records=1))  # one event per batch
    pipe.run_once()
    pipe.run_once()  # batches 1 and 2 both writing; neither call waits
    # Batch 2 is stored while batch 1 is held, but committing it would skip batch 1.
    wait_for(lambda: first.rows("metrics") + second.rows("metrics"), lambda n: n == 10,
             timeout_s=10)
    assert source.commits == []
    gate.set()
    assert pipe.drain(10)
    assert first.rows("metrics") + second.rows("metrics") == 30
    committed = [c[(TOPIC, 0)] for c in source.commits]
    assert committed == sorted(committed) and committed[-1] == 2


def test_revoke_flushes_the_batch_in_hand():
    pipe, source, _client, _ = build(messages([codec.encode(metrics_event(2))]))
    pipe.run_once()
    assert source.commits == []
    assert source.revoke is not None
    source.revoke()
    assert source.commits == [{(TOPIC, 0): 0}]


def test_run_until_stop_commits_the_batch_in_hand_and_closes():
    stop = threading.Event()
    msgs = messages([codec.encode(metrics_event(3, seq=i + 1)) for i in range(5)])
    pipe, source, client, dead = build(msgs)
    thread = pipe.start(stop)
    assert thread.name == "runstream-consumer"
    wait_for(lambda: pipe.messages, lambda n: n == 5, timeout_s=10)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert pipe.error is None
    assert client.rows("metrics") == 15
    assert source.commits[-1] == {(TOPIC, 0): 4}
    assert source.closed and dead.closed


def test_commit_failure_is_retried_with_the_next_commit():
    class FlakyCommitSource(FakeSource):
        fail = True

        def commit(self, positions: Mapping[Position, int]) -> None:
            if self.fail:
                self.fail = False
                raise UnavailableError("coordinator moved")
            super().commit(positions)

    source = FlakyCommitSource(messages([codec.encode(metrics_event(2))]))
    pipe = Pipeline(source, ClickHouseSink(FakeClient(), "db"), FakeDeadLetters(source.log),
                    config())
    assert pipe.drain(5)
    assert source.commits == [{(TOPIC, 0): 0}]
