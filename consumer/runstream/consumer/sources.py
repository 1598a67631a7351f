"""Where the pipeline's messages come from: a Kafka consumer group, or the local spool.

A source hands out :class:`Message` objects in order per ``(topic, partition)`` and
learns, through :meth:`Source.commit`, the last offset per position whose rows are
safely in ClickHouse. Sources are not thread-safe: the one pipeline thread that polls
a source also commits and closes it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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


# --- Kafka ------------------------------------------------------------------------------


class KafkaSource:
    """A kafka-python consumer in a consumer group, committing only what it is told to.

    Auto-commit is off; offsets are committed (last + 1 per partition) by :meth:`commit`,
    which the pipeline calls only after the rows are in ClickHouse. Before a rebalance
    has taken partitions away, the revoke callback runs (on the polling thread, at the next
    poll) so the pipeline writes and commits the batch in hand at once.
    """

    def __init__(
        self,
        bootstrap: Iterable[str],
        topic: str,
        group_id: str,
        *,
        max_poll_records: int = 5000,
        client_id: str = "runstream-consumer",
        metadata_wait_s: float = 10.0,
        **overrides: Any,
    ) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        self.topic = topic
        self._revoke_callback: Callable[[], None] | None = None
        self._revoked = False  # set on kafka-python's IO thread, read on the polling thread
        self._committed: dict[Position, int] = {}  # next offset, per partition we committed
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
            **overrides,
        }
        try:
            self._consumer = KafkaConsumer(**settings)
        except KafkaError as e:
            servers = settings["bootstrap_servers"]
            raise UnavailableError(f"cannot reach Kafka at {servers}: {e}") from e
        self._await_topic_metadata(topic, metadata_wait_s)
        self._consumer.subscribe([topic], listener=_RebalanceListener(self))

    def _await_topic_metadata(self, topic: str, timeout_s: float) -> None:
        """Load the topic's partitions before joining the group.

        A member that joins before its client knows the topic is assigned nothing, and
        kafka-python only notices at the next metadata refresh: minutes of no ingestion.
        A topic that does not exist yet is picked up by that refresh (metadata_max_age_ms).
        """
        deadline = time.monotonic() + timeout_s
        while not self._consumer.partitions_for_topic(topic):
            if time.monotonic() >= deadline:
                log.warning("topic %s has no partitions yet; joining the group anyway", topic)
                return
            time.sleep(0.2)  # the metadata request itself is what we wait on

    def set_revoke_callback(self, callback: Callable[[], None]) -> None:
        self._revoke_callback = callback

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        records = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        if self._revoked:
            # Partitions moved since the last poll: let the pipeline write and commit what
            # it holds now. A commit for a partition now owned elsewhere is rejected and
            # logged; its new owner re-reads those messages, and ClickHouse collapses them.
            self._revoked = False
            if self._revoke_callback is not None:
                self._revoke_callback()
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

    def commit(self, positions: Mapping[Position, int]) -> None:
        from kafka import OffsetAndMetadata, TopicPartition
        from kafka.errors import CommitFailedError, KafkaError

        if not positions:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(last + 1, "", -1)
            for (topic, partition), last in positions.items()
        }
        try:
            self._consumer.commit(offsets)
            for position, last in positions.items():
                self._committed[position] = last + 1
        except CommitFailedError as e:
            # The group rebalanced: whoever owns these partitions now re-reads from the
            # last commit; the rows are already stored, and replays collapse in ClickHouse.
            log.warning("offset commit rejected after a rebalance (rows are stored): %s", e)
        except KafkaError as e:
            raise UnavailableError(f"offset commit failed: {e}") from e

    def caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return False
        ends = self._consumer.end_offsets(list(assignment))
        return all(self._consumer.position(tp) >= ends[tp] for tp in assignment)

    def offsets(self) -> dict[Position, tuple[int, int]]:
        """(committed offset, end offset) per assigned partition; asks the broker for end
        offsets (and for committed offsets of partitions this process has not committed)."""
        from kafka.errors import KafkaError

        assignment = list(self._consumer.assignment())
        if not assignment:
            return {}
        try:
            ends = self._consumer.end_offsets(assignment)
            out: dict[Position, tuple[int, int]] = {}
            for tp in assignment:
                position = (tp.topic, tp.partition)
                committed = self._committed.get(position)
                if committed is None:
                    committed = self._consumer.committed(tp) or 0
                out[position] = (int(committed), int(ends.get(tp, 0)))
        except KafkaError as e:
            log.warning("could not read offsets for the lag report: %s", e)
            return {}
        return out

    def close(self) -> None:
        self._consumer.close(autocommit=False)



class _RebalanceListener(ConsumerRebalanceListener):
    """Notes that partitions were taken away.

    kafka-python 3 calls listeners on its IO thread, so this only sets a flag; the
    polling thread runs the revoke callback at its next poll.
    """

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self._source._revoked = True

    def on_partitions_lost(self, lost: Any) -> None:
        if lost:
            self._source._revoked = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned partitions %s", sorted((tp.topic, tp.partition) for tp in assigned))


# --- spool ------------------------------------------------------------------------------


@dataclass(slots=True)
class _ClaimedFile:
    path: Path  # the .claimed-<pid> path
    ready_name: str  # the .spool name it had (and gets back if released)
    last_offset: int  # offset of its last message


class SpoolSource:
    """Reads the local spool directory: complete ``.spool`` files, oldest name first.

    Each file is claimed (renamed to ``.claimed-<pid>``) and read whole; its frames
    become messages with topic ``"spool:<file name>"``, partition 0 and the frame's byte
    offset. A torn or corrupt tail becomes one message carrying ``error`` (the pipeline
    dead-letters it). A file is deleted once a commit covers its last message; files
    still uncommitted at :meth:`close` go back to ``.spool``. Orphans of dead processes
    are recovered at start and every ``recover_interval_s``.
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
                claimed.path.unlink(missing_ok=True)
                del self._claimed[topic]
                self.files_done += 1

    def caught_up(self) -> bool:
        return not self._pending and not spool.ready_files(self.directory)

    def offsets(self) -> dict[Position, tuple[int, int]]:
        """One pseudo-position ``(SPOOL_TOPIC, 0)``: files ingested, and files ingested
        plus files waiting (claimed or ready), so lag counts spool files."""
        waiting = len(self._claimed) + len(spool.ready_files(self.directory))
        return {(SPOOL_TOPIC, 0): (self.files_done, self.files_done + waiting)}

    def close(self) -> None:
        """Hand uncommitted files back to the spool (``.spool``) for the next reader."""
        for claimed in self._claimed.values():
            try:
                os.replace(claimed.path, claimed.path.with_name(claimed.ready_name))
            except FileNotFoundError:
                pass
        self._claimed.clear()
        self._pending.clear()

    def _load_next_file(self) -> None:
        now = self._clock()
        if now - self._last_recover >= self._recover_interval_s:
            self._last_recover = now
            spool.recover(self.directory)
        for ready in spool.ready_files(self.directory):
            claimed = spool.claim(ready)
            if claimed is None:
                continue  # another reader took it
            messages = self._read(claimed, ready.name)
            if not messages:
                claimed.unlink(missing_ok=True)  # an empty file: nothing to ingest
                self.files_done += 1
                continue
            self._claimed[messages[0].topic] = _ClaimedFile(
                claimed, ready.name, messages[-1].offset
            )
            self._pending.extend(messages)
            return

    @staticmethod
    def _read(path: Path, ready_name: str) -> list[Message]:
        topic = SPOOL_TOPIC_PREFIX + ready_name
        messages: list[Message] = []
        try:
            for frame in spool.read_frames(path):
                messages.append(
                    Message(
                        value=frame.payload,
                        content_type=codec.CONTENT_TYPES[frame.encoding],
                        topic=topic,
                        partition=0,
                        offset=frame.offset,
                    )
                )
        except spool.SpoolCorruptError as e:
            log.warning("spool file %s: %s", ready_name, e)
            messages.append(
                Message(
                    value=path.read_bytes()[e.offset :],
                    content_type=None,
                    topic=topic,
                    partition=0,
                    offset=e.offset,
                    error=f"corrupt spool file: {e}",
                )
            )
        return messages
