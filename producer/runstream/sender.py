"""The one background thread that turns buffered points and queued events into encoded
events and hands them to a transport.

Callers (``Run`` methods, any thread) only touch :class:`EventQueue`: ``Run.log`` appends
points without a lock, everything else holds its lock for an append or a move, never
across I/O. The sender thread (``runstream-producer-sender``)
wakes every ``flush_interval_s`` or when the buffer passes one batch, takes everything
at once, builds columnar MetricsBatch events of at most ``points_per_batch`` points,
assigns ``seq`` 1, 2, 3 ... in send order, encodes with the run's encoding and sends.

Every event it sends fits the consumer's limits and the broker's: list bodies (params,
tags) are cut into events of at most MAX_ITEMS_PER_EVENT items, and any event whose
encoding is over EVENT_BYTES is split in halves until each part fits. A chunk that fails
to encode is split the same way, so one bad point (or item) is dropped - counted by
reason in the run's DeliveryAccount - and the rest of its cycle is sent.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from runstream import capture
from runstream.batch import FLAT_WIDTH, Columns, column_chunks, fill_batch, flat_columns
from runstream.config import ProducerConfig
from runstream.proto import codec
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import MAX_ITEMS_PER_EVENT
from runstream.transport import Transport

log = logging.getLogger(__name__)

THREAD_NAME = "runstream-producer-sender"
#: The most bytes one encoded event may have: a quarter of the producer's
#: max_request_size and the broker's message.max.bytes (16 MiB), so headers, batching
#: and a broker configured a little lower never refuse one.
EVENT_BYTES = 4 << 20
#: Event bodies that are lists of items the sender may cut into several events.
_LIST_BODIES = {"params": "params", "tags": "tags"}


def count_points(flat: list[Any]) -> int:
    """Metric points in a flat buffer (``runstream.batch.FLAT_WIDTH`` items a record)."""
    return sum(map(len, flat[FLAT_WIDTH - 1::FLAT_WIDTH]))


@dataclass(frozen=True, kw_only=True)
class Identity:
    """The envelope fields every event of one producer carries."""

    run_id: str
    experiment: str
    rank: int
    world_size: int
    local_rank: int
    node: str
    producer_id: str


class Request:
    """A flush or stop the caller waits on; ``ok`` is set before ``done``."""

    __slots__ = ("deadline", "done", "ok")

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + max(timeout_s, 0.0)
        self.done = threading.Event()
        self.ok = False

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self.done.set()


class Item(enum.IntEnum):
    """What one queue segment holds, in caller order: a run of points (a flat buffer),
    one event body (``(field, body, ts_ms)``), or a :class:`Request` to flush or stop."""

    POINTS = 0
    EVENT = 1
    FLUSH = 2
    STOP = 3


class EventQueue:
    """What callers append to and the sender takes from. Thread-safe; nothing here
    blocks except :meth:`wait_for_room`. ``Run.log`` appends to ``points`` without the
    lock (see :meth:`_take_points`); everything else holds ``lock``."""

    __slots__ = ("closed", "lock", "points", "room", "segments", "taken_points", "wake")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)
        # Buffered Run.log records, flat: step, ts_ms, metrics for each call in turn
        # (runstream.batch.FLAT_WIDTH items per record).
        self.points: list[Any] = []
        # Set (under ``lock``) when the run finished: appends after that are refused, so
        # no point can land behind the final stop and be left unsent.
        self.closed = False
        self.segments: collections.deque[tuple[Item, Any]] = collections.deque()
        self.wake = threading.Event()
        #: Metric points the sender has taken, in all (under ``lock``).
        self.taken_points = 0

    def put(self, kind: Item, item: Any) -> bool:
        """Queue an event body or request after every point logged so far; False (and
        nothing queued) once the queue is closed."""
        with self.lock:
            if self.closed:
                return False
            if self.points:
                self.segments.append((Item.POINTS, self._take_points()))
            self.segments.append((kind, item))
        self.wake.set()
        return True

    def put_event(self, field: str, body: Message, ts_ms: int) -> bool:
        return self.put(Item.EVENT, (field, body, ts_ms))

    def close(self, final: tuple[str, Message, int] | None, stop: Request) -> bool:
        """Queue the final event (if any) and the stop request, and refuse every later
        append. False if it was closed already."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            if self.points:
                self.segments.append((Item.POINTS, self._take_points()))
            if final is not None:
                self.segments.append((Item.EVENT, final))
            self.segments.append((Item.STOP, stop))
        self.wake.set()
        return True

    def take(self) -> tuple[collections.deque[tuple[Item, Any]], list[Any]]:
        """Everything queued. Points appended after the queue closed stay: their callers
        take them back and raise (see :meth:`unlog`)."""
        with self.lock:
            segments = self.segments
            self.segments = collections.deque()
            points = [] if self.closed else self._take_points()
            self.taken_points += count_points(points) + sum(
                count_points(item) for kind, item in segments if kind == Item.POINTS)
            self.room.notify_all()
        return segments, points

    def logged_points(self) -> int:
        """Metric points accepted so far: taken by the sender or still queued. Call with
        ``lock`` held (one consistent count with the sender's take)."""
        queued = sum(count_points(item) for kind, item in self.segments
                     if kind == Item.POINTS)
        if not self.closed:
            queued += count_points(self.points[:])
        return self.taken_points + queued

    def _take_points(self) -> list[Any]:
        """Move the buffered points out; under ``lock``. ``Run.log`` appends without the
        lock (one ``+=`` of a tuple, atomic under the GIL) and ``points`` stays the same
        list, so an append racing this lands after the slice and stays for next time."""
        points = self.points
        taken = points[:]
        del points[:len(taken)]
        return taken

    def unlog(self, metrics: dict[str, float]) -> bool:
        """Take back the record whose metrics dict is ``metrics`` if the queue closed
        before it was taken (True), or False if it was queued in time (it is sent)."""
        with self.lock:
            points = self.points
            for i in range(len(points) - 1, -1, -1):
                if points[i] is metrics:
                    start = i - (FLAT_WIDTH - 1)
                    del points[start:i + 1]
                    return True
        return False

    def wait_for_room(self, limit: int, alive: Callable[[], bool]) -> None:
        """Block the caller while ``limit`` or more records wait for the sender."""
        self.wake.set()
        limit *= FLAT_WIDTH
        with self.room:
            while len(self.points) >= limit and alive():
                self.room.wait(0.1)


class Sender:
    """Encodes and sends for one producer (one run in one process).

    ``start()`` runs the loop on a daemon thread named ``runstream-producer-sender``;
    ``run_inline()`` does the same work on the calling thread (at interpreter exit, when
    no thread can be started). ``started`` is the RunStarted body to complete with code
    version and environment and send first; None in a forked child.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        config: ProducerConfig,
        queue: EventQueue,
        transport: Transport,
        started: tuple[events_pb2.RunStarted, int] | None,
        heartbeats: bool,
    ) -> None:
        self.identity = identity
        self.config = config
        self.queue = queue
        self.transport = transport
        self.account = transport.account
        self._started = started
        self._heartbeats = heartbeats
        self._key = f"{identity.run_id}/{identity.rank}".encode()
        self._seq = 0
        self._stopped = False
        self._next_heartbeat = time.monotonic() + config.heartbeat_s
        self._thread: threading.Thread | None = None
        self.events_sent = 0
        #: Called on the sender thread after the stop (the run uses it to stop sampling).
        self.on_stopped: Callable[[], None] = lambda: None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(timeout_s, 0.0))

    def run_inline(self) -> None:
        """Process everything queued, including a stop, on the calling thread."""
        self._send_run_started()
        while not self._stopped:
            self._cycle()
            if not self._stopped and not self.queue.segments and not self.queue.points:
                break

    # --- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        self._send_run_started()
        interval = self.config.flush_interval_s
        while not self._stopped:
            self.queue.wake.wait(interval)
            self.queue.wake.clear()
            self._cycle()

    def _cycle(self) -> None:
        segments, points = self.queue.take()
        for kind, item in segments:
            try:
                self._handle(kind, item)
            except Exception:  # one bad item must not cost the others, nor the thread
                log.exception("runstream: the sender could not send an event")
        if points:
            try:
                self._send_points(points)
            except Exception:
                log.exception("runstream: the sender could not send metric points")
        if self._stopped:
            return
        try:
            if self._heartbeats and time.monotonic() >= self._next_heartbeat:
                self._next_heartbeat = time.monotonic() + self.config.heartbeat_s
                self._send("heartbeat", events_pb2.Heartbeat(), _now_ms())
            self.transport.maintain()
        except Exception:  # the thread must survive to serve flush() and finish()
            log.exception("runstream: the sender hit an unexpected error")

    def _handle(self, kind: Item, item: Any) -> None:
        if kind == Item.POINTS:
            self._send_points(item)
        elif kind == Item.EVENT:
            field, body, ts_ms = item
            self._send(field, body, ts_ms)
        elif kind == Item.FLUSH:
            item.finish(self._safe(lambda: self.transport.flush(item.remaining_s())))
        elif kind == Item.STOP:
            self._stopped = True
            item.finish(self._safe(lambda: self.transport.close(item.remaining_s())))
            self.on_stopped()

    @staticmethod
    def _safe(call: Callable[[], bool]) -> bool:
        try:
            return call()
        except Exception:
            log.exception("runstream: flushing the transport failed")
            return False

    def _send_run_started(self) -> None:
        if self._started is None:
            return
        body, ts_ms = self._started
        self._started = None
        try:
            body.code.CopyFrom(capture.code_version(artifacts_dir=self.config.artifacts_dir))
            body.env.MergeFrom(capture.environment())  # keeps the launcher fields Run set
        except Exception:
            log.exception("runstream: capturing code version and environment failed")
        try:
            self._send("run_started", body, ts_ms)
        except Exception:
            log.exception("runstream: sending run_started failed")

    def _send_points(self, flat: list[Any]) -> None:
        """Send a flat buffer of records as MetricsBatch events, each filled in place in
        its envelope (no copy) from C-level column slices."""
        ts_ms = _now_ms()
        for chunk in column_chunks(flat_columns(flat), self.config.points_per_batch):
            self._emit_points(chunk, ts_ms)

    def _emit_points(self, cols: Columns, ts_ms: int) -> None:
        """One MetricsBatch of these columns; halves of them while it does not encode or
        is over EVENT_BYTES, down to single points (a bad one is dropped)."""
        n = len(cols[0])
        event = self._envelope(ts_ms)
        try:
            fill_batch(event.metrics, *cols)
            payload = codec.encode(event, self.config.encoding)
        except Exception as e:  # a value the encoder refuses: isolate it
            if n == 1:
                self.account.drop(f"metric point could not be encoded ({type(e).__name__})", 1)
                log.error("runstream: dropped metric point %r at step %r: %s",
                          cols[0][0], cols[1][0], e)
                return
        else:
            if n == 1 or len(payload) <= EVENT_BYTES:
                self._emit(payload, n)
                return
        half = n // 2
        for part in (slice(0, half), slice(half, n)):
            keys, steps, values, ts = cols
            self._emit_points((keys[part], steps[part], values[part], ts[part]), ts_ms)

    def _send(self, field: str, body: Message, ts_ms: int) -> None:
        if field == "run_finished":
            self._count_into(body)  # type: ignore[arg-type]
        items_field = _LIST_BODIES.get(field)
        if items_field is None:
            self._emit_items(field, body, None, [], ts_ms)
            return
        items = list(getattr(body, items_field))
        start, size = 0, 0
        for i, item in enumerate(items):
            item_bytes = item.ByteSize() + 8
            if i > start and (i - start >= MAX_ITEMS_PER_EVENT
                              or size + item_bytes > EVENT_BYTES):
                self._emit_items(field, body, items_field, items[start:i], ts_ms)
                start, size = i, 0
            size += item_bytes
        if items:
            self._emit_items(field, body, items_field, items[start:], ts_ms)

    def _emit_items(self, field: str, body: Message, items_field: str | None,
                    items: list[Any], ts_ms: int) -> None:
        """One event of ``field``: ``body`` itself, or (``items_field`` set) a body of
        these items; halves of them while it does not encode or is too big."""
        event = self._envelope(ts_ms)
        target = getattr(event, field)
        try:
            if items_field is None:
                target.CopyFrom(body)
            else:
                getattr(target, items_field).extend(items)
            payload = codec.encode(event, self.config.encoding)
        except Exception as e:
            if len(items) <= 1:
                self.account.drop(f"{field} event could not be encoded ({type(e).__name__})", 0)
                log.error("runstream: dropped a %s event: %s", field, e)
                return
        else:
            if len(items) <= 1 or len(payload) <= EVENT_BYTES:
                self._emit(payload, 0)
                return
        half = len(items) // 2
        self._emit_items(field, body, items_field, items[:half], ts_ms)
        self._emit_items(field, body, items_field, items[half:], ts_ms)

    def _count_into(self, finished: events_pb2.RunFinished) -> None:
        """What RunFinished reports: points accepted in all, and drops so far by reason."""
        with self.queue.lock:
            finished.points_logged = self.queue.taken_points
        del finished.dropped[:]
        for reason, events, points in self.account.drops():
            finished.dropped.add(reason=reason, events=events, points=points)

    def _envelope(self, ts_ms: int) -> events_pb2.RunEvent:
        """A RunEvent with this producer's identity and the next ``seq`` (taken by
        :meth:`_emit`, so an event that is split or dropped leaves no gap)."""
        ident = self.identity
        return events_pb2.RunEvent(
            run_id=ident.run_id,
            experiment=ident.experiment,
            rank=ident.rank,
            world_size=ident.world_size,
            local_rank=ident.local_rank,
            node=ident.node,
            producer_id=ident.producer_id,
            seq=self._seq + 1,
            ts_ms=ts_ms,
        )

    def _emit(self, payload: bytes, points: int) -> None:
        self._seq += 1
        self.transport.send(self._key, payload, points)
        self.events_sent += 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

