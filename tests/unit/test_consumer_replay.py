"""Replays cut like the batch they replay: plans recorded with commits, reproduced after a
crash whatever the new batch size, so the insert token repeats (in-memory fakes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from runstream.consumer.config import ConsumerConfig
from runstream.consumer.pipeline import Pipeline
from runstream.consumer.sink import ClickHouseSink
from runstream.consumer.sources import (
    Message,
    PlanningSource,
    Position,
    ReplayPlan,
    commit_metadata,
    parse_commit_metadata,
)
from runstream.proto import codec
from tests.factories import metrics_event
from tests.fakes import TOPIC, FakeClient, FakeDeadLetters, FakeSource


class Crash(BaseException):
    """The process dying between an insert and its commit."""


class FakePlanningSource(FakeSource):
    """FakeSource that records plans with commits and hands out plans to reproduce;
    raises Crash at commit number ``crash_at`` (1-based), before recording it."""

    records_plans = True

    def __init__(self, messages: list[Message], plans: Sequence[ReplayPlan] = (),
                 crash_at: int = 0) -> None:
        super().__init__(messages)
        self.to_replay = list(plans)
        self.recorded: list[list[ReplayPlan]] = []
        self.crash_at = crash_at
        self.calls = 0

    def commit(self, positions: Mapping[Position, int],
               plans: Sequence[ReplayPlan] = ()) -> None:
        self.calls += 1
        if self.calls == self.crash_at:
            raise Crash
        super().commit(positions)
        self.recorded.append(list(plans))

    def take_plans(self) -> list[ReplayPlan]:
        out, self.to_replay = self.to_replay, []
        return out


def config(**kw: Any) -> ConsumerConfig:
    base: dict[str, Any] = {"clickhouse_dsn": "chdb:///tmp/unused", "spool_dir": Path("/tmp/x"),
                            "max_batch_age_s": 3600.0, "poll_timeout_s": 0.0}
    return ConsumerConfig(**{**base, **kw})


def msg(partition: int, offset: int, seq: int) -> Message:
    return Message(value=codec.encode(metrics_event(10, seq=seq, rank=partition)),
                   content_type=codec.PROTOBUF_CONTENT_TYPE, topic=TOPIC,
                   partition=partition, offset=offset)


def pipeline(source: FakeSource, **kw: Any) -> tuple[Pipeline, FakeClient]:
    client = FakeClient(log=source.log)
    replay_plans = kw.pop("replay_plans", True)
    pipe = Pipeline(source, ClickHouseSink(client, "db"), FakeDeadLetters(source.log),
                    config(**kw), replay_plans=replay_plans)
    return pipe, client


def tokens(client: FakeClient) -> list[str]:
    """Batch tokens in insert order, one per batch."""
    out: list[str] = []
    for _, _, token in client.inserts:
        batch = token.rsplit(":", 1)[0]
        if batch not in out:
            out.append(batch)
    return out


def test_the_kafka_source_is_a_planning_source_and_the_spool_is_not():
    from runstream.consumer.sources import KafkaSource, SpoolSource

    assert hasattr(KafkaSource, "take_plans")
    assert not isinstance(FakeSource([]), PlanningSource)
    assert isinstance(FakePlanningSource([]), PlanningSource)
    assert not hasattr(SpoolSource, "take_plans")
    # A Kafka source without a store id records no plans: the pipeline commits plainly.
    source = FakePlanningSource([msg(0, 0, 1)])
    source.records_plans = False
    pipe, _client = pipeline(source)
    assert pipe.drain(5)
    assert source.commits == [{(TOPIC, 0): 0}]


def test_plans_are_recorded_before_the_insert_and_cleared_by_its_commit():
    source = FakePlanningSource([msg(0, 5, 1), msg(1, 100, 2), msg(0, 6, 3)])
    pipe, _client = pipeline(source)
    assert pipe.drain(5)
    # First the plan, offsets unmoved (first - 1); then the insert; then the commit.
    assert source.log[0] == "commit" and source.log[1].startswith("insert:")
    assert source.commits[0] == {(TOPIC, 0): 4, (TOPIC, 1): 99}
    (plan,) = source.recorded[0]
    assert dict(plan.ranges) == {(TOPIC, 0): (5, 6), (TOPIC, 1): (100, 100)}
    assert source.commits[-1] == {(TOPIC, 0): 6, (TOPIC, 1): 100}
    assert source.recorded[-1] == []
    assert len(source.commits) == 2


def crashed_batch() -> tuple[list[Message], ReplayPlan, str]:
    """A consumer with large batches inserts one batch over partitions 0 and 1 and dies
    before committing it: the messages, the plan it recorded and its batch token."""
    msgs = [msg(p, 10 * p + i, 100 * p + i + 1) for i in range(4) for p in (0, 1)]
    source = FakePlanningSource(msgs, crash_at=2)
    pipe, client = pipeline(source)
    with pytest.raises(Crash):
        pipe.drain(5)
    assert source.commits == [{(TOPIC, 0): -1, (TOPIC, 1): 9}]  # the plan only
    (plan,) = source.recorded[0]
    (token,) = tokens(client)
    return msgs, plan, token


@pytest.mark.parametrize("replay_plans", [True, False])
def test_a_replay_is_cut_to_the_plan_whatever_the_batch_size_and_order(replay_plans: bool):
    msgs, plan, token = crashed_batch()
    # Restarted with one event per batch; partition 1 now arrives first, and partition 0
    # has two more messages, which come before partition 1's planned ones are all read.
    later = [msg(0, 4, 5), msg(0, 5, 6)]
    again = [m for m in msgs if m.partition == 0] + later + [m for m in msgs if m.partition == 1]
    source = FakePlanningSource(again, plans=[plan])
    pipe, client = pipeline(source, max_batch_rows=10, max_poll_records=3,
                            replay_plans=replay_plans)
    assert pipe.drain(5)
    assert client.rows("metrics") == 100
    if not replay_plans:  # what a naive re-cut does: new tokens, duplicates in the table
        assert token not in tokens(client)
        return
    assert tokens(client)[0] == token  # ClickHouse drops this insert
    assert pipe.replayed_plans == 1
    # Partition 0's later messages waited for the replayed batch (then went into the
    # next one together): its commits stay in offset order.
    later_seqs = [cols[7] for table, cols, tok in client.inserts
                  if table == "metrics" and not tok.startswith(token)]
    assert sorted(s for seqs in later_seqs for s in seqs) == [5] * 10 + [6] * 10
    committed = [c[(TOPIC, 0)] for c in source.commits if (TOPIC, 0) in c]
    assert committed == sorted(committed) and committed[-1] == 5


def test_plans_replay_in_order_when_a_later_one_completes_first():
    one = ReplayPlan("a.1", {(TOPIC, 0): (0, 1)})
    two = ReplayPlan("a.2", {(TOPIC, 0): (2, 3), (TOPIC, 1): (0, 1)})
    msgs = [msg(1, 0, 11), msg(1, 1, 12), msg(0, 0, 1), msg(0, 1, 2), msg(0, 2, 3),
            msg(0, 3, 4)]
    source = FakePlanningSource(msgs, plans=[one, two])
    pipe, client = pipeline(source, max_batch_rows=1000)
    assert pipe.drain(5)
    assert pipe.replayed_plans == 2
    inserted = [cols for table, cols, _ in client.inserts if table == "metrics"]
    seqs = [sorted(set(cols[7])) for cols in inserted]  # the seq column
    assert seqs == [[1, 2], [3, 4, 11, 12]]
    assert source.commits[-1] == {(TOPIC, 0): 3, (TOPIC, 1): 1}


def test_a_message_before_a_plan_ends_the_replay_and_nothing_is_lost():
    plan = ReplayPlan("a.1", {(TOPIC, 0): (5, 6)})
    source = FakePlanningSource([msg(0, 3, 1), msg(0, 4, 2), msg(0, 5, 3), msg(0, 6, 4)],
                                plans=[plan])
    pipe, client = pipeline(source)
    assert pipe.drain(5)
    assert pipe.replayed_plans == 0
    assert client.rows("metrics") == 40
    assert source.commits[-1] == {(TOPIC, 0): 6}


def test_commit_metadata_round_trips_and_stays_readable_by_older_consumers():
    one = ReplayPlan("ab12cd34.7", {(TOPIC, 0): (5, 9), (TOPIC, 1): (0, 3)})
    two = ReplayPlan("ab12cd34.8", {(TOPIC, 0): (10, 12)})
    text = commit_metadata("store1", (TOPIC, 0), [one, two])
    assert text == "runstream-plan:ab12cd34.7.2.5-9,ab12cd34.8.1.10-12;runstream-store:store1"
    # Older consumers compared everything after "runstream-store:" at the start: this
    # reads as "no store recorded" to them (offset trusted), not as another store.
    assert not text.startswith("runstream-store:")
    assert parse_commit_metadata(text) == (
        "store1", [("ab12cd34.7", 2, 5, 9), ("ab12cd34.8", 1, 10, 12)])
    assert commit_metadata("store1", (TOPIC, 2), [one]) == "runstream-store:store1"
    assert commit_metadata("", (TOPIC, 0), [one]) == ""
    assert parse_commit_metadata("runstream-store:s") == ("s", [])
    assert parse_commit_metadata("") == (None, [])
    assert parse_commit_metadata("runstream-plan:x.1.1.zz-3,y.2.1.4-5;runstream-store:s") == (
        "s", [("y.2", 1, 4, 5)])
    many = [ReplayPlan(f"ab12cd34.{i}", {(TOPIC, 0): (10**9 + i, 10**9 + i)})
            for i in range(100)]
    assert commit_metadata("s", (TOPIC, 0), many) == "runstream-store:s"  # too long
