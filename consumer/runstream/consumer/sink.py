"""Writes a :class:`~runstream.consumer.rows.RowBatch` to ClickHouse, idempotently.

One column-oriented insert per non-empty table (metric points as Arrow, the rest as
column lists), each with its own ``insert_deduplication_token``
(``"<batch token>:<table>"``): retrying the same batch after a partial failure skips the
tables already written. Transient failures (connection lost, server busy or restarting)
are retried with exponential backoff until the caller's stop event is set; they are
never a reason to dead-letter. Anything else is raised at once.

The sink also owns the store's schema and identity: :meth:`ClickHouseSink.ensure_schema`
creates missing tables, adds columns that an older store lacks, migrates renamed tables
and reads the store id; :meth:`ClickHouseSink.check_store` tells the pipeline, before it
commits, whether the embedded store it writes to is still the one it opened (a chdb
directory removed under a running process takes inserts without an error, and rows
written there are gone).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
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


class StoreLostError(UnavailableError):
    """The store the sink writes to was removed or replaced under it: rows written since
    are not stored anywhere, so nothing may be committed any more."""


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
        #: The store's id (``store_identity``), read by :meth:`ensure_schema`; "" before.
        self.store_id = ""
        # A chdb store's directory and its (st_dev, st_ino) when the schema was ensured.
        self._store_dir: Path | None = None
        self._store_inode: tuple[int, int] | None = None
        self._lost: str = ""

    @property
    def concurrency(self) -> int:
        """How many ``write`` calls can run at once (one per client)."""
        return 1 + len(self._more_clients)

    def close(self) -> None:
        """Close the clients this sink owns (``more_clients``); idempotent."""
        for c in self._more_clients:
            c.close()
        self._more_clients = []

    def ensure_schema(self, dsn: str = "") -> None:
        """Bring the store to the schema of :mod:`runstream.proto.tables` and read its id
        (idempotent; blocks): create the database, tables and views if missing, add the
        columns an older store's tables lack (ALTER TABLE ... ADD COLUMN IF NOT EXISTS),
        bring older views to their current SELECT (MODIFY QUERY), add the by_experiment
        projections older tables lack, copy a legacy ``params`` table into
        ``param_values``, fill the tables fed by views that an older store lacked
        (run_experiments, metric_blocks), and read (or create) the store id. With ``dsn``
        ``chdb:///path``, also write the store id into ``<path>/runstream-store-id`` and
        note the directory, for :meth:`check_store`.

        On a cluster (``metrics`` is a Distributed table, created from
        ``deploy/clickhouse/print_ddl.py --cluster``) tables and columns are left as they
        are (upgrade them with that script's DDL); only the store id is read."""
        engine = self.client.query(
            "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'metrics'",
            parameters={"db": self.database},
        ).result_rows
        if not engine or engine[0][0] != "Distributed":
            for statement in tables.tables_ddl(self.database):
                self.client.command(statement)
            self._upgrade()
        self.store_id = self._read_store_id()
        if dsn.startswith("chdb://"):
            self._mark_store(Path(dsn[len("chdb://"):]))

    def _upgrade(self) -> None:
        existing: dict[str, set[str]] = {}
        for table, column in self.client.query(
            "SELECT table, name FROM system.columns WHERE database = {db:String}",
            parameters={"db": self.database},
        ).result_rows:
            existing.setdefault(table, set()).add(column)
        with_projection = {str(t) for t, in self.client.query(
            "SELECT table FROM system.projections WHERE database = {db:String}"
            " AND name = {name:String}",
            parameters={"db": self.database, "name": tables.PROJECTION},
        ).result_rows}
        for statement in tables.add_columns_ddl(self.database, existing):
            log.info("upgrading the store: %s", statement)
            self.client.command(statement)
        # The views after the columns they read (missing ones are created, older ones get
        # their current SELECT), then the projections.
        for statement in tables.views_ddl(self.database):
            self.client.command(statement)
        for statement in (*tables.upgrade_views_ddl(self.database, existing),
                          *tables.add_projections_ddl(self.database, set(existing),
                                                      with_projection)):
            log.info("upgrading the store: %s", statement)
            self.client.command(statement)
        if tables.LEGACY_PARAMS in existing:
            log.info("copying %s.%s into %s.%s (params are immutable now; the old table is"
                     " kept as %s)", self.database, tables.LEGACY_PARAMS, self.database,
                     tables.PARAMS.name, tables.LEGACY_PARAMS_MIGRATED)
            for statement in tables.migration_ddl(self.database):
                self.client.command(statement)
        # Tables fed by views that the store lacked: their view feeds them from now on,
        # and what the source already holds is copied once (empty target, non-empty source).
        self._fill_once(tables.RUN_EXPERIMENTS, tables.RUNS, "1", tables.backfill_ddl)
        self._fill_once(tables.METRIC_BLOCKS, tables.METRICS, "NOT isNaN(value)",
                        tables.blocks_backfill_ddl)

    def _fill_once(self, target: tables.Table, source: tables.Table, rows: str,
                   ddl: Callable[[str], str]) -> None:
        """Run ``ddl(database)`` if ``target`` is empty and ``source`` has ``rows`` (a
        constant condition)."""
        db = self.database
        (empty, n), = self.client.query(
            f"SELECT (SELECT count() FROM `{db}`.`{target.name}`) = 0,"  # noqa: S608
            f" (SELECT count() FROM `{db}`.`{source.name}` WHERE {rows})").result_rows
        if empty and n:
            log.info("filling %s.%s from the %d rows of %s.%s", db, target.name, n, db,
                     source.name)
            self.client.command(ddl(db))

    def _read_store_id(self) -> str:
        table = tables.STORE_IDENTITY
        sql = (f"SELECT store_id FROM `{self.database}`.`{table.name}`"  # noqa: S608
               " ORDER BY created_ms, store_id LIMIT 1")
        rows = self.client.query(sql).result_rows
        if rows:
            return str(rows[0][0])
        # A command, like the rest of the schema work (inserts are the rows' path).
        self.client.command(
            f"INSERT INTO `{self.database}`.`{table.name}` (store_id, created_ms)"  # noqa: S608
            " VALUES ({store_id:String}, {created_ms:Int64})",
            parameters={"store_id": uuid.uuid4().hex, "created_ms": time.time_ns() // 1_000_000})
        return str(self.client.query(sql).result_rows[0][0])

    def _mark_store(self, directory: Path) -> None:
        marker = directory / tables.STORE_MARKER
        marker.write_text(self.store_id + "\n", encoding="utf-8")
        st = os.stat(directory)
        self._store_dir = directory
        self._store_inode = (st.st_dev, st.st_ino)

    def check_store(self) -> None:
        """Raise StoreLostError if the embedded store is no longer the one
        :meth:`ensure_schema` opened: its directory was removed, or replaced (another
        inode), or its ``runstream-store-id`` file is gone or names another store. Logs
        an ERROR naming the path the first time. A no-op for a ClickHouse server (a
        dropped database fails the inserts themselves). Cheap (one stat, one small read);
        thread-safe."""
        if self._store_dir is None:
            return
        if not self._lost:
            marker = self._store_dir / tables.STORE_MARKER
            try:
                st = os.stat(self._store_dir)
                found = marker.read_text(encoding="utf-8").strip()
            except OSError as e:
                problem = f"{e.strerror or e}"
            else:
                if (st.st_dev, st.st_ino) != self._store_inode:
                    problem = "the directory was replaced by another one"
                elif found != self.store_id:
                    problem = f"{marker} names store {found!r}, not {self.store_id!r}"
                else:
                    return
            with self._lock:
                if not self._lost:
                    self._lost = (
                        f"the ClickHouse store {self._store_dir} was removed or replaced while"
                        f" this process was writing to it ({problem}): rows written since are"
                        " not stored, so no more offsets are committed and ingestion stops;"
                        " what was not committed stays in Kafka, and a store recreated empty"
                        " reads every partition again from the beginning. Restart the"
                        " process to ingest into a new store."
                    )
                    log.error("%s", self._lost)
        raise StoreLostError(self._lost)

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
