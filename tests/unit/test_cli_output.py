"""runstream.cli.output: times, durations, tables and JSON as the CLI prints them."""

from __future__ import annotations

import json
import math

from runstream.cli import output
from runstream.query.models import MetricHistory
from tests.factories import T0, run_info


def test_times_and_durations() -> None:
    assert output.format_time_ms(T0) == "2023-11-14 22:13:20"
    assert output.format_time_ms(0) == "-"
    assert [output.format_duration_s(s) for s in (0, 59, 61, 3723, 90000, -1)] == [
        "0s", "59s", "1m01s", "1h02m", "1d01h", "-",
    ]
    assert output.run_duration(run_info(), 0) == "1h02m"
    assert output.run_duration(run_info(end_ms=0, status="RUNNING"), T0 + 5000) == "5s+"
    assert output.format_value(0.1234567) == "0.123457" and output.format_value(math.nan) == "nan"


def test_table_columns_align() -> None:
    text = output.format_table(["A", "NUM"], [("x", 1), ("longer", 12345)], right=(1,))
    assert text.splitlines() == ["A         NUM", "x           1", "longer  12345"]
    assert output.clip("a\nb" + "c" * 100, 10) == "a bcccccc…"


def test_json_keeps_non_finite_values_readable() -> None:
    history = MetricHistory(run_id="r", key="k", ranks=[0], steps=[1], values=[math.inf],
                            ts_ms=[T0])
    assert json.loads(output.to_json(history))["values"] == ["inf"]
    assert json.loads(output.to_json([run_info()]))[0]["world_size"] == 8
