"""runstream.query.downsample: LTTB over bucket extremes keeps the ends and the spikes."""

from __future__ import annotations

from runstream.query.downsample import Bucket, bucket_width, select_points


def bucket(i: int, lo: float, hi: float) -> Bucket:
    return Bucket(0, i, 10, lo, hi, (i * 10 + 1, lo, 0), (i * 10 + 2, hi, 0), i * 10 + 5.0,
                  (lo + hi) / 2, (i * 10, (lo + hi) / 2, 0), (i * 10 + 9, (lo + hi) / 2, 0))


def test_lttb_keeps_ends_and_picks_the_spike() -> None:
    buckets = [bucket(0, 0, 1), bucket(1, 0, 100), bucket(2, 0, 1), bucket(3, 0, 1)]
    points = select_points(buckets)
    assert points[0] == buckets[0].first and points[-1] == buckets[-1].last
    assert points[1][1] == 100
    assert select_points([]) == [] and len(select_points(buckets[:1])) == 1
    assert bucket_width(0, 999_999, 1000) == 1000 and bucket_width(5, 5, 10) == 1
