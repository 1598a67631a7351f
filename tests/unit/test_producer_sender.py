"""The sender's queue: what callers append and the sender thread takes."""

from __future__ import annotations

from runstream.sender import EventQueue, Request


def test_queue_keeps_points_appended_after_close_for_their_caller():
    queue = EventQueue()
    early = {"a": 1.0}
    queue.points += (0, 1, early)
    assert queue.close(None, Request(1.0))
    late = {"a": 2.0}
    queue.points += (1, 2, late)
    segments, points = queue.take()
    assert points == []  # the late record is not sent after the stop ...
    assert [kind for kind, _ in segments][0:1] == [0] and segments[0][1] == [0, 1, early]
    assert queue.unlog(late) is True  # ... its caller takes it back and raises
    assert queue.points == [] and queue.unlog(early) is False


def test_the_sdk_producer_notices_a_returning_broker_within_a_second() -> None:
    """kafka-python doubles its reconnect backoff up to 30 s by default: a broker back
    after an outage was found 8-10 s late in the fault bench (2-3 s with the cap)."""
    from runstream.transport import kafka_producer_options

    options = kafka_producer_options("127.0.0.1:9092")
    assert options["reconnect_backoff_max_ms"] <= 1000
