"""Replay local spool files into Kafka (``runstream sync``).

Each ready file is claimed (renamed and locked, so concurrent syncs or a live
``runstream serve`` never take it twice), every valid frame is sent with the key
``<run_id>/<rank>`` read from the decoded event and the frame's content-type header, the
producer is flushed, and only then is the file deleted.

Failures are told apart:

- Kafka unreachable or not acknowledging (any other Kafka error, or a disk error): the
  file is renamed back to ``.spool`` and UnavailableError is raised; nothing is lost, a
  later sync resumes (at-least-once).
- A record the broker will never take (:data:`runstream.transport.PERMANENT_ERRORS`:
  too large, invalid): the file's other frames are delivered, the file is kept aside as
  ``<stem>.unsendable`` (listed in :attr:`SyncStats.unsendable` with the reason) and
  later files go on.
- Damaged bytes in the file: the valid frames around them are delivered and the file is
  kept aside as ``<stem>.corrupt`` (listed in :attr:`SyncStats.corrupt`).

A kept-aside file holds its whole original bytes; after the cause is fixed (a larger
``message.max.bytes``, say) renaming it back to ``.spool`` replays it, and frames already
delivered collapse in ClickHouse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstream.proto import codec, spool
from runstream.proto.errors import DecodeError, UnavailableError
from runstream.transport import is_permanent, kafka_producer_options

log = logging.getLogger(__name__)

#: Seconds to wait for Kafka to acknowledge one file's frames.
FILE_TIMEOUT_S = 60.0


@dataclass
class SyncStats:
    """What one sync did. ``files``/``events``/``bytes`` count what Kafka acknowledged;
    ``undecodable`` counts frames that did not decode and were sent without a key (the
    consumer dead-letters them). ``corrupt`` lists files with damaged bytes
    (``damaged_bytes`` in all) and ``unsendable`` files with records Kafka refused for good
    (``refused`` records in all): each was kept aside, its other frames sent."""

    files: int = 0
    events: int = 0
    bytes: int = 0
    undecodable: int = 0
    recovered: int = 0
    corrupt: list[str] = field(default_factory=list)
    damaged_bytes: int = 0
    unsendable: list[str] = field(default_factory=list)
    refused: int = 0

    @property
    def kept_aside(self) -> int:
        """Files that could not be delivered whole and were kept aside."""
        return len(self.corrupt) + len(self.unsendable)


def _key(payload: bytes, content_type: str) -> bytes | None:
    try:
        event = codec.decode(payload, content_type)
    except DecodeError:
        return None
    return f"{event.run_id}/{event.rank}".encode()


def sync(
    spool_dir: Path,
    bootstrap: str,
    topic: str,
    progress: Callable[[int, int], None] | None = None,
    *,
    producer_factory: Callable[..., Any] | None = None,
) -> SyncStats:
    """Send every ready spool file in ``spool_dir`` to ``topic`` and delete it.

    ``progress(files_done, files_total)`` is called after each file. Blocks until done.
    Raises UnavailableError when Kafka cannot be reached or does not acknowledge (the
    file in hand goes back to ``.spool``). A file with a record Kafka refuses for good,
    or with damaged bytes, is kept aside and reported in the stats; later files go on.
    Safe to run while producers write the spool.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    stats = SyncStats()
    directory = Path(spool_dir)
    stats.recovered = len(spool.recover(directory))
    files = spool.ready_files(directory)
    if not files:
        return stats
    factory = producer_factory or KafkaProducer
    try:
        producer = factory(**kafka_producer_options(bootstrap))
    except KafkaError as e:
        raise UnavailableError(f"cannot reach Kafka at {bootstrap}: {e}") from e
    try:
        for done, path in enumerate(files, start=1):
            claim = spool.claim(path)
            if claim is None:
                continue  # another reader took it
            try:
                _send_file(producer, topic, claim, stats)
            except (KafkaError, OSError) as e:
                if not claim.closed:
                    claim.give_back()
                raise UnavailableError(
                    f"sync of {path.name} to Kafka at {bootstrap} failed ({e}); the file is "
                    f"back in the spool, {stats.files} file(s) were sent before it"
                ) from e
            if progress is not None:
                progress(done, len(files))
    finally:
        producer.close(timeout=5)
    return stats


def _send_file(producer: Any, topic: str, claim: spool.Claim, stats: SyncStats) -> None:
    """Send one claimed file's frames and settle the file: deleted, or kept aside. Raises
    a KafkaError other than a permanent one (the caller gives the file back)."""
    data = claim.read()
    sent: list[tuple[spool.Frame, Any]] = []
    damage: list[spool.Damage] = []
    refused: list[str] = []  # "byte <offset>: <error>" per record Kafka will never take
    undecodable = 0
    for item in spool.scan(data):
        if isinstance(item, spool.Damage):
            damage.append(item)
            continue
        content_type = codec.CONTENT_TYPES[item.encoding]
        key = _key(item.payload, content_type)
        headers = [(codec.CONTENT_TYPE_HEADER, content_type.encode())]
        try:
            future = producer.send(topic, value=item.payload, key=key, headers=headers)
        except Exception as e:
            if not is_permanent(e):
                raise
            refused.append(f"byte {item.offset}: {type(e).__name__}: {e}")
            continue
        undecodable += key is None
        sent.append((item, future))
    producer.flush(timeout=FILE_TIMEOUT_S)
    delivered = 0
    size = 0
    for frame, future in sent:
        try:
            future.get(timeout=FILE_TIMEOUT_S)  # raises the delivery error, if any
        except Exception as e:
            if not is_permanent(e):
                raise
            refused.append(f"byte {frame.offset}: {type(e).__name__}: {e}")
            continue
        delivered += 1
        size += len(frame.payload)
    stats.files += 1
    stats.events += delivered
    stats.bytes += size
    stats.undecodable += undecodable
    if refused:
        kept = claim.set_aside("unsendable")
        stats.refused += len(refused)
        stats.unsendable.append(
            f"{kept}: {len(refused)} record(s) refused by Kafka ({refused[0]}), "
            f"{delivered} sent")
        log.error("runstream sync: kept %s aside: Kafka refused %d record(s) for good: %s",
                  kept, len(refused), "; ".join(refused))
    if damage:
        damaged = sum(d.end - d.offset for d in damage)
        stats.damaged_bytes += damaged
        ranges = ", ".join(f"{d.offset}..{d.end} ({d.reason})" for d in damage)
        if not claim.closed:
            kept = claim.set_aside("corrupt")
        stats.corrupt.append(f"{kept}: {damaged} damaged byte(s) at {ranges}")
        log.error("runstream sync: kept %s aside: damaged bytes %s; its %d valid frame(s) "
                  "were sent", kept, ranges, delivered)
    if not claim.closed:
        claim.done()
