"""Downsampling a metric series to a few points that keep its shape (pure, thread-safe).

ClickHouse cuts the step range into equal buckets and returns, per bucket, its min and
max points, its centroid and its first and last points (one streaming GROUP BY, O(buckets)
memory). :func:`select_points` then runs Largest-Triangle-Three-Buckets with each
bucket's min and max points as the only candidates (the "MinMaxLTTB" variant): the first
bucket keeps its first point, the last bucket its last point, and every other bucket the
candidate forming the largest triangle with the previously selected point and the next
bucket's centroid. Each output point carries its bucket's min and max values, so a spike
is never hidden even when LTTB picks the other extreme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[int, float, int]  # (step, value, ts_ms)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A step bucket of one series: extremes, centroid and end points as (step, value, ts_ms)."""

    rank: int
    bucket: int
    count: int
    min_value: float
    max_value: float
    at_min: Point
    at_max: Point
    avg_step: float
    avg_value: float
    first: Point
    last: Point


def _area(a: tuple[float, float], b: Point, c: tuple[float, float]) -> float:
    area = abs((a[0] - c[0]) * (b[1] - a[1]) - (a[0] - b[0]) * (c[1] - a[1]))
    return area if area == area else 0.0  # NaN (inf - inf) counts as flat


def select_points(buckets: Sequence[Bucket]) -> list[Point]:
    """One point per bucket (buckets of one series, in step order), chosen by LTTB."""
    n = len(buckets)
    if n == 0:
        return []
    if n == 1:
        only = buckets[0]
        return [only.first]
    out: list[Point] = [buckets[0].first]
    for i in range(1, n - 1):
        b, nxt = buckets[i], buckets[i + 1]
        a = (float(out[-1][0]), out[-1][1])
        c = (nxt.avg_step, nxt.avg_value)
        lo, hi = b.at_min, b.at_max
        out.append(hi if _area(a, hi, c) > _area(a, lo, c) else lo)
    out.append(buckets[-1].last)
    return out


def bucket_width(lo_step: int, hi_step: int, max_points: int) -> int:
    """Steps per bucket so that [lo_step, hi_step] falls into at most ``max_points`` buckets."""
    span = hi_step - lo_step + 1
    return max(1, -(-span // max_points))


#: A grid of whole blocks is used once its buckets would be at least this many blocks
#: wide: aligning them then costs at most 1 / MIN_BLOCKS of the points asked for.
MIN_BLOCKS = 4


def bucket_grid(lo_step: int, hi_step: int, max_points: int, block: int = 0
                ) -> tuple[int, int]:
    """(first step, width) of the buckets that downsample [lo_step, hi_step] to at most
    ``max_points``: from ``lo_step``, :func:`bucket_width` wide; or, with ``block`` (steps
    per pre-aggregated block) and buckets at least MIN_BLOCKS blocks wide, a grid of whole
    blocks (first step down to a block's start, width up to a multiple of ``block``), which
    storage answers from the blocks instead of the points."""
    width = bucket_width(lo_step, hi_step, max_points)
    if block <= 0 or width < MIN_BLOCKS * block or lo_step < 0:
        return lo_step, width
    lo = lo_step - lo_step % block
    return lo, -(-bucket_width(lo, hi_step, max_points) // block) * block
