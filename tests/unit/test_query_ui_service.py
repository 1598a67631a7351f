"""The pure parts of the web UI's query calls: step ranges, SearchRuns columns, the outlier
rank, the lag matrix, and the wire forms of columns and lag rows (no ClickHouse, no gRPC)."""

from __future__ import annotations

import math

import pytest

from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import query_pb2
from runstream.query import convert
from runstream.query.downsample import Bucket
from runstream.query.models import RankLag, RunInfo, RunPage
from runstream.query.service import (
    INT64_MAX,
    INT64_MIN,
    assemble_downsampled,
    default_lag_key,
    lag_matrix,
    outlier_rank,
    parse_columns,
    validate_step_range,
)


def test_step_ranges_are_inclusive_with_none_unbounded() -> None:
    assert validate_step_range(None, None) is None
    assert validate_step_range(5, None) == (5, INT64_MAX)
    assert validate_step_range(None, -3) == (INT64_MIN, -3)
    assert validate_step_range(7, 7) == (7, 7)
    with pytest.raises(InvalidArgumentError, match="start_step 8 is after end_step 7"):
        validate_step_range(8, 7)
    with pytest.raises(InvalidArgumentError, match="int64"):
        validate_step_range(1 << 63, None)
    with pytest.raises(InvalidArgumentError, match="int64"):
        validate_step_range(True, None)


def test_columns_are_grouped_by_kind_and_validated() -> None:
    assert parse_columns(["params.lr", "metrics.val/acc", "tags.model", "params.lr",
                          "params.a.b"]) == {
        "params": ["lr", "a.b"], "metrics": ["val/acc"], "tags": ["model"]}
    assert parse_columns([]) == {"params": [], "metrics": [], "tags": []}
    for bad in ("lr", "param.lr", "attributes.status", "params.", "metrics." + "x" * 251):
        with pytest.raises(InvalidArgumentError):
            parse_columns([bad])
    with pytest.raises(InvalidArgumentError, match="over the limit of 50"):
        parse_columns([f"tags.t{i}" for i in range(51)])


def test_the_outlier_is_the_departing_rank_most_often_at_an_extreme() -> None:
    extremes = {0: (100, 90), 1: (20, 30), 2: (400, 420), 3: (0, 0)}
    assert outlier_rank(extremes, [2]) == 2
    # Rank 1 departs; rank 0, more often an extreme, does not (it is low by a hair).
    assert outlier_rank(extremes, [1]) == 1
    assert outlier_rank(extremes, [1, 2]) == 2
    assert outlier_rank(extremes, [3]) == -1  # departs, yet never an extreme
    assert outlier_rank(extremes, []) == -1
    assert outlier_rank({}, [0]) == -1
    assert outlier_rank({0: (0, 0), 1: (0, 0)}, [0]) == -1
    assert outlier_rank({4: (5, 5), 2: (3, 7)}, [2, 4]) == 2  # ties: the lowest rank


def test_the_lag_matrix_is_rank_major_with_nan_holes() -> None:
    ranks, steps, rows = lag_matrix([(0, 0, -1.0), (0, 10, -2.0), (3, 10, 5.0), (1, 20, 0.5)])
    assert ranks == (0, 1, 3) and steps == [0, 10, 20]
    assert rows[0][:2] == [-1.0, -2.0] and math.isnan(rows[0][2])
    assert math.isnan(rows[1][0]) and math.isnan(rows[1][1]) and rows[1][2] == 0.5
    assert math.isnan(rows[2][0]) and rows[2][1:2] == [5.0] and math.isnan(rows[2][2])
    assert lag_matrix([]) == ((), [], [])


def test_the_lag_key_default_is_rank_healths() -> None:
    calls: list[int] = []

    def busiest() -> str:
        calls.append(1)
        return "loss"

    assert default_lag_key("telemetry/step_time_s", True, busiest) == "telemetry/step_time_s"
    assert calls == []
    assert default_lag_key("telemetry/step_time_s", False, busiest) == "loss"


def _bucket(rank: int, i: int, lo: float, hi: float) -> Bucket:
    return Bucket(rank, i, 2, lo, hi, (i * 2, lo, 100 + i), (i * 2 + 1, hi, 101 + i),
                  i * 2 + 0.5, (lo + hi) / 2, (i * 2, lo, 100 + i), (i * 2 + 1, hi, 101 + i))


def test_assembling_a_downsampled_history_per_rank_and_aggregated() -> None:
    buckets = [_bucket(1, i, float(i), float(i) + 10) for i in range(3)]
    buckets += [_bucket(0, i, 0.0, 1.0) for i in range(2)]
    h = assemble_downsampled("r", "loss", "", 10, buckets)
    assert h.ranks == [0, 0, 1, 1, 1] and h.total_points == 10 and h.downsampled
    assert h.steps[:2] == [0, 3] and h.bucket_counts == [2] * 5
    assert h.min_values[2:] == [0.0, 1.0, 2.0] and h.max_values[2:] == [10.0, 11.0, 12.0]
    agg = assemble_downsampled("r", "loss", "mean", 6, [_bucket(0, i, 0.0, 1.0) for i in range(3)])
    assert agg.ranks == [] and len(agg) == 3 and agg.aggregate == "mean"


def test_columns_and_lag_rows_travel_and_come_back() -> None:
    info = RunInfo(run_id="r", experiment="e", name="n", status="RUNNING", start_ms=1,
                   end_ms=0, world_size=1)
    page = RunPage(runs=(info, info), next_page_token="t", columns=(
        {"params.lr": "0.1", "metrics.loss": 0.25, "tags.team": "vision",
         "metrics.val.acc": 1.0}, {}))
    pb = convert.to_pb(page, query_pb2.SearchRunsResponse)
    assert dict(pb.columns[0].params) == {"lr": "0.1"}
    assert dict(pb.columns[0].metrics) == {"loss": 0.25, "val.acc": 1.0}
    assert dict(pb.columns[0].tags) == {"team": "vision"}
    assert convert.from_pb(pb, RunPage) == page
    assert convert.from_pb(convert.to_pb(RunPage(runs=(info,)), query_pb2.SearchRunsResponse),
                           RunPage).columns == ()

    lag = RankLag(run_id="r", key="k", ranks=(0, 2), steps=[0, 5],
                  lag_ms=[[1.5, math.nan], [-2.0, 3.0]])
    back = convert.from_pb(convert.to_pb(lag, query_pb2.GetRankLagResponse), RankLag)
    assert back.ranks == (0, 2) and back.steps == [0, 5] and back.lag_ms[1] == [-2.0, 3.0]
    assert back.lag_ms[0][0] == 1.5 and math.isnan(back.lag_ms[0][1])
    assert isinstance(back.lag_ms, list) and isinstance(back.lag_ms[0], list)
