"""Decoded run events -> column-oriented rows for the tables of runstream.proto.tables.

Pure: no I/O. Each event is validated here, once, against events.proto's contract
(:func:`runstream.proto.validation.validate`) before any of its rows is added. One
:class:`RowBatch` collects the rows of many events, one Python list per column, in the
column order of each :class:`~runstream.proto.tables.Table`, ready for a
column-oriented ClickHouse insert. Metric points never become Python objects of
their own: they go to numpy arrays and leave as one Arrow table
(:class:`~runstream.consumer.points.MetricPoints`).

Mapping (one event -> rows):

* ``run_started``  -> one ``runs`` row, one ``run_starts`` row (every start is kept: the
  attempts) and a ``RUNNING`` row in ``run_status``;
* ``run_finished`` -> one ``run_status`` row (the RunStatus name, e.g. ``"FINISHED"``),
  carrying the producer's account: ``points_logged`` and the drops by reason;
* ``heartbeat``    -> one ``heartbeats`` row;
* ``params`` / ``tags`` -> one row per param / tag; ``artifact`` / ``input`` -> one row;
* ``annotation``   -> one ``annotations`` row, and one ``tags`` row per tag it sets;
* ``metrics``      -> one ``metrics`` row per point, identified by
  (producer_id, seq, idx) where idx is the point's index in the event, and one
  ``metric_counts`` row per key in the event (its point count, keyed by the event's
  identity, so replays collapse and per-key counts stay exact).

Every row of a table with an ``experiment`` column gets the event's experiment (the
envelope's), which the tables' by_experiment projections sort on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from runstream.consumer.points import MetricPoints
from runstream.proto import tables, validation
from runstream.proto.errors import ValidationError
from runstream.proto.v1 import events_pb2

_STATUS_NAMES = {v.number: v.name for v in events_pb2.RunStatus.DESCRIPTOR.values}
_PARAM_TYPE_NAMES = {v.number: v.name for v in events_pb2.ParamType.DESCRIPTOR.values}
_ARCHIVE_NAMES = {events_pb2.ARCHIVE: "ARCHIVE", events_pb2.RESTORE: "RESTORE"}


class _Columns:
    """The column lists of one table, in the table's column order."""

    __slots__ = ("by_name", "lists", "table")

    def __init__(self, table: tables.Table) -> None:
        self.table = table
        self.lists: list[list[Any]] = [[] for _ in table.columns]
        self.by_name: dict[str, list[Any]] = dict(zip(table.column_names, self.lists, strict=True))

    def append(self, row: dict[str, Any]) -> None:
        # A missing column is a programming error; KeyError says which.
        for name, column in self.by_name.items():
            column.append(row[name])

    def __len__(self) -> int:
        return len(self.lists[0])


class RowBatch:
    """Rows for every table, accumulated from events.

    Not thread-safe: one pipeline thread owns a batch. ``add`` either adds all of an
    event's rows or, for an event that breaks the contract, raises ValidationError before
    adding any.
    """

    def __init__(self) -> None:
        # Every table but metrics: Python lists; metric points: numpy arrays (points.py).
        self._tables: dict[str, _Columns] = {
            t.name: _Columns(t) for t in tables.TABLES if t is not tables.METRICS
        }
        self._points = MetricPoints()
        self._counts = self._tables[tables.METRIC_COUNTS.name]
        #: Rows in all tables together.
        self.rows = 0
        #: Events added.
        self.events = 0
        #: Metric points added (rows of the metrics table).
        self.points = 0

    def __len__(self) -> int:
        return self.rows

    def add(self, event: events_pb2.RunEvent) -> int:
        """Validate one event and add its rows; return how many rows it produced.
        ValidationError (naming the first broken rule) adds nothing."""
        validation.validate(event)
        body = event.WhichOneof("body")
        if body == "metrics":
            added = self._add_metrics(event)
        elif body == "run_started":
            added = self._add_run_started(event)
        elif body == "run_finished":
            f = event.run_finished
            self._status(event, _STATUS_NAMES[f.status], f.error, f)
            added = 1
        elif body == "heartbeat":
            self._tables[tables.HEARTBEATS.name].append(
                {"run_id": event.run_id, "rank": event.rank, "ts_ms": event.ts_ms}
            )
            added = 1
        elif body == "params":
            envelope = self._envelope(event)
            cols = self._tables[tables.PARAMS.name]
            for p in event.params.params:
                cols.append({**envelope, "key": p.key, "value": p.value,
                             "type": _PARAM_TYPE_NAMES[p.type]})
            added = len(event.params.params)
        elif body == "tags":
            envelope = self._envelope(event)
            cols = self._tables[tables.TAGS.name]
            for t in event.tags.tags:
                cols.append({**envelope, "key": t.key, "value": t.value})
            added = len(event.tags.tags)
        elif body == "artifact":
            a = event.artifact
            self._tables[tables.ARTIFACTS.name].append(
                {**self._envelope(event), "name": a.name, "uri": a.uri,
                 "size_bytes": a.size_bytes, "sha256": a.sha256}
            )
            added = 1
        elif body == "annotation":
            added = self._add_annotation(event)
        elif body == "input":
            i = event.input
            self._tables[tables.INPUTS.name].append(
                {**self._envelope(event), "name": i.name, "uri": i.uri, "digest": i.digest,
                 "role": i.role}
            )
            added = 1
        else:  # a body validate() knows but this mapping does not: a programming error
            raise ValidationError(f"event body {body!r} has no table")
        self.events += 1
        self.rows += added
        return added

    def nonempty(self) -> Iterator[tuple[tables.Table, list[list[Any]] | pa.Table]]:
        """(table, data) for every table with rows, in tables.TABLES order: column lists,
        or for ``metrics`` one Arrow table (see :mod:`runstream.consumer.points`)."""
        for table in tables.TABLES:
            if table is tables.METRICS:
                if len(self._points):
                    yield table, self._points.table()
            elif len(cols := self._tables[table.name]):
                yield table, cols.lists

    # --- per event type -----------------------------------------------------------------

    @staticmethod
    def _envelope(event: events_pb2.RunEvent) -> dict[str, Any]:
        return {"run_id": event.run_id, "rank": event.rank, "producer_id": event.producer_id,
                "seq": event.seq, "ts_ms": event.ts_ms, "experiment": event.experiment}

    def _status(self, event: events_pb2.RunEvent, status: str, error: str,
                finished: events_pb2.RunFinished | None = None) -> None:
        drops = list(finished.dropped) if finished is not None else []
        self._tables[tables.RUN_STATUS.name].append(
            {**self._envelope(event), "status": status,
             "error": error,
             "points_logged": finished.points_logged if finished is not None else 0,
             "drop_reasons": [d.reason for d in drops],
             "drop_events": [d.events for d in drops],
             "drop_points": [d.points for d in drops]}
        )

    def _add_run_started(self, event: events_pb2.RunEvent) -> int:
        s = event.run_started
        self._tables[tables.RUNS.name].append(
            {
                **self._envelope(event),
                "name": s.name, "world_size": event.world_size,
                "local_rank": event.local_rank, "node": event.node,
                "git_commit": s.code.git_commit, "git_branch": s.code.git_branch,
                "git_remote": s.code.git_remote, "git_dirty": s.code.git_dirty,
                "in_git_repo": s.code.in_git_repo, "python_version": s.env.python_version,
                "os": s.env.os, "command": s.env.command, "cpu_count": s.env.cpu_count,
                "git_diff_sha256": s.code.diff_sha256, "git_diff_uri": s.code.diff_uri,
                "cpu_model": s.env.cpu_model, "memory_bytes": s.env.memory_bytes,
                "packages": {p.name: p.version for p in s.env.packages},
                "gpus": [g.name for g in s.env.gpus],
                "gpu_memory_bytes": [g.memory_bytes for g in s.env.gpus],
                "gpu_driver": s.env.gpu_driver, "cuda_version": s.env.cuda_version,
                "cwd": s.code.cwd, "script": s.code.script, "argv": list(s.env.argv),
                "launcher": s.env.launcher, "nnodes": s.env.nnodes,
                "nproc_per_node": s.env.nproc_per_node,
                "runstream_editable": s.env.runstream_editable,
                "fork_run_id": s.fork_run_id, "fork_step": s.fork_step,
            }
        )
        self._tables[tables.RUN_STARTS.name].append(
            {**self._envelope(event), "world_size": event.world_size,
             "local_rank": event.local_rank, "node": event.node, "restart": s.restart,
             "resume": s.resume, "launcher": s.env.launcher}
        )
        self._status(event, _STATUS_NAMES[events_pb2.RUNNING], "")
        return 3

    def _add_annotation(self, event: events_pb2.RunEvent) -> int:
        a = event.annotation
        envelope = self._envelope(event)
        self._tables[tables.ANNOTATIONS.name].append(
            {**envelope,
             "tag_keys": [t.key for t in a.tags], "tag_values": [t.value for t in a.tags],
             "note": a.note, "archive": _ARCHIVE_NAMES.get(a.archive, ""), "user": a.user,
             "host": a.host}
        )
        cols = self._tables[tables.TAGS.name]
        for t in a.tags:
            cols.append({**envelope, "key": t.key, "value": t.value})
        return 1 + len(a.tags)

    def _add_metrics(self, event: events_pb2.RunEvent) -> int:
        per_key = self._points.add(event)
        envelope = self._envelope(event)
        for key, points in per_key.items():
            self._counts.append({**envelope, "key": key, "points": points})
        n = len(event.metrics.steps)
        self.points += n
        return n + len(per_key)
