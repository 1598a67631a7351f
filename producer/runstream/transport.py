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
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runstream.config import DEFAULT_KAFKA_STALL_S
from runstream.proto import codec, spool
from runstream.proto.spool import SpoolWriter

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)

#: Seconds between attempts to reach Kafka again while events go to the spool.
KAFKA_RETRY_S = 2.0
#: Spooled bytes handed back to the Kafka producer at once while draining the spool.
DRAIN_INFLIGHT_BYTES = 8 << 20


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
        # The idempotent producer retries an outage this long without duplicates; the
        # sender spools new events after kafka_stall_s meanwhile.
        "delivery_timeout_ms": 120_000,
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

    def own_ready_files(self) -> list[Path]:
        """This writer's published files, oldest first."""
        writer = self._writer
        if not writer.directory.is_dir():
            return []
        return sorted(writer.directory.glob(f"{writer.producer_id}-*.spool"))

    def publish(self) -> bool:
        """Publish the file being written, if any; True when one was published."""
        if self._first_unrolled is None:
            return False
        return self._roll()

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
    """Sends to Kafka with key ``<run_id>/<rank>`` and the content-type header; the spool
    takes over while Kafka is down and is drained back into Kafka, in order, when it
    returns.

    States: *direct* (events go to the Kafka producer) and *spooling* (events go to
    the spool). Direct turns to spooling when the producer cannot be created, ``send``
    fails, a delivery fails, or the oldest unacknowledged record is older than
    ``stall_s``. Records already handed to the producer stay there: the idempotent
    producer retries them (up to ``delivery_timeout_ms``) without duplicates. Once
    they are acknowledged, every ``maintain`` hands this producer's spool files back to
    Kafka oldest first (at most DRAIN_INFLIGHT_BYTES at a time) and deletes each file
    when all its records are acknowledged; with no file left, sends go direct again.
    So per-producer order holds across an outage, and nothing waits on the training
    thread. Owned by the sender thread; not thread-safe.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        encoding: str,
        spool: SpoolTransport,
        producer_factory: Callable[..., KafkaProducer] | None = None,
        stall_s: float = DEFAULT_KAFKA_STALL_S,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._headers = [(codec.CONTENT_TYPE_HEADER, codec.CONTENT_TYPES[encoding].encode())]
        self.spool = spool
        self._factory = producer_factory
        self._stall_s = stall_s
        self._producer: KafkaProducer | None = None
        self._retry_at = 0.0
        self._spooling = False
        self._key: bytes | None = None
        # (future, key, payload, sent_at monotonic s) in send order, until acknowledged.
        self._pending: collections.deque[tuple[Any, bytes, bytes, float]] = collections.deque()
        # Spool files handed back to Kafka: (claimed path, original path, futures).
        self._draining: collections.deque[tuple[Path, Path, list[Any]]] = collections.deque()
        self.sent_to_kafka = 0
        self.spooled = 0
        self.resent_from_spool = 0

    @property
    def spooling(self) -> bool:
        """True while events go to the spool instead of Kafka."""
        return self._spooling

    def _connect(self) -> KafkaProducer | None:
        if self._producer is not None:
            return self._producer
        if time.monotonic() < self._retry_at:
            return None
        try:
            if self._factory is not None:
                producer = self._factory(**kafka_producer_options(self._bootstrap))
            else:
                from kafka import KafkaProducer

                producer = KafkaProducer(**kafka_producer_options(self._bootstrap))
        except Exception as e:  # any failure to connect means: spool, retry later
            self._retry_at = time.monotonic() + KAFKA_RETRY_S
            self._enter_spooling(e)
            return None
        # kafka-python closes its producers in its own atexit hook, which would run before
        # Runstream's (registered earlier) and strand the final events; we close it.
        unregister = getattr(producer, "_unregister_cleanup", None)
        if unregister is not None:
            unregister()
        self._producer = producer
        return producer

    def _enter_spooling(self, reason: object) -> None:
        if not self._spooling:
            self._spooling = True
            log.warning(
                "runstream: Kafka at %s unavailable (%s); writing events to the local spool "
                "and sending them when it is back", self._bootstrap, reason,
            )

    def _to_spool(self, key: bytes, payload: bytes) -> None:
        self.spooled += 1
        self.spool.send(key, payload)

    def send(self, key: bytes, payload: bytes) -> None:
        self._key = key
        if self._spooling:
            self._to_spool(key, payload)
            return
        producer = self._connect()
        if producer is None:
            self._to_spool(key, payload)
            return
        try:
            future = producer.send(self._topic, value=payload, key=key, headers=self._headers)
        except Exception as e:  # timeouts, closed producer, oversize record: spool it
            self._enter_spooling(e)
            self._to_spool(key, payload)
            return
        self._pending.append((future, key, payload, time.monotonic()))

    def _collect(self) -> None:
        """Retire acknowledged records from the front; spool the failed ones, in order."""
        pending = self._pending
        while pending and pending[0][0].is_done:
            future, key, payload, _ = pending.popleft()
            if future.succeeded():
                self.sent_to_kafka += 1
            else:
                self._enter_spooling(future.exception)
                self._to_spool(key, payload)

    def _collect_drained(self) -> bool:
        """Delete spool files whose records Kafka acknowledged; on a failed one put it and
        every later file back in the spool. False when a drain failed."""
        while self._draining and all(f.is_done for f in self._draining[0][2]):
            claimed, _original, futures = self._draining[0]
            if all(f.succeeded() for f in futures):
                self._draining.popleft()
                self.resent_from_spool += len(futures)
                claimed.unlink(missing_ok=True)
                continue
            self._give_back_drains()
            self._retry_at = time.monotonic() + KAFKA_RETRY_S
            return False
        return True

    def _give_back_drains(self) -> None:
        while self._draining:
            claimed, original, _ = self._draining.popleft()
            try:
                os.replace(claimed, original)
            except OSError as e:
                log.error("runstream: cannot put back spool file %s: %s", claimed, e)

    def _drain_step(self) -> None:
        """Hand spool files back to Kafka, oldest first, without waiting for them; once
        every file is handed over, sends go direct again (the producer keeps the order)."""
        if self._pending or not self._collect_drained() or self._draining:
            return  # older records are still with Kafka: they go first
        if time.monotonic() < self._retry_at:
            return
        producer = self._connect()
        if producer is None:
            return
        self.spool.publish()
        budget = DRAIN_INFLIGHT_BYTES
        for original in self.spool.own_ready_files():
            if budget <= 0:
                return  # the rest after these are acknowledged
            claimed = spool.claim(original)
            if claimed is None:
                continue  # `runstream sync` or `serve` took it
            futures: list[Any] = []
            self._draining.append((claimed, original, futures))
            try:
                for frame in spool.read_frames(claimed):
                    headers = [(codec.CONTENT_TYPE_HEADER,
                                codec.CONTENT_TYPES[frame.encoding].encode())]
                    futures.append(producer.send(self._topic, value=frame.payload,
                                                 key=self._key, headers=headers))
                    budget -= len(frame.payload)
            except spool.SpoolCorruptError as e:
                log.error("runstream: spool file %s is corrupt (%s); its good frames were sent",
                          original, e)
            except Exception as e:  # the producer refused: every file goes back, in order
                log.warning("runstream: resending the spool to Kafka failed: %s", e)
                self._give_back_drains()  # frames already handed over may arrive twice
                self._retry_at = time.monotonic() + KAFKA_RETRY_S
                return
        self._spooling = False
        log.warning("runstream: Kafka at %s is back; sending spooled events, then new ones",
                    self._bootstrap)

    def maintain(self) -> None:
        self._collect()
        if not self._collect_drained():
            self._enter_spooling("re-sending spooled events failed")
        if (not self._spooling and self._pending
                and time.monotonic() - self._pending[0][3] > self._stall_s):
            self._enter_spooling(f"no acknowledgement for {self._stall_s:.0f} s")
        if self._spooling:
            self._drain_step()
        self.spool.maintain()

    def flush(self, timeout_s: float) -> bool:
        ok = True
        if self._producer is not None and (self._pending or self._draining):
            from kafka.errors import KafkaError

            try:
                self._producer.flush(timeout=max(timeout_s, 0.0))
            except KafkaError:
                ok = False
        self._collect()
        self._collect_drained()
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
            future, key, payload, _ = self._pending.popleft()
            if future.is_done and future.succeeded():
                self.sent_to_kafka += 1
            else:
                self._to_spool(key, payload)
        self._collect_drained()
        self._give_back_drains()

    def close(self, timeout_s: float) -> bool:
        """Deliver what Kafka takes within ``timeout_s`` (draining the spool too), keeping
        a reserve of the time to spool the rest; True when nothing is left behind."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        reserve = min(1.0, timeout_s * 0.2)
        while self._spooling and self._producer is not None \
                and time.monotonic() < deadline - reserve:
            self._collect()
            self._drain_step()
            if not self._spooling:
                break
            self.flush(min(0.2, max(deadline - reserve - time.monotonic(), 0.0)))
        flushed = self.flush(max(deadline - reserve - time.monotonic(), 0.0))
        self._close_producer(max(deadline - time.monotonic(), 0.0))
        return self.spool.close(0.0) and flushed and not self._spooling
