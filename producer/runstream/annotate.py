"""After-the-fact changes to a run (``runstream tag``, ``note``, ``archive``), sent as one
``Annotation`` event through the same pipeline as the run's own events.

The event has an envelope of its own: rank 0, world_size 1, a new producer id (uuid4
hex) with seq 1, the run's experiment, and the host as its node; the body says who made
the change (the OS user and host). It travels with the SDK's transports and codec: to
Kafka when the config names brokers (key ``<run_id>/0``), else to the local spool that
``runstream serve`` ingests. :func:`send_annotation` returns only once the event is
durable: acknowledged by Kafka, or fsynced into a published spool file (also when Kafka
is configured but does not answer: ``runstream sync`` sends it later). Nothing here
imports grpcio or ClickHouse.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runstream.config import ProducerConfig
from runstream.proto import codec
from runstream.proto.errors import InvalidArgumentError, UnavailableError
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import (
    MAX_ITEMS_PER_EVENT,
    MAX_TAG_VALUE_LEN,
    MAX_TEXT_LEN,
    MAX_WHO_LEN,
    check_key,
    check_run_id,
    check_text,
    validate,
    wire_text,
)
from runstream.transport import KafkaTransport, SpoolTransport, Transport

#: Archive actions, as the ``ArchiveAction`` names in events.proto ("" = leave as is).
ARCHIVE = "ARCHIVE"
RESTORE = "RESTORE"
_ARCHIVE_ACTIONS = {"": events_pb2.ARCHIVE_ACTION_UNSPECIFIED, ARCHIVE: events_pb2.ARCHIVE,
                    RESTORE: events_pb2.RESTORE}
#: Seconds :func:`send_annotation` waits for Kafka's acknowledgement by default.
DEFAULT_TIMEOUT_S = 30.0

KAFKA = "kafka"
SPOOL = "spool"


@dataclass(frozen=True, kw_only=True)
class RunChange:
    """What one annotation changes: tags to set (in order; the latest value of a key
    wins), a note ("" = none) and an archive action ("", "ARCHIVE", "RESTORE")."""

    tags: tuple[tuple[str, str], ...] = ()
    note: str = ""
    archive: str = ""

    def __post_init__(self) -> None:
        check_change(self)


@dataclass(frozen=True, kw_only=True)
class Sent:
    """Where an annotation went: ``destination`` is "kafka" or "spool"; ``where`` the
    bootstrap servers and topic, or the spool directory; ``event`` what was sent."""

    destination: str
    where: str
    event: events_pb2.RunEvent


def check_change(change: RunChange) -> None:
    """InvalidArgumentError naming the first value events.proto's limits refuse: a tag
    key of 1..250 characters, a value of at most 5000, a note of at most 65536, at most
    100,000 tags, a known archive action, and at least one of the three."""
    if not (change.tags or change.note or change.archive):
        raise InvalidArgumentError("nothing to change: give a tag, a note or an archive action")
    if len(change.tags) > MAX_ITEMS_PER_EVENT:
        raise InvalidArgumentError(f"{len(change.tags)} tags at once, over the limit of "
                                   f"{MAX_ITEMS_PER_EVENT}")
    for key, value in change.tags:
        check_key("tag", key, error=InvalidArgumentError)
        check_text(f"tag {key!r} value", value, MAX_TAG_VALUE_LEN, error=InvalidArgumentError)
    check_text("note", change.note, MAX_TEXT_LEN, error=InvalidArgumentError)
    if change.archive not in _ARCHIVE_ACTIONS:
        raise InvalidArgumentError(f"archive action {change.archive!r}: expected "
                                   f"{ARCHIVE} or {RESTORE}")


def parse_tags(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` arguments as (key, value) pairs, split at the first "=" (a value
    may hold "=" and may be empty). InvalidArgumentError for an item without "=", an
    empty or too long key, a value over the limit, or a key given twice."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgumentError(f"{item!r:.80}: expected key=value")
        if not key:
            raise InvalidArgumentError(f"{item!r:.80}: the tag key before '=' is empty")
        check_key("tag", key, error=InvalidArgumentError)
        check_text(f"tag {key!r} value", value, MAX_TAG_VALUE_LEN, error=InvalidArgumentError)
        if key in seen:
            raise InvalidArgumentError(f"tag {key!r} is given more than once")
        seen.add(key)
        pairs.append((key, value))
    return tuple(pairs)


def _who(text: str, fallback: str) -> str:
    text = wire_text(text.strip()) or fallback
    return text[:MAX_WHO_LEN]


def current_user() -> str:
    """The OS user (getpass.getuser: $LOGNAME, $USER, ..., the password database); the
    uid when none names it."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no variable and no passwd entry (containers)
        name = ""
    return _who(name, f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown")


def current_host() -> str:
    """This machine's host name (socket.gethostname)."""
    return _who(socket.gethostname(), "unknown")


def annotation_event(run_id: str, experiment: str, change: RunChange, *, user: str,
                     host: str, ts_ms: int | None = None,
                     producer_id: str | None = None) -> events_pb2.RunEvent:
    """The Annotation event for ``change`` (pure but for the clock and the new producer
    id, unless given). ValidationError (a RunstreamError) if the user or host, or
    anything else, breaks events.proto's rules."""
    check_run_id(run_id, error=InvalidArgumentError)
    event = events_pb2.RunEvent(
        run_id=run_id, experiment=experiment, rank=0, world_size=1, local_rank=0,
        node=host[:MAX_WHO_LEN], producer_id=producer_id or uuid.uuid4().hex, seq=1,
        ts_ms=ts_ms if ts_ms is not None else time.time_ns() // 1_000_000,
    )
    body = event.annotation
    for key, value in change.tags:
        body.tags.add(key=key, value=value)
    body.note = change.note
    body.archive = _ARCHIVE_ACTIONS[change.archive]
    body.user = user
    body.host = host
    validate(event)
    return event


def _transport(config: ProducerConfig, producer_id: str) -> Transport:
    spool = SpoolTransport(config.spool_dir, producer_id, config.encoding, roll_s=0.0)
    if config.kafka:
        return KafkaTransport(config.kafka, config.topic, config.encoding, spool,
                              stall_s=config.kafka_stall_s)
    return spool


def send_annotation(run_id: str, experiment: str, change: RunChange, config: ProducerConfig,
                    *, user: str | None = None, host: str | None = None,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> Sent:
    """Send ``change`` to run ``run_id`` of ``experiment`` as one Annotation event, made
    by ``user`` at ``host`` (default: this process' OS user and host name). Blocks until
    the event is durable: acknowledged by Kafka within ``timeout_s`` seconds, or else
    (no Kafka configured, or Kafka did not answer) fsynced into a published file in
    ``config.spool_dir``. InvalidArgumentError / ValidationError for a change the
    contract refuses (nothing is sent); UnavailableError when the event could be neither
    acknowledged nor spooled (the reason in the message). Not thread-safe per call, but
    calls share nothing."""
    event = annotation_event(run_id, experiment, change, user=user or current_user(),
                             host=host or current_host())
    payload = codec.encode(event, config.encoding)
    transport = _transport(config, event.producer_id)
    transport.send(f"{run_id}/0".encode(), payload, 0)
    transport.flush(timeout_s)
    durable = transport.close(timeout_s=max(2.0, timeout_s / 5))
    spool_dir = Path(config.spool_dir)
    if not durable:
        drops = [f"{reason} ({events} event)" for reason, events, _ in transport.account.drops()]
        raise UnavailableError(
            f"the change to run {run_id} could not be made durable: "
            + ("; ".join(drops) or f"neither Kafka ({config.kafka}) acknowledged it nor "
                                    f"could it be written to the spool {spool_dir}"))
    if isinstance(transport, KafkaTransport) and transport.sent_to_kafka:
        return Sent(destination=KAFKA, where=f"{config.kafka} topic {config.topic}",
                    event=event)
    return Sent(destination=SPOOL, where=str(spool_dir), event=event)
