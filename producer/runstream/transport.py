"""Where encoded events go: Kafka, or the local spool when Kafka is absent or failing.

Both transports are owned by the one sender thread and are not thread-safe (their
:class:`~runstream.delivery.DeliveryAccount` is). Nothing is dropped silently: a Kafka
record that cannot be sent (broker unreachable, send timed out, delivery failed,
producer closed with records pending) is appended to the spool, in send order, for
``runstream sync`` to replay. Only when the spool's disk also refuses, or Kafka refuses
one record as too large (the sender splits events well below the limit, so this is a
guard), is an event dropped; every drop is counted by reason and logged loudly once.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runstream.config import DEFAULT_KAFKA_STALL_S
from runstream.delivery import DeliveryAccount
from runstream.proto import codec, spool
from runstream.proto.spool import Claim, Damage, SpoolWriter

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)

#: Seconds between attempts to reach Kafka again while events go to the spool.
KAFKA_RETRY_S = 2.0
#: Spooled bytes handed back to the Kafka producer at once while draining the spool.
DRAIN_INFLIGHT_BYTES = 8 << 20
#: Encoded events held in memory while the first connection to Kafka is being made;
#: beyond this they go to the spool.
HOLD_BYTES = 32 << 20
#: A spool file is published once it holds this many bytes (or every ``roll_s``).
SPOOL_ROLL_BYTES = 8 << 20
#: Seconds between looks at which of this producer's spool files readers have taken.
SPOOL_CHECK_S = 2.0
#: The KafkaProducer's max_request_size: no record the sender makes comes near it (it
#: splits events at runstream.sender.EVENT_BYTES), and the broker's message.max.bytes
#: must be at least this.
MAX_REQUEST_BYTES = 16 << 20
CONNECT_THREAD_NAME = "runstream-producer-connect"


class Transport(Protocol):
    """What the sender thread writes encoded events to."""

    account: DeliveryAccount

    def send(self, key: bytes, payload: bytes, points: int = 0) -> None:
        """Hand over one encoded event holding ``points`` metric points; never blocks on
        the network (Kafka connects on a thread of its own)."""

    def maintain(self) -> None:
        """Periodic housekeeping: publish spool files, collect failed deliveries."""

    def flush(self, timeout_s: float) -> bool:
        """Block until everything sent so far is durable (acked or spooled) or the
        timeout passes; True when it is."""

    def close(self, timeout_s: float) -> bool:
        """Flush and release resources within ``timeout_s``; True when everything sent
        is acknowledged or in a published spool file."""


def kafka_producer_options(bootstrap: str, *, max_block_ms: int = 5_000) -> dict[str, Any]:
    """The KafkaProducer settings every Runstream sender uses (also ``sync``).
    ``max_block_ms`` bounds ``send`` waiting for metadata."""
    return {
        "bootstrap_servers": [s.strip() for s in bootstrap.split(",") if s.strip()],
        "client_id": "runstream-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 1 << 20,
        "max_request_size": MAX_REQUEST_BYTES,
        "bootstrap_timeout_ms": 5_000,
        "max_block_ms": max_block_ms,
        # The idempotent producer retries an outage this long without duplicates; the
        # sender spools new events after kafka_stall_s meanwhile.
        "delivery_timeout_ms": 120_000,
        "request_timeout_ms": 10_000,
        # kafka-python's reconnect backoff doubles up to 30 s: a broker back after an
        # outage would be noticed up to that late. Retry every second at most.
        "reconnect_backoff_max_ms": 1000,
    }


def _why(error: BaseException) -> str:
    """A drop reason's stable part: the error's type and errno name, not its message."""
    number = getattr(error, "errno", None)
    if isinstance(number, int):
        return f"{type(error).__name__}({errno.errorcode.get(number, number)})"
    return type(error).__name__


def _too_large(error: object) -> bool:
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    return isinstance(error, MessageSizeTooLargeError | RecordListTooLargeError)


#: Names of the kafka-python errors that refuse one record whatever the broker's state
#: (sending it again can never succeed; too large is one kind); any other Kafka error
#: means Kafka is unavailable. The re-send of spool files (here and ``runstream sync``)
#: sets a file holding such a record aside instead of retrying it.
PERMANENT_ERRORS = frozenset({
    "MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidRecordError",
    "CorruptRecordError", "InvalidTimestampError",
})


def is_permanent(error: BaseException | None) -> bool:
    """True when ``error`` refuses one record for good (too large, invalid)."""
    return type(error).__name__ in PERMANENT_ERRORS


@dataclass(slots=True)
class _Drain:
    """A spool file handed back to Kafka: its claim, its damaged byte ranges, the
    futures of its frames, and why Kafka refused some of them for good."""

    claim: Claim
    damage: list[Damage] = field(default_factory=list)
    futures: list[Any] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class SpoolTransport:
    """Appends frames to spool files and publishes them (``.part`` -> ``.spool``) at least
    every ``roll_s`` seconds while there is data, so a live reader ingests promptly.

    Counts what it holds in ``account``: points and events of each published file stay
    *spooled* until the file is gone from the directory (re-sent by this producer,
    ``runstream sync`` or ``runstream serve``: all delete a file only once its events are
    forwarded or stored), then they count as *sent*."""

    def __init__(self, directory: Path, producer_id: str, encoding: str, roll_s: float,
                 account: DeliveryAccount | None = None) -> None:
        # Rolled here by size, so that the points of each file are known.
        self._writer = SpoolWriter(directory, producer_id, roll_bytes=1 << 62)
        self._encoding = encoding
        self._roll_s = roll_s
        self.account = account if account is not None else DeliveryAccount()
        self._first_unrolled: float | None = None
        self._current = [0, 0, 0]  # events, points, bytes of the file being written
        # Published files that may still be on disk: name stem -> (events, points).
        self._files: dict[str, tuple[int, int]] = {}
        self._checked_at = 0.0
        self._roll_failed = False
        self.dropped: collections.Counter[str] = collections.Counter()

    @property
    def frames_written(self) -> int:
        return self._writer.frames_written

    def send(self, key: bytes, payload: bytes, points: int = 0) -> None:
        try:
            self._writer.append(payload, self._encoding)
        except (OSError, ValueError) as e:  # the frame is not in the file
            self._drop(f"spool write failed: {_why(e)}", points, 1)
            return
        self.account.spooled(points)
        current = self._current
        current[0] += 1
        current[1] += points
        current[2] += len(payload)
        if self._first_unrolled is None:
            self._first_unrolled = time.monotonic()
        if current[2] >= SPOOL_ROLL_BYTES:
            self._roll()

    def _drop(self, reason: str, points: int, events: int) -> None:
        self.dropped[reason] += events
        self.account.drop(reason, points, events)

    def maintain(self) -> None:
        started = self._first_unrolled
        if started is not None and time.monotonic() - started >= self._roll_s:
            self._roll()
        if self._files and time.monotonic() - self._checked_at >= SPOOL_CHECK_S:
            self.check_taken()

    def check_taken(self) -> None:
        """Count the points of published files no longer on disk as sent."""
        self._checked_at = time.monotonic()
        try:
            present = {entry.name.split(".", 1)[0] for entry in
                       os.scandir(self._writer.directory)}
        except OSError:
            return
        for stem in [s for s in self._files if s not in present]:
            events, points = self._files.pop(stem)
            self.account.unspooled(points, events)

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
        events, points, _ = self._current
        try:
            published = self._writer.roll()
        except OSError as e:
            # Every frame stays in the current file; the next roll tries again.
            if not self._roll_failed:
                self._roll_failed = True
                log.error("runstream: cannot publish the spool file in %s (%s); its "
                          "events stay in the .part file, retrying", self._writer.directory,
                          _why(e))
            return False
        self._roll_failed = False
        self._first_unrolled = None
        self._current = [0, 0, 0]
        if published is not None and events:
            self._files[published.name.split(".", 1)[0]] = (events, points)
        return True

    def flush(self, timeout_s: float) -> bool:
        """Publish the file being written (fsync); True when that worked and no event
        was ever dropped."""
        return self._roll() and not self.dropped

    def close(self, timeout_s: float) -> bool:
        """Publish and release the file being written; one that cannot be published
        stays ``.part`` for ``spool.recover`` (of any reader) to publish."""
        if self._roll():
            return not self.dropped
        self._writer.close()
        return False


class _Connect:
    """One attempt to create a KafkaProducer and learn the topic's partitions, on a
    daemon thread of its own (``runstream-producer-connect``): the bootstrap can take
    seconds while no broker answers, and the sender must keep spooling meanwhile."""

    def __init__(self, factory: Callable[..., KafkaProducer], options: dict[str, Any],
                 topic: str, timeout_s: float) -> None:
        self.done = threading.Event()
        self.producer: KafkaProducer | None = None
        self.error: BaseException | None = None
        self.abandoned = False
        self._args = (factory, options, topic, timeout_s)
        threading.Thread(target=self._run, name=CONNECT_THREAD_NAME, daemon=True).start()

    def _run(self) -> None:
        factory, options, topic, timeout_s = self._args
        producer = None
        try:
            producer = factory(**options)
            # kafka-python closes its producers in its own atexit hook, which would run
            # before Runstream's (registered earlier) and strand the final events.
            unregister = getattr(producer, "_unregister_cleanup", None)
            if unregister is not None:
                unregister()
            # With the partitions known, send() never waits for metadata.
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if producer.partitions_for(topic):
                        break
                except Exception:
                    if time.monotonic() >= deadline:
                        raise
        except Exception as e:  # any failure to connect means: spool, retry later
            self.error = e
            if producer is not None:
                _close_quietly(producer, 0.0)
        else:
            self.producer = producer
            if self.abandoned:
                _close_quietly(producer, 1.0)
        self.done.set()


def _close_quietly(producer: KafkaProducer, timeout_s: float) -> None:
    try:
        producer.close(timeout=timeout_s)
    except Exception as e:  # a close that times out leaves nothing we still need
        log.debug("runstream: closing a Kafka producer: %s", e)


class KafkaTransport:
    """Sends to Kafka with key ``<run_id>/<rank>`` and the content-type header; the spool
    takes over while Kafka is down and is drained back into Kafka, in order, when it
    returns.

    States: *direct* (events go to the Kafka producer) and *spooling* (events go to
    the spool). The producer is created on a thread of its own (see :class:`_Connect`);
    until the first attempt ends, events wait in memory (up to HOLD_BYTES). Direct turns
    to spooling when the producer cannot be created, ``send`` fails, a delivery fails,
    or the oldest unacknowledged record is older than ``stall_s``. Records already
    handed to the producer stay there: the idempotent producer retries them (up to
    ``delivery_timeout_ms``) without duplicates. Once they are acknowledged, every
    ``maintain`` hands this producer's spool files back to Kafka oldest first (at most
    DRAIN_INFLIGHT_BYTES at a time) and deletes each file when all its records are
    acknowledged; with no file left, sends go direct again. So per-producer order holds
    across an outage, and nothing waits on the training thread. A record Kafka refuses
    as too large is dropped (counted by reason) without leaving the direct state.
    ``close`` spools whatever Kafka has not acknowledged before its deadline. Owned by
    the sender thread; not thread-safe.
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
        self.account = spool.account
        self._factory = producer_factory
        self._stall_s = stall_s
        self._producer: KafkaProducer | None = None
        self._attempt: _Connect | None = None
        self._retry_at = 0.0
        self._spooling = False
        self._key: bytes | None = None
        # (future, key, payload, sent_at monotonic s, points) in send order, until acked.
        self._pending: collections.deque[tuple[Any, bytes, bytes, float, int]] = (
            collections.deque())
        # (key, payload, points) sent while the first connection is being made.
        self._held: collections.deque[tuple[bytes, bytes, int]] = collections.deque()
        self._held_bytes = 0
        # Spool files handed back to Kafka, oldest first, until their frames are acked.
        self._draining: collections.deque[_Drain] = collections.deque()
        self.sent_to_kafka = 0
        self.spooled = 0
        self.resent_from_spool = 0
        self.connect_attempts = 0

    @property
    def spooling(self) -> bool:
        """True while events go to the spool instead of Kafka."""
        return self._spooling

    def _connect(self) -> KafkaProducer | None:
        """The producer once connected, else None; never blocks: it starts an attempt
        on its own thread (at most every KAFKA_RETRY_S) and picks up its result."""
        if self._producer is not None:
            return self._producer
        attempt = self._attempt
        if attempt is not None:
            if not attempt.done.is_set():
                return None
            self._attempt = None
            if attempt.producer is None:
                self._retry_at = time.monotonic() + KAFKA_RETRY_S
                self._enter_spooling(attempt.error)
                self._spool_held()
                return None
            self._producer = attempt.producer
            self._send_held()
            return self._producer
        if time.monotonic() < self._retry_at:
            return None
        if self._factory is not None:
            factory = self._factory
        else:
            from kafka import KafkaProducer

            factory = KafkaProducer
        self.connect_attempts += 1
        # send() finds the partitions known (the attempt waits for them), so a short
        # max_block_ms only matters if the metadata is lost later: then it fails fast.
        self._attempt = _Connect(factory, kafka_producer_options(self._bootstrap,
                                                                 max_block_ms=250),
                                 self._topic, timeout_s=5.0)
        return None

    def _enter_spooling(self, reason: object) -> None:
        if not self._spooling:
            self._spooling = True
            log.warning(
                "runstream: Kafka at %s unavailable (%s); writing events to the local spool "
                "and sending them when it is back", self._bootstrap, reason,
            )

    def _to_spool(self, key: bytes, payload: bytes, points: int) -> None:
        self.spooled += 1
        self.spool.send(key, payload, points)

    def _spool_held(self) -> None:
        while self._held:
            self._to_spool(*self._held.popleft())
        self._held_bytes = 0

    def _send_held(self) -> None:
        held, self._held = self._held, collections.deque()
        self._held_bytes = 0
        for key, payload, points in held:
            self.send(key, payload, points)

    def send(self, key: bytes, payload: bytes, points: int = 0) -> None:
        self._key = key
        if self._spooling:
            self._to_spool(key, payload, points)
            return
        producer = self._connect()
        if producer is None:
            if self._attempt is not None and not self._spooling:
                self._held.append((key, payload, points))  # the first connect is under way
                self._held_bytes += len(payload)
                if self._held_bytes > HOLD_BYTES:
                    self._enter_spooling("still connecting")
                    self._spool_held()
            else:
                self._to_spool(key, payload, points)
            return
        try:
            future = producer.send(self._topic, value=payload, key=key, headers=self._headers)
        except Exception as e:  # timeouts, closed producer: spool it
            if _too_large(e):
                self._drop_too_large(len(payload), points, e)
                return
            self._enter_spooling(e)
            self._to_spool(key, payload, points)
            return
        self._pending.append((future, key, payload, time.monotonic(), points))

    def _drop_too_large(self, size: int, points: int, error: object) -> None:
        self.account.drop(f"Kafka refused an event of {size} bytes as too large "
                          f"({type(error).__name__})", points)

    def _collect(self) -> None:
        """Retire acknowledged records from the front; spool the failed ones, in order."""
        pending = self._pending
        while pending and pending[0][0].is_done:
            future, key, payload, _, points = pending.popleft()
            if future.succeeded():
                self.sent_to_kafka += 1
                self.account.sent(points)
            elif _too_large(future.exception):
                self._drop_too_large(len(payload), points, future.exception)
            else:
                self._enter_spooling(future.exception)
                self._to_spool(key, payload, points)

    def _collect_drained(self) -> bool:
        """Delete spool files whose records Kafka acknowledged; a file with damaged bytes
        or with a record Kafka refuses for good (:func:`is_permanent`: too large, invalid)
        is kept aside as ``.corrupt`` / ``.unsendable`` instead, its other frames sent. On
        any other failure put it and every later file back in the spool. False when a
        drain failed."""
        while self._draining and all(f.is_done for f in self._draining[0].futures):
            drain = self._draining[0]
            failed = [f.exception for f in drain.futures if not f.succeeded()]
            if all(is_permanent(e) for e in failed):
                self._draining.popleft()
                self.resent_from_spool += len(drain.futures) - len(failed)
                drain.refused.extend(type(e).__name__ for e in failed)
                self._settle(drain)
                continue
            self._give_back_drains()
            self._retry_at = time.monotonic() + KAFKA_RETRY_S
            return False
        return True

    @staticmethod
    def _settle(drain: _Drain) -> None:
        claim = drain.claim
        try:
            if drain.refused:
                kept = claim.set_aside("unsendable")
                log.error("runstream: Kafka refuses %d record(s) of spool file %s for good "
                          "(%s); its other frames were sent, the file is kept as %s (raise "
                          "the broker's message.max.bytes and rename it to .spool to replay)",
                          len(drain.refused), claim.name, ", ".join(sorted(set(drain.refused))),
                          kept)
            elif drain.damage:
                kept = claim.set_aside("corrupt")
                log.error("runstream: spool file %s has damaged bytes (%s); its good frames "
                          "were sent, the file is kept as %s", claim.name,
                          ", ".join(f"{d.offset}..{d.end}" for d in drain.damage), kept)
            else:
                claim.done()
        except OSError as e:  # released anyway: a reader's recover() returns it
            log.error("runstream: cannot settle spool file %s: %s", claim.path, e)

    def _give_back_drains(self) -> None:
        while self._draining:
            claim = self._draining.popleft().claim
            try:
                claim.give_back()
            except OSError as e:  # released anyway: a reader's recover() returns it
                log.error("runstream: cannot put back spool file %s: %s", claim.path, e)

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
            claim = spool.claim(original)
            if claim is None:
                continue  # `runstream sync` or `serve` took it
            drain = _Drain(claim)
            self._draining.append(drain)
            try:
                for item in spool.scan(claim.read()):
                    if isinstance(item, spool.Damage):
                        drain.damage.append(item)
                        continue
                    headers = [(codec.CONTENT_TYPE_HEADER,
                                codec.CONTENT_TYPES[item.encoding].encode())]
                    try:
                        drain.futures.append(producer.send(
                            self._topic, value=item.payload, key=self._key, headers=headers))
                    except Exception as e:
                        if not is_permanent(e):
                            raise
                        drain.refused.append(type(e).__name__)
                    budget -= len(item.payload)
            except Exception as e:  # the producer refused: every file goes back, in order
                log.warning("runstream: resending the spool to Kafka failed: %s", e)
                self._give_back_drains()  # frames already handed over may arrive twice
                self._retry_at = time.monotonic() + KAFKA_RETRY_S
                return
        self._spooling = False
        log.warning("runstream: Kafka at %s is back; sending spooled events, then new ones",
                    self._bootstrap)

    def maintain(self) -> None:
        if self._attempt is not None:
            self._connect()
        self._collect()
        if not self._collect_drained():
            self._enter_spooling("re-sending spooled events failed")
        if (not self._spooling and self._pending
                and time.monotonic() - self._pending[0][3] > self._stall_s):
            self._enter_spooling(f"no acknowledgement for {self._stall_s:.0f} s")
        if self._spooling:
            self._drain_step()
        self.spool.maintain()

    def _wait(self, deadline: float) -> None:
        """Until ``deadline`` (monotonic s) or until Kafka has answered for every record
        handed to it (pending and re-sent from the spool); bounded by the deadline, not
        by kafka-python's flush, whose timeout applies to each batch in turn."""
        attempt = self._attempt
        if attempt is not None:
            attempt.done.wait(max(deadline - time.monotonic(), 0.0))
            self._connect()
        while True:
            self._collect()
            self._collect_drained()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not (self._pending or self._draining):
                return
            if self._pending:
                try:
                    self._pending[0][0].get(timeout=min(remaining, 0.5))
                except Exception as e:  # a failed or late record: _collect deals with it
                    log.debug("runstream: waiting for Kafka: %s", e)
            else:
                time.sleep(min(remaining, 0.02))

    def flush(self, timeout_s: float) -> bool:
        self._wait(time.monotonic() + max(timeout_s, 0.0))
        return self.spool.flush(timeout_s) and not self._pending and not self._held

    def _close_producer(self) -> None:
        """Spool whatever Kafka has not acknowledged (at-least-once: a record Kafka took
        meanwhile arrives twice, and the consumer stores it once), then close the
        producer on a thread of its own, without waiting for it."""
        producer, self._producer = self._producer, None
        if self._attempt is not None:
            self._attempt.abandoned = True
            self._attempt = None
        self._collect()
        while self._pending:
            future, key, payload, _, points = self._pending.popleft()
            if future.is_done and future.succeeded():
                self.sent_to_kafka += 1
                self.account.sent(points)
            elif future.is_done and _too_large(future.exception):
                self._drop_too_large(len(payload), points, future.exception)
            else:
                self._to_spool(key, payload, points)
        self._spool_held()
        self._collect_drained()
        self._give_back_drains()
        if producer is not None:
            threading.Thread(target=_close_quietly, args=(producer, 5.0),
                             name="runstream-producer-close", daemon=True).start()

    def close(self, timeout_s: float) -> bool:
        """Deliver what Kafka takes within ``timeout_s`` (draining the spool too), keeping
        a reserve of the time (a fifth, 1 s at least, at most half) to spool the rest,
        so that everything is acknowledged or on disk when it returns; True when so and
        nothing was dropped."""
        timeout_s = max(timeout_s, 0.0)
        deadline = time.monotonic() + timeout_s
        soft = deadline - min(max(1.0, timeout_s * 0.2), timeout_s * 0.5)
        self._wait(soft)
        while self._spooling and self._producer is not None and time.monotonic() < soft:
            self._drain_step()
            if not self._spooling:
                break
            self._wait(min(time.monotonic() + 0.2, soft))
        self._wait(soft)
        self._close_producer()
        return self.spool.close(0.0) and not self.spool.dropped
