"""Dead-letter sinks: where messages go that can never become rows.

A dead letter keeps the original bytes untouched plus the reason, so nothing is lost and
an operator can repair and replay it. The pipeline calls :meth:`DeadLetterSink.add` as it
meets a bad message and :meth:`DeadLetterSink.flush` after the ClickHouse write and
before committing offsets, so a dead letter is durable before its offset is.
Not thread-safe: one pipeline thread owns a sink.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from runstream.consumer.sources import Message
from runstream.proto import codec
from runstream.proto.errors import UnavailableError

log = logging.getLogger(__name__)

REASON_HEADER = "runstream-dlq-reason"
TOPIC_HEADER = "runstream-dlq-topic"
PARTITION_HEADER = "runstream-dlq-partition"
OFFSET_HEADER = "runstream-dlq-offset"
MAX_REASON_BYTES = 4096


class DeadLetterSink(Protocol):
    def add(self, message: Message, reason: str) -> None:
        """Queue one dead letter (may send asynchronously)."""
        ...

    def flush(self) -> None:
        """Block until every queued dead letter is durable; raise if one cannot be."""
        ...

    def close(self) -> None:
        """Flush what is queued and release resources."""
        ...


def _reason_bytes(reason: str) -> bytes:
    return reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]


class KafkaDeadLetterSink:
    """Produces dead letters to ``<topic>.dlq``: the original value and key, with headers
    ``runstream-dlq-reason``/``-topic``/``-partition``/``-offset`` and the original
    ``content-type``.

    The topic is created at start if missing (with the broker's default partitions and
    replication; one INFO line says so). Left to the broker's auto-creation, the first
    dead letter met a topic without a leader and kafka-python logged that as an ERROR.
    Without the right to create topics it falls back to auto-creation, with a WARNING.
    """

    def __init__(
        self, bootstrap: Iterable[str], dlq_topic: str, *, client_id: str = "runstream-dlq",
        **overrides: Any,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.dlq_topic = dlq_topic
        self._futures: list[tuple[Message, str, Any]] = []
        settings: dict[str, Any] = {
            "bootstrap_servers": list(bootstrap),
            "client_id": client_id,
            "acks": "all",
            "linger_ms": 20,
            "max_request_size": 64 << 20,
            # Find a restarted broker within a second, not kafka-python's 30 s backoff.
            "reconnect_backoff_max_ms": 1000,
            **overrides,
        }
        try:
            self._producer = KafkaProducer(**settings)
        except KafkaError as e:
            servers = settings["bootstrap_servers"]
            raise UnavailableError(f"cannot reach Kafka at {servers}: {e}") from e
        self._ensure_topic(settings["bootstrap_servers"], client_id)

    def _ensure_topic(self, bootstrap: list[str], client_id: str) -> None:
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import KafkaError, TopicAlreadyExistsError

        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{client_id}-admin")
        except KafkaError as e:
            log.warning("cannot check dead-letter topic %s (%s); the broker creates it with"
                        " the first dead letter if it allows auto-creation", self.dlq_topic, e)
            return
        try:
            if self.dlq_topic in admin.list_topics():
                return
            admin.create_topics([NewTopic(self.dlq_topic)])
            log.info("created dead-letter topic %s", self.dlq_topic)
        except TopicAlreadyExistsError:
            pass  # another consumer created it just now
        except KafkaError as e:
            log.warning("could not create dead-letter topic %s (%s); the broker creates it"
                        " with the first dead letter if it allows auto-creation",
                        self.dlq_topic, e)
        finally:
            admin.close()

    def add(self, message: Message, reason: str) -> None:
        self._futures.append((message, reason, self._send(message, reason)))

    def _send(self, message: Message, reason: str) -> Any:
        headers = [
            (REASON_HEADER, _reason_bytes(reason)),
            (TOPIC_HEADER, message.topic.encode()),
            (PARTITION_HEADER, str(message.partition).encode()),
            (OFFSET_HEADER, str(message.offset).encode()),
        ]
        if message.content_type is not None:
            headers.append((codec.CONTENT_TYPE_HEADER, message.content_type.encode()))
        return self._producer.send(
            self.dlq_topic, value=message.value, key=message.key, headers=headers
        )

    def flush(self) -> None:
        from kafka.errors import KafkaError

        if not self._futures:
            return
        self._producer.flush()
        failed: list[tuple[Message, str, Any]] = []
        error: Exception | None = None
        for message, reason, future in self._futures:
            try:
                future.get(timeout=0)
            except KafkaError as e:
                error = e
                # Sent again on the next flush; the offsets stay uncommitted until then.
                failed.append((message, reason, self._send(message, reason)))
        self._futures = failed
        if error is not None:
            raise UnavailableError(
                f"{len(failed)} dead letters not written to {self.dlq_topic}: {error}"
            ) from error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close(timeout=5)


class SpoolDeadLetterSink:
    """Appends dead letters to ``<spool_dir>/dead/dead-<ms>-<pid>.jsonl``, one JSON object
    a line: reason, topic, partition, offset, content_type and the base64 payload."""

    def __init__(self, spool_dir: Path) -> None:
        self.directory = spool_dir / "dead"
        self._pending: list[str] = []
        self._fh: IO[str] | None = None
        self.path: Path | None = None

    def add(self, message: Message, reason: str) -> None:
        self._pending.append(json.dumps({
            "reason": reason,
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "content_type": message.content_type,
            "payload_b64": base64.b64encode(message.value).decode("ascii"),
        }))

    def flush(self) -> None:
        if not self._pending:
            return
        try:
            fh = self._fh if self._fh is not None else self._open()
            fh.write("\n".join(self._pending) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as e:
            raise UnavailableError(f"cannot write dead letters under {self.directory}: {e}") from e
        self._pending.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def _open(self) -> IO[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"dead-{int(time.time() * 1000)}-{os.getpid()}.jsonl"
        self._fh = open(self.path, "a", encoding="utf-8")  # closed in close()
        return self._fh


def read_spool_dead_letters(directory: Path) -> list[dict[str, Any]]:
    """Every dead letter under ``<spool_dir>/dead`` (payload decoded to bytes), oldest first."""
    out: list[dict[str, Any]] = []
    dead = directory / "dead"
    if not dead.is_dir():
        return out
    for path in sorted(dead.glob("*.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                record["payload"] = base64.b64decode(record.pop("payload_b64"))
                out.append(record)
    return out
