"""Sort keys packed into one ``UInt128``, as ClickHouse SQL fragments (pure constants).

The order-preserving bits of each part, high part first: ``argMin``/``argMax`` over them
are several times cheaper than over tuples. Shared by the query SQL
(:mod:`runstream.query.sql`) and the materialized views of :mod:`runstream.proto.tables`,
which must pick the same rows.
"""

from __future__ import annotations

#: An Int64 as a UInt64 of the same order.
ORDERED_TS = "bitXor(reinterpretAsUInt64(ts_ms), 0x8000000000000000)"
ORDERED_STEP = "bitXor(reinterpretAsUInt64(step), 0x8000000000000000)"
#: A non-NaN Float64 as a UInt64 of the same order; ``value + 0.`` folds -0.0 into 0.0,
#: as a tuple comparison does.
ORDERED_VALUE = (
    "if(value < 0, bitNot(reinterpretAsUInt64(value)),"
    " bitOr(reinterpretAsUInt64(value + 0.), 0x8000000000000000))"
)

#: (rank, -ts_ms): argMin over it picks a run's head row, the lowest rank's newest.
RANK_NEWEST_KEY = f"bitOr(bitShiftLeft(toUInt128(rank), 64), toUInt128(bitNot({ORDERED_TS})))"
#: (ts_ms, seq): argMax over it picks the latest status row of a rank.
TS_SEQ_KEY = f"bitOr(bitShiftLeft(toUInt128({ORDERED_TS}), 64), toUInt128(seq))"
#: (value, step) and (value, -step): argMin / argMax over them pick a bucket's extremes,
#: the lowest step among equal values.
MIN_VALUE_KEY = f"bitOr(bitShiftLeft(toUInt128({ORDERED_VALUE}), 64), toUInt128({ORDERED_STEP}))"
MAX_VALUE_KEY = (f"bitOr(bitShiftLeft(toUInt128({ORDERED_VALUE}), 64),"
                 f" toUInt128(bitNot({ORDERED_STEP})))")
#: (rank, ts_ms, producer_id, seq): argMin over it picks a param's value, the lowest rank's
#: first logged (params are immutable; ties on ts_ms broken the same way everywhere).
#: A tuple: params are few, and producer_id is a string.
PARAM_FIRST_KEY = "tuple(rank, ts_ms, producer_id, seq)"
