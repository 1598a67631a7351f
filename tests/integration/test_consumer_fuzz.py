"""Fuzzed messages between valid ones, through the real broker into the real engine.

Hypothesis builds each stream: random bytes, truncations and bit flips of valid events
(both encodings), and valid encodings of invalid events. The oracle is the consumer's
own pure chain (decode -> validate -> rows) run here per message: each message must end
in exactly one place — its rows in ClickHouse, or the dead-letter topic with its
original partition and offset — and every untouched valid event must be stored.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from runstream.consumer.dlq import OFFSET_HEADER, PARTITION_HEADER, REASON_HEADER
from runstream.consumer.factories import build_kafka_pipeline, connect_clickhouse
from runstream.consumer.rows import RowBatch
from runstream.proto import codec, tables, validation
from runstream.proto.errors import DecodeError, ValidationError
from runstream.proto.v1 import events_pb2 as pb
from tests.factories import make_config, metrics_event, sample_run
from tests.helpers import create_topic, drop_databases, table_columns, wait_for

pytestmark = pytest.mark.kafka


GOOD_PRODUCER = "good"  # the untouched valid events; fuzzed ones use other producer ids


def base_events() -> list[pb.RunEvent]:
    events = sample_run("fuzz-run", 0, points=40, producer_id="fz")
    events += [metrics_event(30, run_id="fuzz-run", seq=100 + i, producer_id="fz",
                             keys=("a", "b", "c")) for i in range(8)]
    return events


BASES = base_events()


def _invalid(e: pb.RunEvent, how: int) -> pb.RunEvent:
    """A valid encoding of an event that breaks one contract rule."""
    e = pb.RunEvent.FromString(e.SerializeToString())
    if how == 0:
        e.run_id = "has space"
    elif how == 1:
        e.world_size = 0
    elif how == 2:
        e.rank = e.world_size
    elif how == 3:
        e.seq = 0
    elif how == 4:
        e.ts_ms = 0
    elif how == 5:
        e.experiment = "x" * 300
    elif how == 6:
        e.run_id = ""
    elif how == 7:
        e.ClearField("body")
    elif how == 8:
        bad = pb.RunEvent(run_id=e.run_id, experiment=e.experiment, rank=e.rank,
                          world_size=e.world_size, producer_id="fz", seq=e.seq, ts_ms=e.ts_ms)
        bad.metrics.keys.append("k" * 300)
        bad.metrics.key_index.append(0)
        bad.metrics.steps.append(1)
        bad.metrics.values.append(1.0)
        bad.metrics.ts_ms.append(e.ts_ms)
        e = bad
    else:
        bad = pb.RunEvent(run_id=e.run_id, experiment=e.experiment, rank=e.rank,
                          world_size=e.world_size, producer_id="fz", seq=e.seq, ts_ms=e.ts_ms)
        bad.run_finished.status = pb.CRASHED
        e = bad
    return e


encodings = st.sampled_from([codec.PROTOBUF, codec.AVRO])


base_index = st.integers(0, len(BASES) - 1)


@st.composite
def fuzzed(draw: st.DrawFn) -> tuple[bytes, str | None]:
    kind = draw(st.sampled_from(["random", "truncate", "flip", "invalid"]))
    encoding = draw(encodings)
    ct: str | None = draw(st.sampled_from([codec.CONTENT_TYPES[encoding], None]))
    if kind == "random":
        return draw(st.binary(max_size=120)), draw(
            st.sampled_from([codec.PROTOBUF_CONTENT_TYPE, codec.AVRO_CONTENT_TYPE, None,
                             "text/plain"]))
    data = codec.encode(BASES[draw(base_index)], encoding)
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))], ct
    if kind == "flip":
        buf = bytearray(data)
        for bit in draw(st.lists(st.integers(0, len(buf) * 8 - 1), min_size=1, max_size=4)):
            buf[bit // 8] ^= 1 << (bit % 8)
        return bytes(buf), ct
    event = _invalid(BASES[draw(base_index)], draw(st.integers(0, 9)))
    try:
        return codec.encode(event, encoding), ct
    except Exception:  # Avro cannot encode an event without a body: send protobuf
        return codec.encode(event), codec.PROTOBUF_CONTENT_TYPE


NATURAL_KEY = ("run_id", "key", "rank", "step", "producer_id", "seq", "idx")


def oracle(value: bytes, content_type: str | None) -> set[tuple[Any, ...]] | None:
    """The natural keys of the points the consumer stores for this message, or None if it
    must be dead-lettered."""
    try:
        event = codec.decode(value, content_type)
        validation.validate(event)
        batch = RowBatch()
        batch.add(event)
    except (DecodeError, ValidationError):
        return None
    columns = dict(zip(tables.METRICS.column_names, table_columns(batch, tables.METRICS),
                       strict=True))
    return set(zip(*(columns[c] for c in NATURAL_KEY), strict=True))


def good_event(i: int) -> pb.RunEvent:
    return metrics_event(10, run_id="good-run", seq=i + 1, producer_id=GOOD_PRODUCER)


# Generate only: a shrink would replay whole Kafka round trips for minutes.
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture,
                                 HealthCheck.large_base_example])
@given(messages=st.lists(fuzzed(), min_size=200, max_size=260))
def test_fuzzed_messages_stored_or_dead_lettered_exactly_once(
    messages: list[tuple[bytes, str | None]], kafka_bootstrap: str, chdb_dsn: str,
    tmp_path: Path,
) -> None:
    topic = f"rs-fuzz-{uuid.uuid4().hex[:10]}"
    database = f"rs_fuzz_{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, 2)
    create_topic(kafka_bootstrap, f"{topic}.dlq", 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20,
                             batch_size=1 << 20, max_request_size=32 << 20)
    # (send future, natural keys of the points it stores, or None: dead-lettered)
    sent: list[tuple[Any, set[tuple[Any, ...]] | None]] = []
    good = 0
    for i, (value, ct) in enumerate(messages):
        for v, c, expect in ((value, ct, oracle(value, ct)),
                             *([(codec.encode(good_event(good)), None,
                                 oracle(codec.encode(good_event(good)), None))]
                               if i % 3 == 0 else [])):
            headers = [] if c is None else [(codec.CONTENT_TYPE_HEADER, c.encode())]
            sent.append((producer.send(topic, value=v, key=b"k%d" % (i % 7), headers=headers),
                         expect))
        good += i % 3 == 0
    producer.flush()
    placed = [(f.get(timeout=30), expect) for f, expect in sent]
    producer.close()
    dead_expected = {(m.partition, m.offset) for m, e in placed if e is None}
    # Bit flips can make two stored events share a point's natural key; ClickHouse keeps
    # one of them, so compare distinct keys.
    keys_expected: set[tuple[Any, ...]] = set().union(*(e for _, e in placed if e is not None))

    try:
        pipeline = build_kafka_pipeline(make_config(kafka_bootstrap, topic, chdb_dsn, database,
                                                    tmp_path, max_batch_rows=2000))
        try:
            assert pipeline.drain(timeout_s=120)
        finally:
            pipeline.close()
        assert pipeline.messages == len(placed)
        assert pipeline.dead_lettered == len(dead_expected)

        client = connect_clickhouse(chdb_dsn, database)
        stored = client.query(f"SELECT {', '.join(NATURAL_KEY)} FROM metrics FINAL").result_rows
        assert len(stored) == len(keys_expected)
        assert {tuple(r) for r in stored} == keys_expected
        assert client.query(
            "SELECT count() FROM metrics FINAL WHERE producer_id = {p:String}",
            parameters={"p": GOOD_PRODUCER}).result_rows[0][0] == 10 * good

        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        consumer.assign([TopicPartition(f"{topic}.dlq", 0)])
        dead: list[Any] = []
        try:
            def fetch() -> int:
                for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                    dead.extend(records)
                return len(dead)
            wait_for(fetch, lambda n: n >= len(dead_expected), timeout_s=60, what="dead letters")
        finally:
            consumer.close()
        where = [(int(dict(r.headers)[PARTITION_HEADER]), int(dict(r.headers)[OFFSET_HEADER]))
                 for r in dead]
        assert len(where) == len(set(where)) == len(dead_expected)  # each dead letter once
        assert set(where) == dead_expected  # exactly the undecodable / invalid ones
        assert all(dict(r.headers)[REASON_HEADER] for r in dead)
    finally:
        drop_databases(chdb_dsn, database)  # hypothesis runs many examples per test
