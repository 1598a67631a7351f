"""Replay local spool files into Kafka (``runstream sync``).

Each ready file is claimed (renamed, so concurrent syncs or a live ``runstream serve``
never take it twice), every frame is sent with the key ``<run_id>/<rank>`` read from the
decoded event and the frame's content-type header, the producer is flushed, and only
then is the file deleted. On a Kafka failure the file is renamed back to ``.spool`` and
UnavailableError is raised: nothing is lost, a later sync resumes (at-least-once).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstream.proto import codec, spool
from runstream.proto.errors import DecodeError, UnavailableError
from runstream.transport import kafka_producer_options

#: Seconds to wait for Kafka to acknowledge one file's frames.
FILE_TIMEOUT_S = 60.0


@dataclass
class SyncStats:
    """What one sync did. ``corrupt`` lists files whose tail was torn: their good frames
    were sent and the file kept as ``*.corrupt`` with the reason; ``undecodable`` counts
    frames that did not decode and were sent without a key (the consumer dead-letters
    them)."""

    files: int = 0
    events: int = 0
    bytes: int = 0
    undecodable: int = 0
    recovered: int = 0
    corrupt: list[str] = field(default_factory=list)


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
    file in hand goes back to ``.spool``). Safe to run while producers write the spool.
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
            claimed = spool.claim(path)
            if claimed is None:
                continue  # another reader took it
            try:
                _send_file(producer, topic, claimed, stats)
            except (KafkaError, OSError) as e:
                os.replace(claimed, path)
                raise UnavailableError(
                    f"sync of {path.name} to Kafka at {bootstrap} failed ({e}); the file is "
                    f"back in the spool, {stats.files} file(s) were sent before it"
                ) from e
            if progress is not None:
                progress(done, len(files))
    finally:
        producer.close(timeout=5)
    return stats


def _send_file(producer: Any, topic: str, claimed: Path, stats: SyncStats) -> None:
    futures = []
    size = 0
    corrupt: spool.SpoolCorruptError | None = None
    try:
        for frame in spool.read_frames(claimed):
            content_type = codec.CONTENT_TYPES[frame.encoding]
            key = _key(frame.payload, content_type)
            if key is None:
                stats.undecodable += 1
            headers = [(codec.CONTENT_TYPE_HEADER, content_type.encode())]
            futures.append(producer.send(topic, value=frame.payload, key=key, headers=headers))
            size += len(frame.payload)
    except spool.SpoolCorruptError as e:
        corrupt = e
    producer.flush(timeout=FILE_TIMEOUT_S)
    for future in futures:
        future.get(timeout=FILE_TIMEOUT_S)  # raises the delivery error, if any
    stats.files += 1
    stats.events += len(futures)
    stats.bytes += size
    if corrupt is None:
        claimed.unlink()
    else:
        kept = claimed.with_name(claimed.name.split(".")[0] + ".corrupt")
        os.replace(claimed, kept)
        stats.corrupt.append(f"{kept}: {corrupt}")
