"""Writes a :class:`~runstream.consumer.rows.RowBatch` to ClickHouse, idempotently.

One column-oriented insert per non-empty table (metric points as Arrow, the rest as
column lists), each with its own ``insert_deduplication_token``
(``"<batch token>:<table>"``): retrying the same batch after a partial failure skips the
tables already written. Transient failures (connection lost, server busy or restarting)
are retried with exponential backoff until the caller's stop event is set; they are
never a reason to dead-letter. Anything else is raised at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.exceptions import DatabaseError, Error, OperationalError

from runstream.consumer.rows import RowBatch
from runstream.proto import tables
from runstream.proto.errors import RunstreamError, UnavailableError

log = logging.getLogger(__name__)

# ClickHouse errors (by name) that mean "try again later", not "this insert is wrong".
TRANSIENT_ERRORS = frozenset({
    "UNEXPECTED_END_OF_FILE", "TIMEOUT_EXCEEDED", "READONLY", "TOO_MANY_SIMULTANEOUS_QUERIES",
    "NO_FREE_CONNECTION", "SOCKET_TIMEOUT", "NETWORK_ERROR", "ABORTED", "MEMORY_LIMIT_EXCEEDED",
    "TABLE_IS_READ_ONLY", "TOO_MANY_PARTS", "UNKNOWN_STATUS_OF_INSERT", "QUERY_WAS_CANCELLED",
    "SYSTEM_ERROR", "KEEPER_EXCEPTION", "POCO_EXCEPTION",
})


def is_transient(error: BaseException) -> bool:
    """True for errors a retry of the identical insert may cure."""
    if isinstance(error, OperationalError | ConnectionError | TimeoutError):
        return True
    if isinstance(error, Error) and error.name in TRANSIENT_ERRORS:
        return True
    return isinstance(error, DatabaseError) and "Connection refused" in str(error)


class ClickHouseSink:
    """Inserts row batches into the tables of :mod:`runstream.proto.tables`.

    ``write`` may run on several threads at once, up to one per client: ``client`` and
    each of ``more_clients`` (separate connections to the same ClickHouse) serve one
    write at a time. The sink closes ``more_clients`` in :meth:`close`; ``client`` is
    the caller's (it may be shared with other threads if that client allows it: the
    chdb client serialises calls on its handle).
    """

    def __init__(
        self,
        client: Any,
        database: str,
        *,
        more_clients: Sequence[Any] = (),
        initial_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        is_transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self.client = client
        self.database = database
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self._is_transient = is_transient
        self._more_clients = list(more_clients)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for c in (client, *self._more_clients):
            self._idle.put(c)
        self._lock = threading.Lock()
        #: Failed insert attempts that were retried.
        self.retries = 0

    @property
    def concurrency(self) -> int:
        """How many ``write`` calls can run at once (one per client)."""
        return 1 + len(self._more_clients)

    def close(self) -> None:
        """Close the clients this sink owns (``more_clients``); idempotent."""
        for c in self._more_clients:
            c.close()
        self._more_clients = []

    def ensure_schema(self) -> None:
        """Create the database, tables and views if missing (idempotent; blocks).

        On a cluster (``metrics`` is a Distributed table, created from
        ``deploy/clickhouse/print_ddl.py --cluster``) the schema is left as it is."""
        engine = self.client.query(
            "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'metrics'",
            parameters={"db": self.database},
        ).result_rows
        if engine and engine[0][0] == "Distributed":
            return
        for statement in tables.all_ddl(self.database):
            self.client.command(statement)

    def write(
        self, batch: RowBatch, dedup_token: str, stop: threading.Event | None = None
    ) -> None:
        """Insert every non-empty table of ``batch`` on one client; blocks until done (and
        first while every client is busy). Thread-safe.

        Retries transient failures with exponential backoff (``initial_backoff_s``
        doubling up to ``max_backoff_s``) until ``stop`` is set; always tries at least
        once. Raises UnavailableError when it gives up on a transient failure, and
        RunstreamError (chained to the driver's error) for any other failure.
        """
        client = self._idle.get()  # blocks while every client is busy
        try:
            for table, data in batch.nonempty():
                self._insert(client, table, data, f"{dedup_token}:{table.name}", stop)
        finally:
            self._idle.put(client)

    def _insert(
        self,
        client: Any,
        table: tables.Table,
        data: list[list[Any]] | pa.Table,
        token: str,
        stop: threading.Event | None,
    ) -> None:
        # Synchronous Distributed inserts (cluster): an error reaches us before the
        # commit, and each shard deduplicates by the token. optimize_on_insert=0: no
        # Replacing/Aggregating merge pass over each inserted block (~25% of a metrics
        # insert); duplicates collapse in background merges, and readers use FINAL or
        # argMax over the natural key anyway.
        settings = {"insert_deduplication_token": token, "insert_distributed_sync": 1,
                    "optimize_on_insert": 0}
        backoff = self.initial_backoff_s
        while True:
            try:
                if isinstance(data, pa.Table):
                    client.insert_arrow(
                        table.name, data, database=self.database, settings=settings
                    )
                else:
                    client.insert(
                        table.name,
                        data,
                        column_names=list(table.column_names),
                        column_type_names=list(table.insert_types),
                        column_oriented=True,
                        database=self.database,
                        settings=settings,
                    )
                return
            except Exception as e:  # the driver raises several families; sorted out below
                if not self._is_transient(e):
                    raise RunstreamError(
                        f"insert into {self.database}.{table.name} failed: {e}"
                    ) from e
                if stop is not None and stop.is_set():
                    raise UnavailableError(
                        f"ClickHouse unavailable, giving up on shutdown: {e}"
                    ) from e
                with self._lock:
                    self.retries += 1
                log.warning(
                    "insert into %s.%s failed (%s); retrying in %.1fs",
                    self.database, table.name, e, backoff,
                )
                if stop is not None:
                    if stop.wait(backoff):
                        raise UnavailableError(
                            f"ClickHouse unavailable, giving up on shutdown: {e}"
                        ) from e
                else:
                    threading.Event().wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
