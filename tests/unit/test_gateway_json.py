"""The web UI's JSON (runstream.query.gateway_json): models by field name, non-finite
floats as strings wherever they are, and columnar arrays fast."""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from runstream.query import gateway_json
from runstream.query.models import (
    ComparedField,
    ComparedMetric,
    Comparison,
    MetricHistory,
    MetricStats,
    MetricSummary,
    Run,
    RunInfo,
)

NAN, INF = float("nan"), float("inf")


def _info(**kw: object) -> RunInfo:
    base: dict[str, object] = {"run_id": "r1", "experiment": "exp", "name": "NaN Infinity",
                               "status": "FINISHED", "start_ms": 1, "end_ms": 2, "world_size": 1}
    base.update(kw)
    return RunInfo(**base)  # type: ignore[arg-type]


def test_models_by_field_name_with_nested_dataclasses_and_tuples_as_arrays() -> None:
    run = Run(info=_info(), metrics=(MetricSummary(key="loss", last=0.5, last_step=3, min=0.1,
                                                   max=2.0),))
    out = json.loads(gateway_json.dumps(run))
    assert out["info"]["run_id"] == "r1" and out["info"]["world_size"] == 1
    assert out["info"]["archived"] is False
    assert out["metrics"] == [{"key": "loss", "last": 0.5, "last_step": 3, "min": 0.1,
                               "max": 2.0}]
    assert out["params"] == [] and out["code"]["git_commit"] == ""


def test_non_finite_floats_become_strings_and_text_that_looks_like_them_stays_text() -> None:
    h = MetricHistory(run_id="NaN", key="Infinity", ranks=[0, 0, 0, 0], steps=[1, 2, 3, 4],
                      values=[1.5, NAN, INF, -INF], ts_ms=[10, 20, 30, 40])
    raw = gateway_json.dumps({"series": [h], "NaN": -INF, "-Infinity": ["NaN", NAN]})
    out = json.loads(raw)
    assert out["series"][0]["values"] == [1.5, "NaN", "Infinity", "-Infinity"]
    assert out["series"][0]["run_id"] == "NaN" and out["series"][0]["key"] == "Infinity"
    assert out["NaN"] == "-Infinity" and out["-Infinity"] == ["NaN", "NaN"]
    # No bare token: a parser that refuses NaN/Infinity reads it.
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"bare {c} in {raw!r}"))


def test_scalars_and_nested_lists_and_mappings_are_made_finite() -> None:
    stats = MetricStats(present=True, last=NAN, best=-INF)
    c = Comparison(runs=(_info(),), fields=(ComparedField(section="params", key="lr",
                                                          values=("0.1", ""), differs=True),),
                   metrics=(ComparedMetric(key="loss", goal="minimize", stats=(stats,),
                                           best_run=-1, differs=False),))
    out = json.loads(gateway_json.dumps(c))
    assert out["metrics"][0]["stats"][0]["last"] == "NaN"
    assert out["metrics"][0]["stats"][0]["best"] == "-Infinity"
    assert out["fields"][0]["values"] == ["0.1", ""]
    lag = json.loads(gateway_json.dumps({"lag_ms": [[1.0, NAN], [2.5, 3.0]],
                                         "columns": {"metrics.loss": INF, "params.lr": "0.1"}}))
    assert lag == {"lag_ms": [[1.0, "NaN"], [2.5, 3.0]],
                   "columns": {"metrics.loss": "Infinity", "params.lr": "0.1"}}


def test_finite_values_whose_sum_overflows_stay_numbers() -> None:
    assert json.loads(gateway_json.dumps([1e308, 1e308, -1.0])) == [1e308, 1e308, -1.0]
    assert json.loads(gateway_json.dumps([True, 2, 2**62])) == [True, 2, 2**62]


def test_the_stdlib_fallback_writes_the_same_json(monkeypatch: pytest.MonkeyPatch) -> None:
    h = MetricHistory(run_id="r", key="k", ranks=[0, 1], steps=[1, 2], values=[NAN, 0.25],
                      ts_ms=[3, 4])
    fast = gateway_json.dumps({"series": [h], "text": "é \u2603"})
    monkeypatch.setattr(gateway_json, "orjson", None)
    assert json.loads(gateway_json.dumps({"series": [h], "text": "é \u2603"})) == json.loads(fast)


def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError):
        gateway_json.dumps(object())


def test_a_downsampled_10k_point_series_serialises_in_a_few_ms() -> None:
    n = 10_000
    rng = random.Random(7)
    values = [rng.uniform(-5, 5) for _ in range(n)]
    h = MetricHistory(run_id="r", key="loss", ranks=[0] * n, steps=list(range(n)),
                      values=values, ts_ms=[1_760_000_000_000 + i for i in range(n)],
                      downsampled=True, min_values=[v - 1 for v in values],
                      max_values=[v + 1 for v in values], bucket_counts=[3] * n,
                      total_points=3 * n)
    with_nan = MetricHistory(run_id="r", key="k", steps=list(range(n)),
                             values=[NAN if i % 100 == 0 else v for i, v in enumerate(values)])
    best = best_nan = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        raw = gateway_json.dumps({"series": [h]})
        t1 = time.perf_counter()
        gateway_json.dumps({"series": [with_nan]})
        best, best_nan = min(best, t1 - t0), min(best_nan, time.perf_counter() - t1)
    assert json.loads(raw)["series"][0]["values"][:3] == values[:3]
    # About 1 ms (orjson) on an idle core; generous for a loaded CI machine.
    assert best < 0.05, f"{best * 1e3:.1f} ms"
    assert best_nan < 0.05, f"{best_nan * 1e3:.1f} ms"
