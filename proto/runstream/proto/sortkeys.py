"""Sort keys packed into one ``UInt128``, as ClickHouse SQL fragments (pure constants).

The order-preserving bits of each part, high part first: ``argMin``/``argMax`` over them
are several times cheaper than over tuples. Shared by the query service's SQL
(``runstream.query.repository``, ``runstream.query.search_sql``) and the materialized views
of :mod:`runstream.proto.tables`, which must pick the same rows.
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
#: (step, value): min / max over it pick the first / last point of a block (the lowest /
#: highest value among points at that step).
STEP_VALUE_KEY = (f"bitOr(bitShiftLeft(toUInt128({ORDERED_STEP}), 64),"
                  f" toUInt128({ORDERED_VALUE}))")
#: (rank, ts_ms, producer_id, seq): argMin over it picks a param's value, the lowest rank's
#: first logged (params are immutable; ties on ts_ms broken the same way everywhere).
#: A tuple: params are few, and producer_id is a string.
PARAM_FIRST_KEY = "tuple(rank, ts_ms, producer_id, seq)"


# Decoding: the parts of a key above from the key (SQL of an expression over ``key``).
_LOW = "toUInt64(bitAnd({key}, toUInt128('18446744073709551615')))"
_HIGH = "toUInt64(bitShiftRight({key}, 64))"


def _step(ordered: str) -> str:
    return f"reinterpretAsInt64(bitXor({ordered}, 0x8000000000000000))"


def _value(ordered: str) -> str:
    return (f"if(bitTest({ordered}, 63), reinterpretAsFloat64(bitXor({ordered},"
            f" 0x8000000000000000)), reinterpretAsFloat64(bitNot({ordered})))")


def value_of_high(key: str) -> str:
    """The value in the high half of MIN_VALUE_KEY / MAX_VALUE_KEY (-0.0 comes back 0.0)."""
    return _value(_HIGH.format(key=key))


def step_of_low(key: str, *, negated: bool = False) -> str:
    """The step in the low half of MIN_VALUE_KEY, or of MAX_VALUE_KEY (``negated``)."""
    low = _LOW.format(key=key)
    return _step(f"bitNot({low})" if negated else low)


def step_of_high(key: str) -> str:
    """The step in the high half of STEP_VALUE_KEY."""
    return _step(_HIGH.format(key=key))


def value_of_low(key: str) -> str:
    """The value in the low half of STEP_VALUE_KEY (-0.0 comes back 0.0)."""
    return _value(_LOW.format(key=key))
