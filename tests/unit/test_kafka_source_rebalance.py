"""KafkaSource replaces a consumer stuck in a rebalance.

After a broker restart, kafka-python 3.0.12's consumer can stay without a generation while
it believes a rebalance is in progress: every commit raises RebalanceInProgressError
(kafka/coordinator/consumer.py, _send_offset_commit_request), the pipeline retries with the
next batch, and the group never re-forms (seen in tests/integration/test_producer_faults.py).
The rule pinned here, on a fake KafkaConsumer and a fake clock: commits refused for a
rebalance for longer than ``rebalance_stuck_s`` with no success in between rebuild the
consumer, once; the revoke callback then runs at the next poll, and nothing read through the
old consumer is committed through the new one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kafka
import pytest
from kafka import TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaConnectionError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import ConsumerGroupMetadata, MemberState

from runstream.consumer.sources import REBALANCE_STUCK_S, KafkaSource
from runstream.proto.errors import UnavailableError

TOPIC = "runstream.events"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
STUCK_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Broker:
    """What every fake consumer asks: the error its commits raise now (None: accepted)."""

    def __init__(self) -> None:
        self.refusal: BaseException | None = None
        self.unreachable = False
        self.poll_error: BaseException | None = None  # what every poll raises now
        self.consumers: list[FakeConsumer] = []


class FakeConsumer:
    """The part of KafkaConsumer a KafkaSource uses; the broker decides about commits."""

    broker: Broker

    def __init__(self, **settings: Any) -> None:
        if self.broker.unreachable:
            raise KafkaConnectionError()
        self.settings = settings
        self.listener: Any = None
        self.assigned: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, Any]] = []
        self.closed = False
        self.state = MemberState.STABLE  # kafka-python's member state
        self.broker.consumers.append(self)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def assign(self, *partitions: TopicPartition) -> None:
        """What kafka-python does at the end of a join: note the assignment."""
        self.assigned = set(partitions)
        self.listener.on_partitions_assigned(set(partitions))

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        if self.broker.poll_error is not None:
            raise self.broker.poll_error
        return {}

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata(group_id="runstream-test", state=self.state)

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.closed:
            raise AssertionError("commit through a closed consumer")
        if self.broker.refusal is not None:
            raise self.broker.refusal
        self.commits.append(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        # kafka-python reports the assignment as revoked (or lost) when it closes.
        if self.assigned:
            self.listener.on_partitions_lost(set(self.assigned))
            self.assigned = set()
        self.closed = True


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    broker = Broker()
    monkeypatch.setattr(FakeConsumer, "broker", broker, raising=False)
    monkeypatch.setattr(kafka, "KafkaConsumer", FakeConsumer)  # imported at each build
    return broker


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(broker: Broker, clock: Clock) -> Iterator[KafkaSource]:
    src = KafkaSource(["127.0.0.1:9"], TOPIC, "runstream-test", store_id="",
                      lag_interval_s=3600, rebalance_stuck_s=STUCK_S, clock=clock)
    yield src
    src.close()


def refused(src: KafkaSource, positions: dict[tuple[str, int], int] | None = None) -> None:
    """One commit, which the broker refuses; UnavailableError unless it is CommitFailedError."""
    try:
        src.commit(positions or {(TOPIC, 0): 9})
    except UnavailableError:
        pass


def test_the_default_bound_is_about_thirty_seconds() -> None:
    assert 10 <= REBALANCE_STUCK_S <= 60


def test_refusals_within_the_bound_keep_the_consumer(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 10, 20, 29.9, STUCK_S):  # not longer than the bound
        clock.now = 1000.0 + t
        with pytest.raises(UnavailableError):
            source.commit({(TOPIC, 0): 9})
    assert len(broker.consumers) == 1
    assert not broker.consumers[0].closed


def test_refusals_longer_than_the_bound_rebuild_the_consumer_once(
    source: KafkaSource, broker: Broker, clock: Clock, caplog: pytest.LogCaptureFixture,
) -> None:
    first = broker.consumers[0]
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source)
    assert len(broker.consumers) == 2
    second = broker.consumers[1]
    assert first.closed and not second.closed
    assert second.settings == first.settings  # the same settings
    assert second.listener is not None and second.listener is not first.listener
    warnings = [r for r in caplog.records
                if r.levelname == "WARNING" and "rebuilding the Kafka consumer" in r.getMessage()]
    assert len(warnings) == 1
    assert "RebalanceInProgressError" in warnings[0].getMessage()
    assert "31s" in warnings[0].getMessage()

    # Still refused afterwards: until the next poll commits are dropped, then the clock
    # starts again from the first refusal through the new consumer.
    for t in (32, 40, 50):
        clock.now = 1000.0 + t
        source.commit({(TOPIC, 0): 9})  # dropped: read through the old consumer
    source.poll(0.0, 10)
    for t in (51, 70, 81):
        clock.now = 1000.0 + t
        refused(source)
    assert len(broker.consumers) == 2  # exactly one rebuild so far
    clock.now = 1000.0 + 82
    refused(source)  # 31 s of refusals through the new consumer: a second one, as it should
    assert len(broker.consumers) == 3


def test_a_successful_commit_restarts_the_clock(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 15):
        clock.now = 1000.0 + t
        refused(source)
    clock.now = 1020.0
    broker.refusal = None
    source.commit({(TOPIC, 0): 9})
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (25, 40, 55):
        clock.now = 1000.0 + t
        refused(source)
    assert len(broker.consumers) == 1  # refused for 30 s since the success, not longer
    clock.now = 1000.0 + 55.5
    refused(source)
    assert len(broker.consumers) == 2


@pytest.mark.parametrize("refusal", [
    CommitFailedError("the group has already rebalanced"),
    IllegalGenerationError("runstream-test"),
    UnknownMemberIdError("runstream-test"),
])
def test_every_rebalance_refusal_counts(
    source: KafkaSource, broker: Broker, clock: Clock, refusal: BaseException,
) -> None:
    broker.refusal = refusal
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source)
    assert len(broker.consumers) == 2


def test_refusals_long_apart_are_not_one_stuck_rebalance(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    # Two ordinary rebalances of an idle consumer, an hour apart, each refusing one commit.
    broker.refusal = CommitFailedError("the group has already rebalanced")
    for t in (0, 3600, 3610, 3630):
        clock.now = 1000.0 + t
        refused(source)
    assert len(broker.consumers) == 1  # refused since 3600, for 30 s: not longer
    clock.now = 1000.0 + 3631
    refused(source)
    assert len(broker.consumers) == 2


def test_other_commit_errors_do_not_count(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    broker.refusal = KafkaTimeoutError("Timeout after 10000 ms")
    for t in range(0, 300, 10):
        clock.now = 1000.0 + t
        with pytest.raises(UnavailableError):
            source.commit({(TOPIC, 0): 9})
    assert len(broker.consumers) == 1
    # ... nor reset it: refusals around them still add up.
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    clock.now = 1300.0
    refused(source)
    for t in (310, 320):
        clock.now = 1000.0 + t
        broker.refusal = KafkaTimeoutError("Timeout after 10000 ms")
        refused(source)
        broker.refusal = RebalanceInProgressError("undergoing a rebalance")
        refused(source)
    clock.now = 1331.0
    refused(source)
    assert len(broker.consumers) == 2


def test_after_a_rebuild_the_revoke_callback_runs_and_old_positions_are_not_committed(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    first = broker.consumers[0]
    first.assign(TP0, TP1)
    broker.refusal = None
    source.commit({(TOPIC, 0): 4})
    assert source._committed == {(TOPIC, 0): 5}
    source.poll(0.0, 10)  # the assignment is checked; nothing revoked

    calls: list[None] = []

    def on_revoke() -> None:  # what the pipeline does: flush and commit what it holds
        calls.append(None)
        source.commit({(TOPIC, 0): 9, (TOPIC, 1): 3})

    source.set_revoke_callback(on_revoke)
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source, {(TOPIC, 0): 9, (TOPIC, 1): 3})
    second = broker.consumers[1]
    # The old assignment is forgotten at once; the old consumer's notes no longer count.
    assert source._assigned == frozenset()
    assert source._committed == {}
    assert not source._unchecked
    first.listener.on_partitions_assigned({TP0})  # late, from the replaced consumer
    assert source._assigned == frozenset()
    assert not calls  # the callback runs on the polling thread, at the next poll

    broker.refusal = None
    source.commit({(TOPIC, 0): 9})  # the pipeline retrying before that poll: dropped
    assert second.commits == []
    source.poll(0.0, 10)
    assert len(calls) == 1
    assert second.commits == []  # what the callback committed was read before the rebuild

    second.assign(TP0)  # the new consumer joins
    assert source._assigned == frozenset({TP0})
    source.commit({(TOPIC, 0): 12})  # read through the new consumer: committed
    assert [{tp: o.offset for tp, o in c.items()} for c in second.commits] == [{TP0: 13}]
    assert source._committed == {(TOPIC, 0): 13}
    source.poll(0.0, 10)
    assert len(calls) == 1  # nothing revoked since


def test_a_rebuild_with_nothing_assigned_still_lifts_the_fence_at_the_next_poll(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    broker.refusal = CommitFailedError("not part of an active group")
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source)
    second = broker.consumers[1]
    broker.refusal = None
    source.poll(0.0, 10)
    source.commit({(TOPIC, 0): 20})
    assert len(second.commits) == 1


def test_a_rebuild_during_the_revoke_callback_fences_until_the_next_one(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    first = broker.consumers[0]
    first.assign(TP0)
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 15):
        clock.now = 1000.0 + t
        refused(source)
    clock.now = 1031.0
    calls: list[None] = []

    def on_revoke() -> None:
        calls.append(None)
        refused(source)  # this commit is the one that rebuilds

    source.set_revoke_callback(on_revoke)
    first.listener.on_partitions_revoked({TP0})
    source.poll(0.0, 10)
    assert len(broker.consumers) == 2 and len(calls) == 1
    broker.refusal = None
    source.commit({(TOPIC, 0): 9})  # still what the old consumer read: dropped
    assert broker.consumers[1].commits == []
    source.poll(0.0, 10)
    assert len(calls) == 2
    source.commit({(TOPIC, 0): 9})
    assert len(broker.consumers[1].commits) == 1


def test_when_no_new_consumer_can_be_built_the_old_one_is_kept_and_tried_again_later(
    source: KafkaSource, broker: Broker, clock: Clock, caplog: pytest.LogCaptureFixture,
) -> None:
    first = broker.consumers[0]
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    broker.unreachable = True
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source)
    assert source._consumer is first and not first.closed
    assert any("could not build a new Kafka consumer" in r.getMessage() for r in caplog.records)
    clock.now = 1000.0 + 50
    refused(source)  # not before another bound
    broker.unreachable = False
    assert len(broker.consumers) == 1
    clock.now = 1000.0 + 62
    refused(source)
    assert len(broker.consumers) == 2 and first.closed


def test_the_lag_thread_survives_a_rebuild(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    lag_thread = source._lag_thread
    broker.refusal = RebalanceInProgressError("undergoing a rebalance")
    for t in (0, 15, 31):
        clock.now = 1000.0 + t
        refused(source)
    assert source._lag_thread is lag_thread and lag_thread.is_alive()


# --- outside a formed group with nothing assigned: no commit to be refused --------------


def polls(src: KafkaSource, clock: Clock, *seconds: float) -> None:
    for t in seconds:
        clock.now = 1000.0 + t
        src.poll(0.0, 10)


@pytest.mark.parametrize("state", [MemberState.UNJOINED, MemberState.REBALANCING])
def test_a_group_that_does_not_form_for_longer_than_the_bound_rebuilds_the_consumer_once(
    source: KafkaSource, broker: Broker, clock: Clock, caplog: pytest.LogCaptureFixture,
    state: str,
) -> None:
    first = broker.consumers[0]
    first.state = state
    polls(source, clock, 0, 10, 20, STUCK_S)  # not longer than the bound
    assert len(broker.consumers) == 1
    polls(source, clock, 31)
    assert len(broker.consumers) == 2 and first.closed
    warnings = [r.getMessage() for r in caplog.records
                if r.levelname == "WARNING" and "rebuilding the Kafka consumer" in r.getMessage()]
    assert len(warnings) == 1 and "nothing assigned for 31s" in warnings[0]
    assert state in warnings[0]
    # The new consumer gets a bound of its own, counted from its first poll.
    second = broker.consumers[1]
    second.state = state
    polls(source, clock, 32, 50, 62)
    assert len(broker.consumers) == 2
    polls(source, clock, 63)
    assert len(broker.consumers) == 3


def test_a_formed_group_that_assigns_nothing_keeps_the_consumer(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    # More members than partitions: a member of a formed group may hold none for hours.
    polls(source, clock, *range(0, 7200, 30))
    assert len(broker.consumers) == 1


def test_an_assignment_or_a_formed_group_restarts_the_clock(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    first = broker.consumers[0]
    first.state = MemberState.REBALANCING
    polls(source, clock, 0, 20)
    first.assign(TP0)  # still rebalancing, but holding partitions: commits tell (above)
    polls(source, clock, 25, 60, 90)
    first.assigned = set()
    polls(source, clock, 91, 110)
    first.state = MemberState.STABLE
    polls(source, clock, 115)
    first.state = MemberState.UNJOINED
    polls(source, clock, 120, 150)
    assert len(broker.consumers) == 1
    polls(source, clock, 151)
    assert len(broker.consumers) == 2


def test_an_outage_is_waited_out_not_rebuilt(
    source: KafkaSource, broker: Broker, clock: Clock,
) -> None:
    first = broker.consumers[0]
    first.state = MemberState.UNJOINED
    polls(source, clock, 0)
    broker.poll_error = KafkaConnectionError("Kafka unreachable")
    polls(source, clock, 10, 100, 300)  # the broker down for minutes
    assert len(broker.consumers) == 1
    broker.poll_error = None
    polls(source, clock, 301, 320, 331)  # back: the bound counts from here
    assert len(broker.consumers) == 1
    polls(source, clock, 332)
    assert len(broker.consumers) == 2
