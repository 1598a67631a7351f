"""The metric points of one batch, kept as numpy arrays and handed over as one Arrow table.

Pure: no I/O. Points never become Python objects: each event's packed protobuf arrays
are copied into numpy arrays (upb exposes ``__array__``, so the copy runs at memory
speed), and the strings every point repeats (run id, key, producer id, experiment) are
stored once per batch in a dictionary and referenced by int32 codes. ``table()`` joins the chunks
into a ``pyarrow.Table`` whose string columns are dictionary-encoded; ClickHouse reads
that into its ``String`` and ``LowCardinality(String)`` columns without a string per
row ever being built in Python.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from runstream.proto import tables
from runstream.proto.v1 import events_pb2

_COLUMNS = tables.METRICS.column_names
# numpy dtypes of the numeric columns, matching tables.METRICS.
_DTYPES = {"rank": np.uint32, "step": np.int64, "value": np.float64, "ts_ms": np.int64,
           "seq": np.uint64, "idx": np.uint32}
# String columns: stored as codes into a per-batch dictionary.
_CODED = ("run_id", "key", "producer_id", "experiment")


class MetricPoints:
    """Rows of the ``metrics`` table for one batch. Not thread-safe (one pipeline thread
    fills it; after ``table()`` it is only read)."""

    __slots__ = ("_chunks", "_dictionaries", "points")

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {name: [] for name in _COLUMNS}
        self._dictionaries: dict[str, dict[str, int]] = {name: {} for name in _CODED}
        #: Points added.
        self.points = 0

    def __len__(self) -> int:
        return self.points

    def add(self, event: events_pb2.RunEvent) -> dict[str, int]:
        """Add the points of a validated metrics event (equal column lengths, key indices
        inside the key table: :func:`runstream.proto.validation.validate`); return its
        point count per key name."""
        m = event.metrics
        n = len(m.steps)
        key_index = np.asarray(m.key_index, dtype=np.uint32)
        keys = list(m.keys)
        per_index = np.bincount(key_index, minlength=len(keys))
        counts: dict[str, int] = {}
        for key, points in zip(keys, per_index.tolist(), strict=True):
            if points:
                counts[key] = counts.get(key, 0) + points
        key_codes = np.fromiter(
            (self._code("key", k) for k in keys), dtype=np.int32, count=len(keys)
        )
        chunks = self._chunks
        chunks["run_id"].append(np.full(n, self._code("run_id", event.run_id), np.int32))
        chunks["key"].append(key_codes[key_index])
        chunks["rank"].append(np.full(n, event.rank, np.uint32))
        chunks["step"].append(np.asarray(m.steps, dtype=np.int64))
        chunks["value"].append(np.asarray(m.values, dtype=np.float64))
        chunks["ts_ms"].append(np.asarray(m.ts_ms, dtype=np.int64))
        chunks["producer_id"].append(
            np.full(n, self._code("producer_id", event.producer_id), np.int32)
        )
        chunks["seq"].append(np.full(n, event.seq, np.uint64))
        chunks["idx"].append(np.arange(n, dtype=np.uint32))
        chunks["experiment"].append(
            np.full(n, self._code("experiment", event.experiment), np.int32)
        )
        self.points += n
        return counts

    def table(self) -> pa.Table:
        """All points as one Arrow table, columns in ``tables.METRICS`` order. Blocks
        only on memory copies (one concatenation per column)."""
        arrays: list[pa.Array] = []
        for name in _COLUMNS:
            chunks = self._chunks[name]
            if name in _CODED:
                codes = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
                dictionary = pa.array(list(self._dictionaries[name]), type=pa.string())
                arrays.append(pa.DictionaryArray.from_arrays(codes, dictionary))
            else:
                data = np.concatenate(chunks) if chunks else np.zeros(0, _DTYPES[name])
                arrays.append(pa.array(data))
        return pa.Table.from_arrays(arrays, names=list(_COLUMNS))

    def _code(self, column: str, text: str) -> int:
        dictionary = self._dictionaries[column]
        code = dictionary.get(text)
        if code is None:
            code = dictionary[text] = len(dictionary)
        return code
