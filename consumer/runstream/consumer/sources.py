"""Where the pipeline's messages come from: a Kafka consumer group, or the local spool.

A source hands out :class:`Message` objects in order per ``(topic, partition)`` and
learns, through :meth:`Source.commit`, the last offset per position whose rows are
safely in ClickHouse. Sources are not thread-safe: the one pipeline thread that polls
a source also commits and closes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from kafka import ConsumerRebalanceListener

from runstream.proto import codec, spool
from runstream.proto.errors import UnavailableError

log = logging.getLogger(__name__)

#: (topic, partition): where a message sits. Spool messages use ("spool:<file>", 0).
Position = tuple[str, int]

#: The "topic" of spool messages is this prefix and the file name; the spool's progress
#: is reported under the one position (SPOOL_TOPIC, 0).
SPOOL_TOPIC_PREFIX = "spool:"
SPOOL_TOPIC = "spool"


def is_spool(topic: str) -> bool:
    """True for the topic of a spool message or of the spool's progress."""
    return topic == SPOOL_TOPIC or topic.startswith(SPOOL_TOPIC_PREFIX)


@dataclass(frozen=True, slots=True)
class Message:
    """One raw message, not yet decoded.

    ``error`` is set when the source itself found the bytes unreadable (a torn spool
    tail): the pipeline dead-letters such a message with that reason.
    """

    value: bytes
    content_type: str | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    error: str | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())

    @property
    def position(self) -> Position:
        return (self.topic, self.partition)


class Source(Protocol):
    """What the pipeline needs from a source of messages."""

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Up to ``max_records`` messages, blocking at most ``timeout_s`` seconds."""
        ...

    def commit(self, positions: Mapping[Position, int]) -> None:
        """Everything up to and including ``positions[p]`` is stored; blocks until recorded."""
        ...

    def caught_up(self) -> bool:
        """True when nothing is waiting to be polled right now (may do network I/O)."""
        ...

    def set_revoke_callback(self, callback: Callable[[], None]) -> None:
        """Called on the polling thread, inside poll, when positions were taken away."""
        ...

    def offsets(self) -> dict[Position, tuple[int, int]]:
        """Per position held now: (next offset to commit, end offset), for lag reports.
        Called on the polling thread; may do network I/O."""
        ...

    def close(self) -> None:
        """Release the source; uncommitted messages are delivered again later."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """The offset ranges of one batch, recorded before its insert: if the insert happened
    and the commit did not, whoever reads those offsets again cuts its batch to exactly
    these ranges, so its insert token is the same and ClickHouse drops the re-insert.

    ``id`` is ``"<incarnation>.<seq>"``: the recording pipeline's random incarnation and
    the batch's number in it (plans of one incarnation replay in ``seq`` order).
    ``ranges``: (first, last) offset per position, both inclusive.
    """

    id: str
    ranges: Mapping[Position, tuple[int, int]]

    @property
    def order(self) -> tuple[str, int]:
        incarnation, _, seq = self.id.partition(".")
        return incarnation, int(seq) if seq.isdigit() else 0


@runtime_checkable
class PlanningSource(Source, Protocol):
    """A source that can record :class:`ReplayPlan` objects with its commits and hand
    back the plans recorded for positions it was just given (the Kafka source)."""

    @property
    def records_plans(self) -> bool:
        """False when this source cannot record plans after all (a Kafka source without a
        store id): the pipeline then commits as if it were a plain Source."""
        ...

    def commit(self, positions: Mapping[Position, int],
               plans: Sequence[ReplayPlan] = ()) -> None:
        """As :meth:`Source.commit`; also records ``plans`` (every plan whose batch may
        have been inserted but is not committed) with the positions they cover, which
        ``positions`` must include. Blocks until recorded."""
        ...

    def take_plans(self) -> list[ReplayPlan]:
        """Plans recorded for positions assigned since the last call, each complete (this
        source holds every position it covers) and starting at the committed offset or
        later; oldest first. Call it after every poll, before processing what it returned."""
        ...


#: Commit-metadata field prefixes: ``runstream-plan:<entries>;runstream-store:<id>``.
PLAN_METADATA_PREFIX = "runstream-plan:"
STORE_METADATA_PREFIX = "runstream-store:"
#: Longest plan field written into one partition's commit metadata (Kafka's
#: ``offset.metadata.max.bytes`` defaults to 4096); longer: the plans are not recorded
#: there, so they are incomplete and ignored on replay (natural keys collapse it).
MAX_PLAN_METADATA = 1024


def commit_metadata(store_id: str, position: Position, plans: Sequence[ReplayPlan]) -> str:
    """The commit metadata of ``position``: the store id, and one entry
    ``<id>.<partitions in the plan>.<first>-<last>`` per plan covering ``position``.
    The plan field comes first, so a consumer that predates plans (which compared the
    whole suffix after ``runstream-store:``) sees no store field and trusts the offset
    instead of rewinding. Pure."""
    if not store_id:
        return ""
    store = STORE_METADATA_PREFIX + store_id
    entries = []
    for plan in plans:
        span = plan.ranges.get(position)
        if span is not None:
            entries.append(f"{plan.id}.{len(plan.ranges)}.{span[0]}-{span[1]}")
    field_ = PLAN_METADATA_PREFIX + ",".join(entries)
    if not entries or len(field_) > MAX_PLAN_METADATA:
        return store
    return f"{field_};{store}"


def parse_commit_metadata(
    text: str,
) -> tuple[str | None, list[tuple[str, int, int, int]]]:
    """(store id or None if none was recorded, [(plan id, partitions in the plan, first,
    last)]) from commit metadata written by :func:`commit_metadata` (or by an older
    consumer: ``runstream-store:<id>``, or anything else: no store). Malformed plan
    entries are skipped. Pure."""
    store: str | None = None
    plans: list[tuple[str, int, int, int]] = []
    raw_plans = ""
    if text.startswith(PLAN_METADATA_PREFIX) and ";" + STORE_METADATA_PREFIX in text:
        raw_plans, _, text = text.partition(";")
        raw_plans = raw_plans[len(PLAN_METADATA_PREFIX):]
    if text.startswith(STORE_METADATA_PREFIX):
        store = text[len(STORE_METADATA_PREFIX):]
    for entry in raw_plans.split(",") if raw_plans else ():
        parts = entry.split(".")
        span = parts[-1].split("-") if len(parts) == 4 else []
        try:
            first, last, n = int(span[0]), int(span[1]), int(parts[2])
        except (IndexError, ValueError):
            log.warning("ignoring a malformed replay plan in commit metadata: %r", entry[:80])
            continue
        if 0 <= first <= last and n >= 1:
            plans.append((f"{parts[0]}.{parts[1]}", n, first, last))
    return store, plans


# --- Kafka ------------------------------------------------------------------------------

#: Seconds a :class:`KafkaSource` lets its offset commits be refused for a rebalance, with
#: no successful commit in between, before it replaces its KafkaConsumer with a new one.
#: After a broker restart kafka-python 3.0 can stay in a rebalance that never completes
#: (every commit refused with RebalanceInProgressError, the group never re-forms); a
#: rebalance that does complete takes seconds, unless a member is slow to rejoin. The same
#: bound applies to a consumer that stays outside a formed group (kafka-python's member
#: state not STABLE) with nothing assigned: after a broker restart a new consumer was once
#: seen assigned nothing for the 120 s a test waited, with no commit to be refused.
REBALANCE_STUCK_S = 30.0
#: kafka-python's member state of a consumer in a formed group (kafka.structs.MemberState).
_STABLE = "<stable>"


class KafkaSource:
    """A kafka-python consumer in a consumer group, committing only what it is told to.

    Auto-commit is off; offsets are committed (last + 1 per partition) by :meth:`commit`,
    which the pipeline calls only after the rows are in ClickHouse. Before a rebalance
    has taken partitions away, the revoke callback runs (on the polling thread, at the next
    poll) so the pipeline writes and commits the batch in hand at once.

    ``store_id`` (the ``store_identity`` of the ClickHouse store the rows go to) travels
    as the metadata of every commit. A partition assigned with offsets committed for
    another store (one that was removed and recreated empty, say) is read again from the
    beginning: those offsets say nothing about what this store holds. Offsets committed
    without a store id (older consumers) are trusted.

    The metadata also carries the :class:`ReplayPlan` entries of batches that may be
    inserted but are not committed (see :func:`commit_metadata`): they sit with the
    offset they follow, so a group reset or a store rewind drops them with it. After an
    assignment, :meth:`take_plans` returns the plans whose every partition this consumer
    now holds.

    The lag report (end offsets, and committed offsets of partitions not committed here)
    is read by a thread of its own, ``runstream-consumer-lag``, on a consumer of its own:
    :meth:`offsets` only returns its latest snapshot, so the polling thread never waits on
    the broker for it (it would, for request timeouts, while the broker is down).

    When commits have been refused for a rebalance (RebalanceInProgressError,
    CommitFailedError, IllegalGenerationError, UnknownMemberIdError) for longer than
    ``rebalance_stuck_s`` seconds of ``clock``, with no success and no pause longer than
    that between two refusals, the consumer is
    replaced (see :meth:`_rebuild`, logged at WARNING): the old one leaves the group, a new
    one with the same settings joins it at the next poll. Other commit errors (timeouts,
    the broker unreachable) neither start nor reset that clock. A consumer with nothing
    assigned has nothing to commit, so its polls keep the other clock: outside a formed
    group (member state not STABLE) with nothing assigned for longer than
    ``rebalance_stuck_s`` of polls, it is replaced the same way; a poll that failed for an
    outage (Kafka unreachable) restarts that clock, as a formed group or an assignment does.

    Not thread-safe (see the module): poll, commit, caught_up and close run on one polling
    thread, which alone uses the KafkaConsumer, also when it replaces it. kafka-python's IO
    thread and the lag thread share only what is kept under ``_lock``.
    """

    #: Prefix of the commit metadata that names the store the rows went to.
    STORE_METADATA_PREFIX = STORE_METADATA_PREFIX

    def __init__(
        self,
        bootstrap: Iterable[str],
        topic: str,
        group_id: str,
        *,
        max_poll_records: int = 5000,
        client_id: str = "runstream-consumer",
        metadata_wait_s: float = 10.0,
        store_id: str = "",
        lag_interval_s: float = 5.0,
        rebalance_stuck_s: float = REBALANCE_STUCK_S,
        clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> None:
        import threading

        self.topic = topic
        self.group_id = group_id
        self.store_id = store_id
        self._revoke_callback: Callable[[], None] | None = None
        self._revoked = False  # set on kafka-python's IO thread, read on the polling thread
        self._outage = False  # a poll failed with a retriable error (polling thread only)
        # Newly assigned partitions whose committed offsets are not checked yet (added on
        # kafka-python's IO thread, taken on the polling thread).
        self._unchecked: set[Any] = set()
        self._lock = threading.Lock()
        # Next offset per partition we committed; read by the lag thread under the lock.
        self._committed: dict[Position, int] = {}
        self._assigned: frozenset[Any] = frozenset()  # under the lock
        self._lag: dict[Position, tuple[int, int]] = {}  # the lag thread's latest snapshot
        self._plans: list[ReplayPlan] = []  # read at an assignment, taken by the pipeline
        self._rebalance_stuck_s = rebalance_stuck_s
        self._clock = clock
        # Since when (clock) commits are refused for a rebalance, None while they are not,
        # and when the last was (polling thread only).
        self._refused_since: float | None = None
        self._refused_last = 0.0
        # Since when (clock) polls find the consumer outside a formed group with nothing
        # assigned, None while they do not (polling thread only).
        self._unformed_since: float | None = None
        # True from a rebuild until the revoke callback ran at the next poll: what the
        # pipeline holds was read through the replaced consumer (polling thread only).
        self._fenced = False
        # The listener of the current consumer; notes of any other are ignored (under the lock).
        self._listener: _RebalanceListener | None = None
        self._metadata_wait_s = metadata_wait_s
        settings: dict[str, Any] = {
            "bootstrap_servers": list(bootstrap),
            "group_id": group_id,
            "client_id": client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": max_poll_records,
            "fetch_max_bytes": 128 << 20,
            "max_partition_fetch_bytes": 32 << 20,
            "fetch_max_wait_ms": 200,
            # Writing a full batch to ClickHouse (with retries) must fit well inside this.
            "max_poll_interval_ms": 600_000,
            # New topics and partitions are noticed within this, not kafka-python's 5 min.
            "metadata_max_age_ms": 30_000,
            **self.CLIENT_SETTINGS,
            **overrides,
        }
        self._settings = settings
        self._consumer, self._listener = self._new_consumer()
        self._lag_stop = threading.Event()
        self._lag_interval_s = lag_interval_s
        self._start_lag_thread()

    #: Reconnect settings of every Kafka client of the consumer. kafka-python backs off
    #: exponentially up to 30 s between reconnects by default: a broker back after 15 s
    #: was found up to 30 s later. A broker restart is better caught within a second.
    CLIENT_SETTINGS: dict[str, Any] = {
        "reconnect_backoff_ms": 50,
        "reconnect_backoff_max_ms": 1000,
        "retry_backoff_ms": 100,
    }

    def _new_consumer(self) -> tuple[Any, _RebalanceListener]:
        """A KafkaConsumer with ``self._settings``, the topic's partitions loaded, subscribed
        with a listener of its own (returned too, to be made ``self._listener``); it joins the
        group at its first poll. Blocks up to ``metadata_wait_s`` seconds (and the client's
        connect timeouts); raises UnavailableError when Kafka cannot be reached."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        try:
            consumer = KafkaConsumer(**self._settings)
        except KafkaError as e:
            servers = self._settings["bootstrap_servers"]
            raise UnavailableError(f"cannot reach Kafka at {servers}: {e}") from e
        try:
            self._await_topic_metadata(consumer, self.topic, self._metadata_wait_s)
            listener = _RebalanceListener(self)
            consumer.subscribe([self.topic], listener=listener)
        except BaseException:
            consumer.close(autocommit=False)
            raise
        return consumer, listener

    def _start_lag_thread(self) -> None:
        import threading

        self._lag_thread = threading.Thread(target=self._lag_loop, name="runstream-consumer-lag",
                                            daemon=True)
        self._lag_thread.start()

    @staticmethod
    def _await_topic_metadata(consumer: Any, topic: str, timeout_s: float) -> None:
        """Load the topic's partitions before joining the group.

        A member that joins before its client knows the topic is assigned nothing, and
        kafka-python only notices at the next metadata refresh: minutes of no ingestion.
        A topic that does not exist yet is picked up by that refresh (metadata_max_age_ms).
        """
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() >= deadline:
                log.warning("topic %s has no partitions yet; joining the group anyway", topic)
                return
            time.sleep(0.2)  # the metadata request itself is what we wait on

    def set_revoke_callback(self, callback: Callable[[], None]) -> None:
        self._revoke_callback = callback

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """As :meth:`Source.poll`. A retriable Kafka error (brokers or the group coordinator
        unreachable: two of three brokers down) is an outage to wait out, not the end of
        the consumer: it is logged (once per outage) and the poll returns nothing after
        ``timeout_s``; anything else raises."""
        from kafka.errors import KafkaError

        try:
            records = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                          max_records=max_records)
        except KafkaError as e:
            if not getattr(e, "retriable", False):
                raise
            if not self._outage:
                log.warning("runstream-consumer: Kafka unreachable, retrying: %s", e)
            self._outage = True
            self._unformed_since = None  # an outage is waited out, not rebuilt
            time.sleep(max(0.0, min(timeout_s, 1.0)))
            return []
        if self._outage:
            log.warning("runstream-consumer: Kafka reachable again")
            self._outage = False
        self._check_group_formed()
        if self._revoked:
            # Partitions moved since the last poll: let the pipeline write and commit what
            # it holds now. A commit for a partition now owned elsewhere is rejected and
            # logged; its new owner re-reads those messages, and ClickHouse collapses them.
            self._revoked = False
            fenced = self._fenced  # a rebuild in the callback fences what comes after it
            if self._revoke_callback is not None:
                self._revoke_callback()
            if fenced:
                self._fenced = False  # the replaced consumer's messages are flushed or dropped
        if self._unchecked:
            rewound = self._check_committed_store()
            if rewound:
                records = {tp: batch for tp, batch in records.items() if tp not in rewound}
        out: list[Message] = []
        for tp, batch in records.items():
            for r in batch:
                content_type = None
                for name, value in r.headers or ():
                    if name == codec.CONTENT_TYPE_HEADER and value is not None:
                        content_type = value.decode("utf-8", "replace")
                out.append(
                    Message(
                        value=r.value if r.value is not None else b"",
                        content_type=content_type,
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=r.offset,
                        key=r.key,
                        headers=tuple(r.headers or ()),
                    )
                )
        return out

    def _check_committed_store(self) -> set[Any]:
        """Rewind newly assigned partitions whose offsets were committed for another store;
        returns them. Blocks on one offset fetch (bounded) right after an assignment."""
        from kafka.errors import KafkaError

        with self._lock:
            unchecked, self._unchecked = self._unchecked, set()
        if not self.store_id:
            return set()
        rewound: set[Any] = set()
        # Plan entries per plan id: only from partitions read in this one call (an eager
        # rebalance assigns them all at once); a partition read on a retry may have had
        # records delivered already, so its plans are incomplete here and ignored.
        entries: dict[str, list[tuple[int, Position, int, int]]] = {}
        for tp in sorted(unchecked):
            try:
                committed = self._consumer.committed(tp, metadata=True, timeout_ms=10_000)
            except KafkaError as e:
                with self._lock:
                    self._unchecked.add(tp)  # checked again at the next poll
                log.warning("could not read the committed offset of %s:%d: %s",
                            tp.topic, tp.partition, e)
                continue
            if committed is None or committed.offset < 0:
                continue
            other, plans = parse_commit_metadata(committed.metadata or "")
            if other is None:
                continue  # committed by a consumer that did not record its store
            if other == self.store_id:
                for plan_id, n, first, last in plans:
                    if first >= committed.offset:
                        entries.setdefault(plan_id, []).append(
                            (n, (tp.topic, tp.partition), first, last))
                continue
            log.warning(
                "%s:%d: offsets up to %d were committed for store %s, but this consumer "
                "writes to store %s (recreated?): reading the partition again from the "
                "beginning", tp.topic, tp.partition, committed.offset, other, self.store_id)
            self._consumer.seek_to_beginning(tp)
            rewound.add(tp)
        found = []
        for plan_id, covered in entries.items():
            if all(n == len(covered) for n, _, _, _ in covered):
                found.append(ReplayPlan(plan_id, {p: (a, b) for _, p, a, b in covered}))
            else:  # some of its partitions went to other consumers
                log.info("replay plan %s: this consumer holds %d of its %d partitions; "
                         "not reproduced (ReplacingMergeTree keys collapse the replay)",
                         plan_id, len(covered), covered[0][0])
        found.sort(key=lambda plan: plan.order)
        self._plans.extend(found)
        return rewound

    @property
    def records_plans(self) -> bool:
        """Plans travel with the store id (metadata of other stores is not read)."""
        return bool(self.store_id)

    def take_plans(self) -> list[ReplayPlan]:
        plans, self._plans = self._plans, []
        return plans

    def commit(self, positions: Mapping[Position, int],
               plans: Sequence[ReplayPlan] = ()) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import (
            CommitFailedError,
            IllegalGenerationError,
            KafkaError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        )

        if not positions:
            return
        if self._fenced:
            # Read through a consumer replaced since: its successor must not commit them
            # (another member may own them now). The rows are stored; whoever holds the
            # partitions re-reads from the last commit, and ClickHouse collapses the replay.
            log.warning("not committing offsets read before the Kafka consumer was rebuilt "
                        "(rows are stored): %s", sorted(positions.items()))
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(
                last + 1, commit_metadata(self.store_id, (topic, partition), plans), -1)
            for (topic, partition), last in positions.items()
        }
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as e:
            # The group rebalanced: whoever owns these partitions now re-reads from the
            # last commit; the rows are already stored, and replays collapse in ClickHouse.
            log.warning("offset commit rejected after a rebalance (rows are stored): %s", e)
            self._refused_for_rebalance(e)
            return
        except KafkaError as e:
            if isinstance(e, (RebalanceInProgressError, IllegalGenerationError,
                              UnknownMemberIdError)):
                self._refused_for_rebalance(e)
            raise UnavailableError(f"offset commit failed: {e}") from e
        self._refused_since = None
        with self._lock:
            for position, last in positions.items():
                self._committed[position] = last + 1

    def _refused_for_rebalance(self, error: Exception) -> None:
        """Note a commit refused for a rebalance; rebuild the consumer once the refusals
        have lasted longer than ``rebalance_stuck_s``. Polling thread only."""
        now = self._clock()
        since, last = self._refused_since, self._refused_last
        self._refused_last = now
        if since is None or now - last > self._rebalance_stuck_s:
            # A first refusal, or the first after a long quiet (two ordinary rebalances an
            # idle hour apart are not one stuck one): the refusals start here.
            self._refused_since = now
            return
        refused_s = now - since
        if refused_s > self._rebalance_stuck_s:
            self._rebuild(f"offset commits refused for a rebalance for {refused_s:.0f}s "
                          f"(last: {type(error).__name__}: {error})")

    def _check_group_formed(self) -> None:
        """Rebuild the consumer once polls have found it outside a formed group with
        nothing assigned for longer than ``rebalance_stuck_s``. Polling thread only."""
        state = getattr(self._consumer.group_metadata(), "state", _STABLE)  # kafka-python
        if state == _STABLE or self._consumer.assignment():
            self._unformed_since = None
            return
        now = self._clock()
        if self._unformed_since is None:
            self._unformed_since = now
            return
        unformed_s = now - self._unformed_since
        if unformed_s > self._rebalance_stuck_s:
            self._rebuild(f"outside a formed consumer group with nothing assigned for "
                          f"{unformed_s:.0f}s (member state {state})")
            # The new consumer (or, if none could be built, the old one) gets a bound of its own.
            self._unformed_since = None

    def _rebuild(self, reason: str) -> None:
        """Replace the KafkaConsumer with a new one of the same settings (see
        :meth:`_new_consumer`); the old one leaves the group, the new one joins it at the
        next poll. What the old one had assigned is forgotten here as if revoked: the revoke
        callback runs at the next poll, and until it has run, commits (of positions read
        through the old consumer) are dropped, never sent through the new one. If no new
        consumer can be built, the old one is kept and the next try comes after another
        ``rebalance_stuck_s``. Polling thread only; blocks while the old consumer leaves
        (bounded) and the new one loads the topic's metadata."""
        from kafka.errors import KafkaError

        log.warning("runstream-consumer: rebuilding the Kafka consumer of group %s: %s",
                    self.group_id, reason)
        self._refused_since = None
        try:
            consumer, listener = self._new_consumer()
        except (UnavailableError, KafkaError) as e:
            log.warning("runstream-consumer: could not build a new Kafka consumer, keeping "
                        "the old one for another %.0fs: %s", self._rebalance_stuck_s, e)
            self._refused_since = self._clock()
            return
        old, self._consumer = self._consumer, consumer
        with self._lock:
            self._listener = listener  # the old consumer's notes are ignored from now on
            held = self._assigned
        self._assigned_changed(held, added=False)
        self._fenced = True
        self._revoked = True  # even with nothing held: the next poll lifts the fence
        self._plans = []  # read for the old assignment; the new one reads its own
        try:
            # No autocommit; its listener is detached, so the revocation it reports is ignored.
            old.close(autocommit=False, timeout_ms=10_000)
        except Exception as e:  # best effort: it is replaced already, and in a bad state
            log.warning("runstream-consumer: closing the replaced Kafka consumer: %s", e)
        if not self._lag_thread.is_alive() and not self._lag_stop.is_set():
            log.warning("runstream-consumer: the lag thread had stopped; starting it again")
            self._start_lag_thread()

    def caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        ends = self._consumer.end_offsets(list(assignment))
        return all(self._consumer.position(tp) >= ends[tp] for tp in assignment)

    def offsets(self) -> dict[Position, tuple[int, int]]:
        """(committed offset, end offset) per assigned partition, as the lag thread last
        read them (every ``lag_interval_s``). Never blocks on the broker; thread-safe."""
        with self._lock:
            return dict(self._lag)

    def _lag_loop(self) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        consumer: Any = None
        try:
            while not self._lag_stop.wait(self._lag_interval_s):
                try:
                    if consumer is None:
                        # Never subscribes: it only reads offsets, never joins the group.
                        consumer = KafkaConsumer(
                            bootstrap_servers=self._settings["bootstrap_servers"],
                            group_id=self.group_id, enable_auto_commit=False,
                            client_id=f"{self._settings['client_id']}-lag",
                            request_timeout_ms=10_000, **self.CLIENT_SETTINGS)
                    snapshot = self._read_lag(consumer)
                except KafkaError as e:
                    log.warning("could not read offsets for the lag report: %s", e)
                    continue
                with self._lock:
                    self._lag = snapshot
        finally:
            if consumer is not None:
                consumer.close(autocommit=False)

    def _read_lag(self, consumer: Any) -> dict[Position, tuple[int, int]]:
        """The lag report: (committed offset, end offset) per assigned partition. Blocks on
        the broker (bounded by request timeouts); runs on the lag thread only."""
        with self._lock:
            assignment = sorted(self._assigned)
            committed_here = dict(self._committed)
        if not assignment:
            return {}
        ends = consumer.end_offsets(assignment, timeout_ms=10_000)
        out: dict[Position, tuple[int, int]] = {}
        for tp in assignment:
            position = (tp.topic, tp.partition)
            committed = committed_here.get(position)
            if committed is None:
                committed = consumer.committed(tp, timeout_ms=10_000) or 0
            out[position] = (int(committed), int(ends.get(tp, 0)))
        return out

    def _assigned_changed(self, assigned: Iterable[Any], *, added: bool,
                          listener: _RebalanceListener | None = None) -> None:
        """Record partitions given (``added``) or taken away (then the revoke callback runs
        at the next poll). ``listener``: whose note this is; notes of a listener other than
        the current consumer's (one replaced by :meth:`_rebuild`) are ignored. Thread-safe."""
        with self._lock:
            if listener is not None and listener is not self._listener:
                return
            if added:
                new = set(assigned)
                self._assigned = self._assigned | new
                self._unchecked |= new
            else:
                gone = set(assigned)
                if gone:
                    self._revoked = True
                self._assigned = self._assigned - gone
                self._unchecked -= gone
                for tp in gone:
                    self._lag.pop((tp.topic, tp.partition), None)
                    # Its next owner commits; what we committed is stale once it is back.
                    self._committed.pop((tp.topic, tp.partition), None)

    def close(self) -> None:
        self._lag_stop.set()
        self._consumer.close(autocommit=False)
        self._lag_thread.join(timeout=15)


class _RebalanceListener(ConsumerRebalanceListener):
    """Notes that partitions were taken away or given.

    kafka-python 3 calls listeners on its IO thread, so this only records what changed;
    the polling thread runs the revoke callback and checks new partitions' committed
    offsets at its next poll.
    """

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self._source._assigned_changed(revoked, added=False, listener=self)

    def on_partitions_lost(self, lost: Any) -> None:
        if lost:
            self._source._assigned_changed(lost, added=False, listener=self)

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self._source._assigned_changed(assigned, added=True, listener=self)


# --- spool ------------------------------------------------------------------------------


@dataclass(slots=True)
class _ClaimedFile:
    claim: spool.Claim  # holds the file (and its lock) until deleted or given back
    last_offset: int  # offset of its last message


class SpoolSource:
    """Reads the local spool directory: complete ``.spool`` files, oldest name first.

    Each file is claimed (renamed to ``.claimed-<pid>`` and locked, see
    :mod:`runstream.proto.spool`) and read whole; its frames become messages with topic
    ``"spool:<file name>"``, partition 0 and the frame's byte offset. Each damaged byte
    range (a torn tail, flipped bits) becomes one message carrying ``error`` and exactly
    those bytes (the pipeline dead-letters it); valid frames after it are read as usual.
    A file is deleted once a commit covers its last message; files still uncommitted at
    :meth:`close` go back to ``.spool``. Orphans (files whose writer or reader let go of
    their lock) are recovered at start and every ``recover_interval_s``.

    Entries with a spool file's name that are no regular file of ours (a directory, a
    symlink, a FIFO) are never opened: each is logged once and kept in :attr:`skipped`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        recover_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._clock = clock
        self._recover_interval_s = recover_interval_s
        self._last_recover = clock()
        self._pending: list[Message] = []
        self._claimed: dict[str, _ClaimedFile] = {}
        #: Files ingested and deleted so far.
        self.files_done = 0
        #: Odd entries of the directory left alone: name -> why (a FIFO, a symlink, ...).
        self.skipped: dict[str, str] = {}
        spool.recover(directory)

    def set_revoke_callback(self, callback: Callable[[], None]) -> None:
        """Nothing is ever revoked from a spool reader; accepted for the Source protocol."""

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        """Messages of the next ready file(s); sleeps up to ``timeout_s`` when there are none."""
        if not self._pending:
            self._load_next_file()
        if not self._pending and timeout_s > 0:
            time.sleep(min(timeout_s, 0.1))  # nothing to wait on but the directory
            self._load_next_file()
        out, self._pending = self._pending[:max_records], self._pending[max_records:]
        return out

    def commit(self, positions: Mapping[Position, int]) -> None:
        for (topic, _partition), last in positions.items():
            claimed = self._claimed.get(topic)
            if claimed is not None and last >= claimed.last_offset:
                claimed.claim.done()
                del self._claimed[topic]
                self.files_done += 1

    def caught_up(self) -> bool:
        return not self._pending and not self._ready()

    def offsets(self) -> dict[Position, tuple[int, int]]:
        """One pseudo-position ``(SPOOL_TOPIC, 0)``: files ingested, and files ingested
        plus files waiting (claimed or ready), so lag counts spool files."""
        waiting = len(self._claimed) + len(self._ready())
        return {(SPOOL_TOPIC, 0): (self.files_done, self.files_done + waiting)}

    def close(self) -> None:
        """Hand uncommitted files back to the spool (``.spool``) for the next reader."""
        for claimed in self._claimed.values():
            try:
                claimed.claim.give_back()
            except OSError as e:  # unlocked now: the next reader's recover() returns it
                log.warning("cannot give back spool file %s: %s", claimed.claim.path, e)
        self._claimed.clear()
        self._pending.clear()

    def _ready(self) -> list[Path]:
        listing = spool.list_spool(self.directory)
        for name, why in listing.odd:
            if name not in self.skipped:
                self.skipped[name] = why
                log.warning("spool directory %s: skipping %s (%s); it is never opened",
                            self.directory, name, why)
        return listing.ready

    def _load_next_file(self) -> None:
        now = self._clock()
        if now - self._last_recover >= self._recover_interval_s:
            self._last_recover = now
            spool.recover(self.directory)
        for ready in self._ready():
            claim = spool.claim(ready)
            if claim is None:
                continue  # another reader (or its writer, a moment longer) holds it
            try:
                messages = self._read(claim)
            except BaseException:
                claim.give_back()
                raise
            if not messages:
                claim.done()  # an empty file: nothing to ingest
                self.files_done += 1
                continue
            self._claimed[messages[0].topic] = _ClaimedFile(claim, messages[-1].offset)
            self._pending.extend(messages)
            return

    @staticmethod
    def _read(claim: spool.Claim) -> list[Message]:
        topic = SPOOL_TOPIC_PREFIX + claim.name
        data = claim.read()
        messages: list[Message] = []
        for item in spool.scan(data):
            if isinstance(item, spool.Frame):
                messages.append(Message(
                    value=item.payload, content_type=codec.CONTENT_TYPES[item.encoding],
                    topic=topic, partition=0, offset=item.offset,
                ))
                continue
            log.warning("spool file %s: bytes %d..%d are damaged (%s); dead-lettering them",
                        claim.name, item.offset, item.end, item.reason)
            messages.append(Message(
                value=data[item.offset : item.end], content_type=None, topic=topic,
                partition=0, offset=item.offset,
                error=(f"corrupt spool file: {claim.name}: bytes {item.offset}..{item.end}: "
                       f"{item.reason}"),
            ))
        return messages
