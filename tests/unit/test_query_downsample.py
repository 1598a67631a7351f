"""runstream.query.downsample: LTTB over bucket extremes keeps the ends and the spikes."""

from __future__ import annotations

from runstream.query.downsample import MIN_BLOCKS, Bucket, bucket_grid, bucket_width, select_points


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


def test_a_long_series_gets_a_grid_of_whole_blocks() -> None:
    # Short buckets keep bucket_width's grid; wide ones are whole blocks, never more
    # buckets than asked for, and never fewer than (1 - 1 / MIN_BLOCKS) of them.
    assert bucket_grid(5, 999_999, 1000, 1024) == (5, 1000)
    assert bucket_grid(5, 999_999, 1000) == (5, 1000)
    for lo, hi, points in ((0, 9_999_999, 1000), (1_500, 10_001_499, 1000),
                           (123_457, 99_999_999, 1000), (0, 4 * 1024 * 1000 - 1, 1000),
                           (3, 9_999_999, 333), (1023, 4 * 1024 * 500 + 1023, 500)):
        first, width = bucket_grid(lo, hi, points, 1024)
        assert first % 1024 == 0 and width % 1024 == 0 and first <= lo < first + 1024
        buckets = -(-(hi - first + 1) // width)
        assert (1 - 1 / MIN_BLOCKS) * points <= buckets <= points, (lo, hi, points)
    # Negative steps (never stored: validation) keep the plain grid.
    assert bucket_grid(-5, 9_999_999, 1000, 1024) == (-5, bucket_width(-5, 9_999_999, 1000))
