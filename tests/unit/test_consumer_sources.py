"""KafkaSource.poll during an outage: a retriable Kafka error (the group coordinator
unreachable while two of three brokers are down) is waited out, never the end of the
consumer. Found by tests/e2e/test_kafka_cluster_e2e.py::
test_two_of_three_brokers_down_the_sdk_spools_and_nothing_is_lost, where `runstream consume`
died with KafkaConnectionError out of KafkaConsumer.poll (exit 1) mid-outage; that test is
the proof against the real cluster, this one pins the rule without timing luck."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError
from kafka.structs import ConsumerGroupMetadata, MemberState

from runstream.consumer.sources import KafkaSource


class Polls:
    """A KafkaConsumer stand-in whose poll() raises or answers, one script entry a call."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata(group_id="g", state=MemberState.STABLE)

    def assignment(self) -> set[Any]:
        return set()


def source(consumer: Polls) -> KafkaSource:
    src = object.__new__(KafkaSource)  # the polling logic only: no broker to join
    src._consumer = consumer
    src._revoked = False
    src._revoke_callback = None
    src._unchecked = set()
    src._outage = False
    src._unformed_since = None
    return src


def test_a_retriable_error_is_an_empty_poll_and_the_next_poll_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = KafkaConnectionError("111 ECONNREFUSED")
    src = source(Polls(down, down, {}))
    assert src.poll(0.01, 10) == []
    assert src.poll(0.01, 10) == []
    assert src.poll(0.01, 10) == []
    said = [r.getMessage() for r in caplog.records]
    assert sum("Kafka unreachable" in m for m in said) == 1  # once per outage
    assert sum("reachable again" in m for m in said) == 1


def test_an_error_that_is_not_retriable_still_ends_the_poll() -> None:
    src = source(Polls(CommitFailedError("fenced")))
    with pytest.raises(CommitFailedError):
        src.poll(0.01, 10)
