"""What became of what a run logged: :class:`Delivery` (the public answer) and
:class:`DeliveryAccount` (the counters the sender thread and the transports keep).

Every metric point ``Run.log`` accepts is, at any moment, in exactly one of four states:
*pending* (buffered, being encoded, or handed to Kafka and not yet acknowledged),
*sent* (acknowledged by Kafka, or taken out of this producer's spool files by a reader
that stored or forwarded them), *spooled* (in a spool file on disk, waiting for this
producer to re-send it when Kafka is back, for ``runstream sync``, or for
``runstream serve``), or *dropped* (counted by reason; logged once per reason).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from runstream.proto.validation import MAX_DROP_REASONS, MAX_REASON_LEN

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """A snapshot of where one producer's data is (see :meth:`runstream.Run.delivery`).

    Points: ``points_logged`` metric points accepted by ``Run.log`` (system metrics
    included) = ``points_sent + points_spooled + points_pending + points_dropped``.

    * ``points_sent``: acknowledged by Kafka (directly, or re-sent from the spool by this
      producer), or taken out of this producer's spool files by ``runstream sync`` or
      ``runstream serve`` (which delete a file only once it is forwarded or stored);
    * ``points_spooled``: in spool files on disk that nobody has taken yet;
    * ``points_pending``: buffered, being encoded, or with Kafka awaiting acknowledgement;
    * ``points_dropped``: lost, with ``dropped`` mapping each reason to its points.

    Events (any body: params, tags, artifacts, metric batches, ...) are counted the same
    way in ``events_sent``, ``events_spooled``, ``events_dropped`` and
    ``dropped_events`` (reason -> events). Immutable.
    """

    points_logged: int = 0
    points_sent: int = 0
    points_spooled: int = 0
    points_pending: int = 0
    points_dropped: int = 0
    events_sent: int = 0
    events_spooled: int = 0
    events_dropped: int = 0
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    dropped_events: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def lossless(self) -> bool:
        """True when nothing was dropped and nothing is pending: every point and event
        is acknowledged by Kafka or safely in a spool file."""
        return self.points_pending == 0 and self.events_dropped == 0 and not self.dropped


class DeliveryAccount:
    """The counters behind :class:`Delivery`. Updated by the one sender thread (and the
    transports it owns); :meth:`snapshot` may be called from any thread. Each update
    takes a lock for a few additions: events are counted, not points one by one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent = [0, 0]  # events, points
        self._spooled = [0, 0]
        self._dropped: dict[str, list[int]] = {}  # reason -> [events, points]

    def sent(self, points: int, events: int = 1) -> None:
        """Kafka acknowledged these."""
        with self._lock:
            self._sent[0] += events
            self._sent[1] += points

    def spooled(self, points: int, events: int = 1) -> None:
        """These were written to a spool file."""
        with self._lock:
            self._spooled[0] += events
            self._spooled[1] += points

    def unspooled(self, points: int, events: int, *, dropped: str | None = None) -> None:
        """Spooled events left the spool: forwarded or stored by a reader (sent), or
        lost with the file (``dropped`` names the reason)."""
        with self._lock:
            self._spooled[0] -= events
            self._spooled[1] -= points
        if dropped is None:
            self.sent(points, events)
        else:
            self.drop(dropped, points, events)

    def drop(self, reason: str, points: int, events: int = 1) -> None:
        """Count a drop; the first drop of each reason is logged at ERROR."""
        reason = reason[:MAX_REASON_LEN] or "unknown"
        with self._lock:
            counts = self._dropped.get(reason)
            first = counts is None
            if counts is None:
                counts = self._dropped[reason] = [0, 0]
            counts[0] += events
            counts[1] += points
        if first:
            log.error("runstream: DROPPED %d event(s) with %d metric point(s): %s. Drops "
                      "are counted by reason (Run.delivery()); this reason is said once.",
                      events, points, reason)

    def drops(self) -> list[tuple[str, int, int]]:
        """(reason, events, points) per reason, at most MAX_DROP_REASONS entries (the
        rest summed into the last one), as RunFinished.dropped carries them."""
        with self._lock:
            items = [(r, c[0], c[1]) for r, c in self._dropped.items()]
        if len(items) > MAX_DROP_REASONS:
            rest = items[MAX_DROP_REASONS - 1:]
            other = (f"{len(rest)} other reasons", sum(e for _, e, _ in rest),
                     sum(p for *_, p in rest))
            items = [*items[:MAX_DROP_REASONS - 1], other]
        return items

    def snapshot(self, points_logged: int) -> Delivery:
        with self._lock:
            sent_e, sent_p = self._sent
            spooled_e, spooled_p = self._spooled
            dropped = {r: c[1] for r, c in self._dropped.items()}
            dropped_events = {r: c[0] for r, c in self._dropped.items()}
        points_dropped = sum(dropped.values())
        return Delivery(
            points_logged=points_logged, points_sent=sent_p, points_spooled=spooled_p,
            points_pending=max(points_logged - sent_p - spooled_p - points_dropped, 0),
            points_dropped=points_dropped, events_sent=sent_e, events_spooled=spooled_e,
            events_dropped=sum(dropped_events.values()),
            dropped=MappingProxyType(dropped), dropped_events=MappingProxyType(dropped_events),
        )
