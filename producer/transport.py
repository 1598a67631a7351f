"""Where encoded events go: Kafka, or the local spool when Kafka is absent or failing.

Both transports are owned by the one sender thread and are not thread-safe. Nothing is
dropped silently: a Kafka record that cannot be sent (broker unreachable, send timed
out, delivery failed, producer closed with records pending) is appended to the spool,
in send order, for ``runstream sync`` to replay. Only when the spool's disk also
refuses is an event dropped; every drop is counted by reason and logged loudly once.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runstream.proto import codec
from runstream.proto.spool import SpoolWriter

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger("runstream")

#: Seconds to spool directly after Kafka failed, before trying the broker again.
KAFKA_RETRY_S = 15.0


class Transport(Protocol):
    """What the sender thread writes encoded events to."""

    def send(self, key: bytes, payload: bytes) -> None:
        """Hand over one encoded event; may block briefly (seconds at most)."""

    def maintain(self) -> None:
        """Periodic housekeeping: publish spool files, collect failed deliveries."""

    def flush(self, timeout_s: float) -> bool:
        """Block until everything sent so far is durable (acked or spooled) or the
        timeout passes; True when it is."""

    def close(self, timeout_s: float) -> bool:
        """Flush and release resources; True when nothing was left undelivered."""


def kafka_producer_options(bootstrap: str) -> dict[str, Any]:
    """The KafkaProducer settings every Runstream sender uses (also ``sync``)."""
    return {
        "bootstrap_servers": [s.strip() for s in bootstrap.split(",") if s.strip()],
        "client_id": "runstream-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 1 << 20,
        "max_request_size": 16 << 20,
        "bootstrap_timeout_ms": 5_000,
        # Never stall the sender for long on metadata or a full buffer: spool instead.
        "max_block_ms": 5_000,
        "delivery_timeout_ms": 30_000,
        "request_timeout_ms": 10_000,
    }


class SpoolTransport:
    """Appends frames to spool files and publishes them (``.part`` -> ``.spool``) at least
    every ``roll_s`` seconds while there is data, so a live reader ingests promptly."""

    def __init__(self, directory: Path, producer_id: str, encoding: str, roll_s: float) -> None:
        self._writer = SpoolWriter(directory, producer_id)
        self._encoding = encoding
        self._roll_s = roll_s
        self._first_unrolled: float | None = None
        self.dropped: collections.Counter[str] = collections.Counter()
        self._warned = False

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def send(self, key: bytes, payload: bytes) -> None:
        try:
            self._writer.append(payload, self._encoding)
        except OSError as e:
            self._drop(f"spool write failed: {type(e).__name__}", e)
            return
        if self._first_unrolled is None:
            self._first_unrolled = time.monotonic()

    def _drop(self, reason: str, error: BaseException) -> None:
        self.dropped[reason] += 1
        if not self._warned:
            self._warned = True
            log.error(
                "runstream: DROPPING EVENTS: cannot write the spool in %s (%s). Counting "
                "drops by reason; this is said once.", self._writer.directory, error,
            )

    def maintain(self) -> None:
        started = self._first_unrolled
        if started is not None and time.monotonic() - started >= self._roll_s:
            self._roll()

    def _roll(self) -> bool:
        self._first_unrolled = None
        try:
            self._writer.roll()
        except OSError as e:
            self._drop(f"spool roll failed: {type(e).__name__}", e)
            return False
        return True

    def flush(self, timeout_s: float) -> bool:
        return self._roll() and not self.dropped

    def close(self, timeout_s: float) -> bool:
        return self.flush(timeout_s)


class KafkaTransport:
    """Sends to Kafka with key ``<run_id>/<rank>`` and the content-type header; falls back
    to ``spool`` for anything Kafka does not take, retrying the broker every
    KAFKA_RETRY_S seconds."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        encoding: str,
        spool: SpoolTransport,
        producer_factory: Callable[..., KafkaProducer] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._headers = [(codec.CONTENT_TYPE_HEADER, codec.CONTENT_TYPES[encoding].encode())]
        self.spool = spool
        self._factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._down_until = 0.0
        # (future, key, payload) in send order, until Kafka acknowledges them.
        self._pending: collections.deque[tuple[Any, bytes, bytes]] = collections.deque()
        self.sent_to_kafka = 0
        self.spooled = 0

    def _connect(self) -> KafkaProducer | None:
        if self._producer is not None:
            return self._producer
        if time.monotonic() < self._down_until:
            return None
        try:
            if self._factory is not None:
                producer = self._factory(**kafka_producer_options(self._bootstrap))
            else:
                from kafka import KafkaProducer

                producer = KafkaProducer(**kafka_producer_options(self._bootstrap))
        except Exception as e:  # any failure to connect means: spool, retry later
            self._mark_down(e)
            return None
        # kafka-python closes its producers in its own atexit hook, which would run before
        # Runstream's (registered earlier) and strand the final events; we close it.
        unregister = getattr(producer, "_unregister_cleanup", None)
        if unregister is not None:
            unregister()
        self._producer = producer
        return producer

    def _mark_down(self, error: BaseException) -> None:
        if self._down_until <= time.monotonic():
            log.warning(
                "runstream: Kafka at %s unavailable (%s); writing events to the local spool "
                "(replay with `runstream sync`)", self._bootstrap, error,
            )
        self._down_until = time.monotonic() + KAFKA_RETRY_S

    def _to_spool(self, key: bytes, payload: bytes) -> None:
        self.spooled += 1
        self.spool.send(key, payload)

    def send(self, key: bytes, payload: bytes) -> None:
        producer = self._connect()
        if producer is None:
            self._to_spool(key, payload)
            return
        try:
            future = producer.send(self._topic, value=payload, key=key, headers=self._headers)
        except Exception as e:  # timeouts, closed producer, oversize record: spool it
            self._mark_down(e)
            self._close_producer(0.0)
            self._to_spool(key, payload)
            return
        self._pending.append((future, key, payload))

    def _collect(self) -> None:
        """Retire acknowledged records from the front; spool the failed ones, in order."""
        pending = self._pending
        while pending and pending[0][0].is_done:
            future, key, payload = pending.popleft()
            if future.succeeded():
                self.sent_to_kafka += 1
            else:
                self._mark_down(future.exception)
                self._to_spool(key, payload)

    def maintain(self) -> None:
        self._collect()
        self.spool.maintain()

    def flush(self, timeout_s: float) -> bool:
        ok = True
        if self._producer is not None:
            from kafka.errors import KafkaError

            try:
                self._producer.flush(timeout=max(timeout_s, 0.0))
            except KafkaError:
                ok = False
        self._collect()
        return self.spool.flush(timeout_s) and ok and not self._pending

    def _close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=max(timeout_s, 0.0))
            except Exception as e:  # closing must not lose the records below
                log.warning("runstream: closing the Kafka producer failed: %s", e)
        # Whatever Kafka has not acknowledged by now goes to the spool (at-least-once).
        while self._pending:
            future, key, payload = self._pending.popleft()
            if future.is_done and future.succeeded():
                self.sent_to_kafka += 1
            else:
                self._to_spool(key, payload)

    def close(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        flushed = self.flush(timeout_s)
        self._close_producer(max(deadline - time.monotonic(), 0.0))
        return self.spool.close(0.0) and flushed
