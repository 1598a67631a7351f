"""CRASHED detection: ranks whose signs of life stopped are marked CRASHED in ``run_status``.

A rank is alive while its last heartbeat, metric point or status event (``rank_activity``,
the producer's clock, epoch ms) is at most ``timeout_s`` old. The checker compares that
with each rank's latest status and writes a row into ``run_status`` only on a change:

* latest sent status RUNNING, nothing seen for longer than the timeout -> ``CRASHED``;
* marked ``CRASHED`` and signs of life are fresh again -> ``RUNNING``;
* marked ``CRASHED``/``RUNNING`` by us but the run itself sent a terminal status
  (FINISHED, FAILED, KILLED) later in the stream -> that status again, so a consumer
  that fell behind never leaves a finished run looking crashed.

Rows the checker writes carry producer_id ``runstream-consumer``, ``seq`` = detection time
in ms (kept strictly increasing per process) and ``ts_ms`` = detection time, so the
query side's ``argMax(status, (ts_ms, seq))`` sees them. Several consumer processes may
detect the same change; the duplicates only add a history row with the same status.

Checks are skipped while this process's ingestion is behind (a backlog would make every
run look silent). Clocks: producer timestamps are compared with this host's clock, so
skew between hosts eats into the timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runstream.consumer.periodic import run_every, start_daemon
from runstream.proto import status, tables

log = logging.getLogger(__name__)

RUNNING, CRASHED = status.RUNNING, status.CRASHED

# Ranks whose status may need a change, with their last sign of life. Only constants and
# the consumer's own producer id (a constant) are in this SQL.
LIVENESS_SQL = f"""
SELECT s.run_id, s.rank, s.latest_experiment, s.latest_status, s.sent_status, s.sent_error,
    a.last_ms
FROM (
    SELECT run_id, rank,
        argMax(experiment, (ts_ms, seq)) AS latest_experiment,
        argMax(status, (ts_ms, seq)) AS latest_status,
        argMaxIf(status, (ts_ms, seq), producer_id != '{tables.CONSUMER_PRODUCER_ID}')
            AS sent_status,
        argMaxIf(error, (ts_ms, seq), producer_id != '{tables.CONSUMER_PRODUCER_ID}')
            AS sent_error
    FROM {tables.RUN_STATUS.name}
    GROUP BY run_id, rank
    HAVING latest_status IN ('{RUNNING}', '{CRASHED}') OR latest_status != sent_status
) AS s
LEFT JOIN (
    SELECT run_id, rank, max(last_ms) AS last_ms FROM {tables.RANK_ACTIVITY.name}
    GROUP BY run_id, rank
) AS a ON s.run_id = a.run_id AND s.rank = a.rank
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class RankLiveness:
    """One rank as the checker sees it: its latest status (any writer), the latest status
    the run itself sent, and its last sign of life (epoch ms, 0 = none)."""

    run_id: str
    rank: int
    experiment: str
    status: str
    sent_status: str
    sent_error: str
    last_ms: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status row the checker writes."""

    run_id: str
    rank: int
    experiment: str
    status: str
    error: str


def status_changes(
    ranks: Sequence[RankLiveness], now_ms: int, timeout_ms: int
) -> list[StatusChange]:
    """The status rows to write at ``now_ms`` (epoch ms). Pure."""
    out = []
    for r in ranks:
        if r.sent_status in status.ENDED:
            if r.status != r.sent_status:
                out.append(StatusChange(r.run_id, r.rank, r.experiment, r.sent_status,
                                        r.sent_error))
            continue
        if r.sent_status != RUNNING:
            continue  # a status newer than this consumer: leave it alone
        wanted = CRASHED if now_ms - r.last_ms > timeout_ms else RUNNING
        if r.status != wanted:
            error = (f"no heartbeat or event for {timeout_ms / 1000:g} s"
                     if wanted == CRASHED else "")
            out.append(StatusChange(r.run_id, r.rank, r.experiment, wanted, error))
    return out


class LivenessChecker:
    """Runs :func:`status_changes` against ClickHouse every ``interval_s`` seconds.

    ``start()`` runs it on a daemon thread ``runstream-consumer-liveness``; ``check_once``
    does one pass on the calling thread (blocks on ClickHouse). ``ready`` says whether
    ingestion is caught up; passes are skipped while it returns False. The client must be
    usable from the checker's thread (with chdb, the shared one; over HTTP, its own).
    """

    def __init__(
        self,
        client: Any,
        database: str,
        *,
        timeout_s: float,
        interval_s: float | None = None,
        ready: Callable[[], bool] = lambda: True,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.client = client
        self.database = database
        self.timeout_s = timeout_s
        self.interval_s = interval_s if interval_s is not None else min(5.0, timeout_s / 4)
        self._ready = ready
        self._clock_ms = clock_ms
        self._last_seq = 0
        #: Status rows written so far.
        self.changes_written = 0

    def check_once(self) -> list[StatusChange]:
        """One pass: read, decide, write the changes; returns them. Blocks."""
        rows = self.client.query(LIVENESS_SQL).result_rows
        ranks = [
            RankLiveness(run_id, int(rank), experiment, status, sent_status, sent_error,
                         int(last_ms or 0))
            for run_id, rank, experiment, status, sent_status, sent_error, last_ms in rows
        ]
        now_ms = self._clock_ms()
        changes = status_changes(ranks, now_ms, int(self.timeout_s * 1000))
        if changes:
            self._write(changes, now_ms)
        return changes

    def _write(self, changes: list[StatusChange], now_ms: int) -> None:
        seq = max(now_ms, self._last_seq + 1)
        self._last_seq = seq
        table = tables.RUN_STATUS
        rows = [
            {"run_id": c.run_id, "rank": c.rank, "experiment": c.experiment,
             "status": c.status, "error": c.error, "producer_id": tables.CONSUMER_PRODUCER_ID,
             "seq": seq, "ts_ms": now_ms, "points_logged": 0, "drop_reasons": [],
             "drop_events": [], "drop_points": []}
            for c in changes
        ]
        self.client.insert(table.name, [[r[c] for c in table.column_names] for r in rows],
                           column_names=list(table.column_names), database=self.database)
        self.changes_written += len(changes)
        for c in changes:
            log.warning("run %s rank %d: %s%s", c.run_id, c.rank, c.status,
                        f" ({c.error})" if c.error else "")

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval_s`` until ``stop`` is set. Blocks. Errors are logged and
        the next pass tries again (ClickHouse briefly away must not end liveness)."""
        run_every(self.interval_s, stop, self.check_once, "liveness check", self._ready)

    def start(self, stop: threading.Event) -> threading.Thread:
        """``run(stop)`` on a daemon thread named ``runstream-consumer-liveness``."""
        return start_daemon(self.run, stop, "runstream-consumer-liveness")
