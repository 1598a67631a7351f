"""The processing chain: poll -> decode -> validate -> batch -> write -> commit.

At-least-once, idempotent: a batch's rows are inserted with a dedup token derived from
the offset ranges (and bytes) it covers, dead letters are made durable after that, and
offsets are committed last. A crash anywhere before the commit means the messages are
delivered again; ClickHouse drops the re-insert of an identical batch by its token, and
the ReplacingMergeTree keys collapse replays cut into different batches.

Replays are cut the same way (with a :class:`~runstream.consumer.sources.PlanningSource`,
i.e. Kafka): before a batch's insert starts, its offset ranges are recorded as a
:class:`~runstream.consumer.sources.ReplayPlan` in the commit metadata of the partitions
it covers (the offsets themselves do not move). Whoever is assigned those partitions
next, after a crash or a rebalance, gets the plans back and cuts its first batches to
exactly those ranges, whatever its own batch size and age, so the token is the same and
ClickHouse drops the re-insert instead of storing duplicates for merges and FINAL to
collapse. A plan whose partitions went to different consumers cannot be reproduced; the
natural keys remain the second line of defence. Messages of a planned partition past its
plan's end wait (in memory) until the plan's batch is sealed, so commits stay in order.

Writes overlap decoding: a full batch is sealed and written on a writer thread while
the pipeline thread polls and decodes the next one. Up to ``sink.concurrency`` batches
are written at once (each on its own ClickHouse connection), but they complete in the
order they were sealed, so commits stay in offset order; the pipeline thread alone
touches the source (polls, commits) and the dead-letter sink's flush. The ClickHouse
engine releases the GIL while it inserts, so the overlap is real parallelism.

Every message ends in exactly one place: rows in ClickHouse, or the dead-letter sink.
Before every commit (and about once a second while idle) the pipeline asks the sink
whether the store is still the one it opened (:meth:`ClickHouseSink.check_store`); if it
was removed, nothing more is committed and ``run`` ends with StoreLostError.

The pipeline thread never waits on the broker for the lag report: ``source.offsets()``
returns a snapshot that the source keeps up to date on a thread of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import statistics
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

from runstream.consumer.config import ConsumerConfig
from runstream.consumer.dlq import DeadLetterSink
from runstream.consumer.rows import RowBatch
from runstream.consumer.sink import ClickHouseSink, StoreLostError
from runstream.consumer.sources import Message, PlanningSource, Position, ReplayPlan, Source
from runstream.proto import codec
from runstream.proto.errors import DecodeError, RunstreamError, UnavailableError, ValidationError

log = logging.getLogger(__name__)


#: Longest a replayed plan waits for its messages before it is sealed as it is (its
#: token then differs, and the natural keys collapse the replay), seconds.
REPLAY_WAIT_S = 30.0


def dedup_token(
    ranges: Mapping[Position, tuple[int, int]], digests: Mapping[Position, int] | None = None
) -> str:
    """The insert token of a batch: a hash of its ``topic:partition:first-last`` ranges,
    each with a checksum of that partition's message bytes in offset order (so a recreated
    topic reusing offsets never collides). Sorted by position, and checksummed per
    position, so the order in which partitions' messages interleaved does not matter: a
    replay of the same ranges gets the same token."""
    digests = digests or {}
    text = ",".join(f"{t}:{p}:{a}-{b}:{digests.get((t, p), 0):08x}"
                    for (t, p), (a, b) in sorted(ranges.items()))
    return "rs2-" + hashlib.sha256(text.encode()).hexdigest()[:40]


@dataclass(slots=True)
class _OpenBatch:
    """A batch being filled: its rows, offset ranges and per-position byte checksums."""

    rows: RowBatch
    ranges: dict[Position, tuple[int, int]]
    digests: dict[Position, int]
    started: float | None = None  # clock() at its first message
    dead: int = 0

    @classmethod
    def empty(cls) -> _OpenBatch:
        return cls(RowBatch(), {}, {})


@dataclass(slots=True)
class _Replay:
    """A recorded plan being reproduced: its batch fills with exactly the plan's ranges."""

    plan: ReplayPlan
    batch: _OpenBatch
    adopted: float  # clock() when adopted
    done: set[Position]  # positions whose planned range is complete

    @property
    def complete(self) -> bool:
        return len(self.done) == len(self.plan.ranges)


@dataclass(slots=True)
class _SealedBatch:
    """A batch closed for new messages, to be written and then committed."""

    rows: RowBatch
    token: str
    ranges: dict[Position, tuple[int, int]]
    dead: int
    sealed_at: float  # time.perf_counter() when sealed, for the batch latency
    writing: Future[float] | None = None  # the running write; result: seconds it took
    plan: ReplayPlan | None = None  # recorded before its first write started


class Pipeline:
    """Moves messages from a source into ClickHouse, dead-lettering what is malformed.

    Not thread-safe: run it on one thread (``run``/``start``), or drive it by hand with
    ``run_once``/``drain``/``flush`` from one thread. It starts one short-lived writer
    thread per batch (``<name>-writer``). The counters below are plain ints that other
    threads may read for progress reporting.
    """

    def __init__(
        self,
        source: Source,
        sink: ClickHouseSink,
        dead_letters: DeadLetterSink,
        config: ConsumerConfig,
        *,
        name: str = "runstream-consumer",
        clock: Callable[[], float] = time.monotonic,
        replay_plans: bool = True,
    ) -> None:
        self.source = source
        self.sink = sink
        self.dead_letters = dead_letters
        self.config = config
        self.name = name
        self._clock = clock
        self._stop = threading.Event()
        self._open = _OpenBatch.empty()
        # Plans recorded with commits and reproduced on replay: only a PlanningSource
        # can (replay_plans=False turns it off, for benchmarks).
        self._planner: PlanningSource | None = (
            source if replay_plans and isinstance(source, PlanningSource)
            and source.records_plans else None)
        self._incarnation = uuid.uuid4().hex[:8]
        self._plan_seq = itertools.count(1)
        self._plans_dirty = False  # the recorded plans changed since the last commit
        self._replays: list[_Replay] = []  # being reproduced, oldest first
        self._held: list[Message] = []  # past a planned range, waiting for its seal
        # Sealed, not yet written, oldest first; the first sink.concurrency may be writing.
        self._sealed: deque[_SealedBatch] = deque()
        # Written, not yet committed (a commit that failed is retried with the next one),
        # and the seal times of the batches that commit covers.
        self._uncommitted: dict[Position, int] = {}
        self._uncommitted_since: list[float] = []
        self._closed = False
        #: Messages polled, events stored, metric points stored, rows stored (all tables).
        self.messages = 0
        self.events = 0
        self.points = 0
        self.rows = 0
        #: Messages sent to the dead-letter sink (counted once durable).
        self.dead_lettered = 0
        #: Batches written and committed.
        self.batches = 0
        #: Recorded plans reproduced as batches (their inserts repeat a token).
        self.replayed_plans = 0
        #: Seconds spent in sink writes, summed over writes (parallel writes overlap).
        self.write_s = 0.0
        #: The exception that ended ``run`` on a thread started by ``start``, if any.
        self.error: BaseException | None = None
        # Progress, written on the pipeline thread and read by reporters under the lock.
        self._progress_lock = threading.Lock()
        self._latencies_ms: deque[float] = deque(maxlen=64)
        self._offsets: dict[Position, tuple[int, int]] = {}
        self._offsets_at: float | None = None
        self._store_checked_at: float | None = None
        #: Monotonic time of the last poll that returned less than a full poll (None: none
        #: yet): ingestion is not backlogged while this is recent.
        self.last_unsaturated_poll: float | None = None
        source.set_revoke_callback(self._on_revoke)

    @property
    def _batch(self) -> RowBatch:
        """The rows of the batch being filled (read by tests that stop a pipeline mid-batch)."""
        return self._open.rows

    # --- driving ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then write and commit the batch in hand, close the
        source and dead-letter sink, and return. Blocks. Raises what ends it early (a
        non-transient ClickHouse error, or a transient one still failing at shutdown)."""
        self._stop = stop
        try:
            while not stop.is_set():
                self.run_once()
            self.flush()
        finally:
            self.close()

    def start(self, stop: threading.Event) -> threading.Thread:
        """``run(stop)`` on a new daemon thread named after the pipeline; returns it.
        An exception that ends the thread is logged and kept in :attr:`error`."""

        def target() -> None:
            try:
                self.run(stop)
            except BaseException as e:
                self.error = e
                log.exception("%s stopped by an error", self.name)
                raise

        thread = threading.Thread(target=target, name=self.name, daemon=True)
        thread.start()
        return thread

    def run_once(self) -> int:
        """Poll once (blocking up to the poll timeout or until the batch is due), process
        what came, and flush if the batch is full or old. Returns the messages polled."""
        timeout_s = self.config.poll_timeout_s
        if self._open.started is not None:
            due_in = self._open.started + self.config.max_batch_age_s - self._clock()
            timeout_s = max(0.0, min(timeout_s, due_in))
        messages = self.source.poll(timeout_s, self.config.max_poll_records)
        if self._planner is not None:
            self._adopt(self._planner.take_plans())  # before what this poll returned
        if len(messages) < self.config.max_poll_records:
            self.last_unsaturated_poll = self._clock()
        for message in messages:
            self._process(message)
            if self._open.rows.rows >= self.config.max_batch_rows:
                self._seal()
                self._complete_writes(in_flight=self.sink.concurrency)
        self.messages += len(messages)
        if self._replays and self._clock() - self._replays[0].adopted >= REPLAY_WAIT_S:
            log.warning("%s: replay plan %s still incomplete after %.0fs; sealing the "
                        "replayed batches as they are", self.name, self._replays[0].plan.id,
                        REPLAY_WAIT_S)
            self._end_replays()
        if self._due():
            self._seal()
        self._complete_writes(in_flight=self.sink.concurrency)
        now = self._clock()
        if self._store_checked_at is None or now - self._store_checked_at >= 1.0:
            self._store_checked_at = now
            self.sink.check_store()  # an idle pipeline notices a removed store too
        if self._offsets_at is None or now - self._offsets_at >= self.config.progress_interval_s:
            self._offsets_at = now
            offsets = self.source.offsets()  # a snapshot: never blocks on the broker
            with self._progress_lock:
                self._offsets = offsets
        return len(messages)

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Process until the source has nothing more right now, and flush. Blocks at most
        about ``timeout_s`` seconds; returns False if it was still busy at the deadline."""
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            if self.run_once() == 0 and self.source.caught_up():
                self.flush()
                if not self._uncommitted:
                    return True
        return False

    def flush(self) -> None:
        """Write every batch in hand (sealing the one being filled), make their dead
        letters durable, then commit. Blocks until done.

        On a failed write nothing more is committed and the failed batch stays in hand,
        first in line (a retry reuses its token). A failed commit is logged and retried
        with the next one.
        """
        self._end_replays()
        self._seal()
        self._complete_writes(in_flight=0)

    def progress(self) -> tuple[dict[Position, tuple[int, int]], float]:
        """(committed offset, end offset) per position as last read (every
        ``config.progress_interval_s``), and the median milliseconds of recent batches
        from write to commit (0.0 before the first). Thread-safe; never blocks on I/O."""
        with self._progress_lock:
            latencies = list(self._latencies_ms)
            offsets = dict(self._offsets)
        return offsets, statistics.median(latencies) if latencies else 0.0

    def close(self) -> None:
        """Release the source, the dead-letter sink and the sink's own connections
        (idempotent). Uncommitted messages are delivered again to the next reader."""
        if self._closed:
            return
        self._closed = True
        # A write still running (only after an error ended the driving loop) is left to
        # finish on its daemon thread, connection included: it never touches the source,
        # and its rows, never committed, are read again and deduplicated by the next reader.
        writing = any(b.writing is not None and not b.writing.done() for b in self._sealed)
        self._sealed.clear()
        try:
            self.dead_letters.close()
        except RunstreamError as e:
            log.warning("%s: dead-letter sink did not close cleanly: %s", self.name, e)
        finally:
            self.source.close()
            if not writing:
                self.sink.close()

    # --- internals ----------------------------------------------------------------------

    def _process(self, message: Message) -> None:
        batch = self._route(message)
        if batch is None:
            return  # held until the plan covering its position is sealed
        position = message.position
        span = batch.ranges.get(position)
        batch.ranges[position] = (
            (message.offset, message.offset) if span is None else (span[0], message.offset)
        )
        batch.digests[position] = zlib.crc32(message.value, batch.digests.get(position, 0))
        if batch.started is None:
            batch.started = self._clock()
        if message.error is not None:
            self._dead_letter(batch, message, message.error)
        else:
            try:
                batch.rows.add(codec.decode(message.value, message.content_type))
            except (DecodeError, ValidationError) as e:
                self._dead_letter(batch, message, f"{type(e).__name__}: {e}")
            except Exception as e:  # a poison message must not stop the partition for good
                log.exception("%s: unexpected error on %s:%s@%s", self.name, message.topic,
                              message.partition, message.offset)
                self._dead_letter(batch, message, f"unexpected {type(e).__name__}: {e}")
        if batch is not self._open:
            self._seal_replays(only_complete=True)

    def _route(self, message: Message) -> _OpenBatch | None:
        """The batch ``message`` belongs to: a replay's whose planned range holds its
        offset, else the open batch; None (held) while a plan covering its position is
        not sealed yet. A message before a planned range ends every replay (the plans do
        not describe what is being read)."""
        if not self._replays:
            return self._open
        position, offset = message.position, message.offset
        for replay in self._replays:
            span = replay.plan.ranges.get(position)
            if span is None or position in replay.done:
                continue
            if offset < span[0]:
                log.warning("%s: %s:%d@%d comes before replay plan %s; sealing the replayed"
                            " batches as they are", self.name, message.topic,
                            message.partition, offset, replay.plan.id)
                self._end_replays()
                return self._route(message)
            if offset <= span[1]:
                if offset == span[1]:
                    replay.done.add(position)
                return replay.batch
            replay.done.add(position)  # past the end (offsets may have gaps): complete
        if any(position in r.plan.ranges for r in self._replays):
            self._held.append(message)
            return None
        return self._open

    def _adopt(self, plans: list[ReplayPlan]) -> None:
        """Start reproducing ``plans`` (oldest first), unless a position of one is already
        being read into another batch (then its replay cannot be cut the same way)."""
        busy = set(self._open.ranges).union(*(r.plan.ranges for r in self._replays))
        for plan in plans:  # successive plans of one partition follow each other: fine
            if busy & set(plan.ranges):
                log.warning("%s: replay plan %s overlaps a batch in hand; not reproduced",
                            self.name, plan.id)
                continue
            self._replays.append(_Replay(plan, _OpenBatch.empty(), self._clock(), set()))
            log.info("%s: reproducing batch %s: %s", self.name, plan.id, ", ".join(
                f"{t}:{p}@{a}-{b}" for (t, p), (a, b) in sorted(plan.ranges.items())))

    def _seal_replays(self, *, only_complete: bool) -> None:
        """Seal replays in plan order (all, or the complete ones up to the first that is
        not), then process the messages they held back."""
        while self._replays and (not only_complete or self._replays[0].complete):
            replay = self._replays.pop(0)
            if replay.batch.ranges:
                self.replayed_plans += replay.complete
                self._seal_batch(replay.batch)
        if self._held and not self._replays:
            held, self._held = self._held, []
            for message in held:
                self._process(message)

    def _end_replays(self) -> None:
        """Seal every replay as it is (incomplete ones get another token) and release the
        held messages into the open batch."""
        self._seal_replays(only_complete=False)

    def _dead_letter(self, batch: _OpenBatch, message: Message, reason: str) -> None:
        self.dead_letters.add(message, reason)
        batch.dead += 1

    def _due(self) -> bool:
        if self._open.started is None:
            return False
        if self._open.rows.rows >= self.config.max_batch_rows:
            return True
        return self._clock() - self._open.started >= self.config.max_batch_age_s

    def _seal(self) -> None:
        """Close the batch being filled (if it holds anything) and queue it for writing.
        Replays are not touched: the open batch shares no position with them."""
        self._seal_batch(self._open)
        self._open = _OpenBatch.empty()

    def _seal_batch(self, batch: _OpenBatch) -> None:
        if not batch.ranges:
            return
        self._sealed.append(_SealedBatch(
            rows=batch.rows, token=dedup_token(batch.ranges, batch.digests),
            ranges=batch.ranges, dead=batch.dead, sealed_at=time.perf_counter(),
        ))

    def _complete_writes(self, in_flight: int) -> None:
        """Write sealed batches, up to ``sink.concurrency`` at once, and complete them in
        sealing order, committing each, until at most ``in_flight`` remain unwritten (0:
        wait for all). Blocks while waiting; raises a write's error with that batch kept
        first in line (its next write reuses the token)."""
        while self._sealed:
            starting = [b for b in itertools.islice(self._sealed, self.sink.concurrency)
                        if b.writing is None]
            if self._planner is not None and any(b.plan is None for b in starting):
                for batch in starting:
                    if batch.plan is None:
                        batch.plan = ReplayPlan(f"{self._incarnation}.{next(self._plan_seq)}",
                                                dict(batch.ranges))
                self._plans_dirty = True
                self._commit()  # record the plans before the inserts they describe
            for batch in starting:
                batch.writing = self._start_write(batch)
            head = self._sealed[0]
            writing = cast("Future[float]", head.writing)  # started just above
            if len(self._sealed) <= in_flight and not writing.done():
                break
            head.writing = None
            self.write_s += writing.result()
            self.dead_letters.flush()  # a no-op when nothing is queued
            self._sealed.popleft()
            self._plans_dirty = head.plan is not None or self._plans_dirty
            for position, (_first, last) in head.ranges.items():
                self._uncommitted[position] = last
            self._uncommitted_since.append(head.sealed_at)
            self.events += head.rows.events
            self.points += head.rows.points
            self.rows += head.rows.rows
            self.dead_lettered += head.dead
            self.batches += 1
            self._commit()  # one commit per batch, as each is written
        self._commit()  # retries a commit that failed earlier

    def _start_write(self, batch: _SealedBatch) -> Future[float]:
        """Insert ``batch`` on a new writer thread; the future's result is the seconds
        the insert took (transient failures retried inside, see ClickHouseSink)."""
        future: Future[float] = Future()

        def write() -> None:
            started = time.perf_counter()
            try:
                if batch.rows.rows:
                    self.sink.write(batch.rows, batch.token, self._stop)
            except BaseException as e:
                future.set_exception(e)
            else:
                future.set_result(time.perf_counter() - started)

        threading.Thread(target=write, name=f"{self.name}-writer", daemon=True).start()
        return future

    def _commit(self) -> None:
        """Commit what is written, and record the plans of batches that may be inserted
        and are not committed (a failed plan record only costs the first line of defence
        on a replay: the insert goes ahead)."""
        if not self._uncommitted and not self._plans_dirty:
            return
        # Rows written into a store that was removed are not stored: committing their
        # offsets would lose them. StoreLostError ends the pipeline, uncommitted.
        self.sink.check_store()
        try:
            if self._planner is not None:
                plans = [b.plan for b in self._sealed if b.plan is not None]
                starts: dict[Position, int] = {}
                for plan in plans:
                    for position, (first, _last) in plan.ranges.items():
                        starts[position] = min(starts.get(position, first), first)
                # A planned position's offset does not move: it stays where its oldest
                # plan starts (everything before that is written).
                positions = {p: first - 1 for p, first in starts.items()}
                positions.update(self._uncommitted)
                self._planner.commit(positions, plans)
            else:
                self.source.commit(self._uncommitted)
        except UnavailableError as e:
            log.warning("%s: commit failed, retried with the next batch: %s", self.name, e)
            return
        self._plans_dirty = False
        now = time.perf_counter()
        with self._progress_lock:
            self._latencies_ms.extend((now - t) * 1000 for t in self._uncommitted_since)
        self._uncommitted = {}
        self._uncommitted_since = []

    def _reset_batch(self) -> None:
        self._open = _OpenBatch.empty()
        self._replays = []
        self._held = []

    def _on_revoke(self) -> None:
        # Partitions are about to move: store and commit what we hold while we still own
        # it. If that fails, drop it; the new owner reads it again from the last commit.
        try:
            self.flush()
        except StoreLostError:
            raise
        except RunstreamError as e:
            log.warning("%s: could not flush before a rebalance, dropping the batch: %s",
                        self.name, e)
            self._reset_batch()
            self._sealed.clear()
            self._uncommitted = {}
            self._uncommitted_since = []
