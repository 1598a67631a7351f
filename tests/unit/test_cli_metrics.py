"""runstream.cli.metrics: the history table, follow's lines, the plot, and their flags."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, cast

import pytest

from runstream.cli.main import build_parser, main
from runstream.cli.metrics import cmd_follow, cmd_plot, follow_lines, plot_histories
from runstream.query.models import MetricHistory, MetricSummary, PointsUpdate, Run, StatusUpdate
from tests.factories import T0, run_info


def test_plot_writes_a_png(tmp_path) -> None:
    steps = list(range(0, 1000, 10))
    h = MetricHistory(run_id="r1", key="loss", steps=steps, values=[1 / (1 + s) for s in steps],
                      ts_ms=[0] * len(steps), downsampled=True,
                      min_values=[0.5 / (1 + s) for s in steps],
                      max_values=[2 / (1 + s) for s in steps])
    out = tmp_path / "loss.png"
    plot_histories([h], str(out), "loss")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _PlotClient:
    """Run r1 has loss and acc; every other key has no points."""

    def metric_history(self, run_id: str, key: str, **kw: object) -> MetricHistory:
        if key != "loss":
            return MetricHistory(run_id=run_id, key=key, downsampled=True, aggregate="mean")
        return MetricHistory(run_id=run_id, key=key, steps=[0, 1, 2], values=[3.0, 2.0, 1.0],
                             ts_ms=[0, 0, 0], downsampled=True, aggregate="mean",
                             min_values=[3.0, 2.0, 1.0], max_values=[3.0, 2.0, 1.0],
                             total_points=300)

    def get_run(self, run_id: str) -> Run:
        return Run(info=run_info(run_id=run_id),
                   metrics=(MetricSummary(key="acc", last=1, last_step=2, min=0, max=1),
                            MetricSummary(key="loss", last=1, last_step=2, min=1, max=3)))


def test_plot_of_an_unknown_key_fails_naming_the_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "typo.png"
    client: Any = _PlotClient()
    assert cmd_plot(client, ["r1"], "lossy", str(out), 100) == 1
    err = capsys.readouterr().err
    assert "runstream: error: run 'r1' has no metric 'lossy'; its metrics: acc, loss" in err
    assert not out.exists()


def test_plot_json_says_what_was_plotted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "loss.png"
    assert cmd_plot(cast(Any, _PlotClient()), ["r1", "r2"], "loss", str(out), 100, True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"path": str(out), "key": "loss", "series": [
        {"run_id": r, "points": 3, "total_points": 300, "downsampled": True}
        for r in ("r1", "r2")]}
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_follow_json_is_one_object_per_line() -> None:
    points = PointsUpdate(keys=("loss", "acc"), key_index=[0, 1], ranks=[0, 1], steps=[5, 5],
                          values=[0.5, math.inf], ts_ms=[T0, T0 + 1])
    lines = follow_lines(points, as_json=True)
    assert [json.loads(line) for line in lines] == [
        {"type": "point", "step": 5, "rank": 0, "key": "loss", "value": 0.5, "ts_ms": T0},
        {"type": "point", "step": 5, "rank": 1, "key": "acc", "value": "inf", "ts_ms": T0 + 1},
    ]
    status = StatusUpdate(rank=1, status="FAILED", error="Traceback\nOOM", ts_ms=T0)
    assert json.loads(follow_lines(status, as_json=True)[0]) == {
        "type": "status", "rank": 1, "status": "FAILED", "error": "Traceback\nOOM", "ts_ms": T0}
    live = PointsUpdate(keys=(), key_index=[], ranks=[], steps=[], values=[], ts_ms=[], live=True)
    assert follow_lines(live, as_json=True) == ['{"type": "live"}']
    assert follow_lines(status, as_json=False) == ["[status] rank 1: FAILED (OOM)"]

    class Client:
        def follow(self, *a: object, **kw: object) -> Any:
            return iter([points, status])

    out = io.StringIO()
    assert cmd_follow(cast(Any, Client()), "r1", [], 0, out, as_json=True) == 0
    assert [json.loads(line)["type"] for line in out.getvalue().splitlines()] == [
        "point", "point", "status"]


def test_bad_aggregate_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["history", "r1", "loss", "--aggregate", "avg"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --aggregate: 'avg' is not an aggregate; use mean (average across ranks)," \
        " min or max" in err


def test_every_read_command_has_json() -> None:
    parser = build_parser()
    for argv in (["runs"], ["show", "r"], ["history", "r", "k"], ["compare", "r"],
                 ["reproduce", "r"], ["follow", "r"], ["plot", "r", "--key", "k"],
                 ["experiments"], ["status"]):
        assert parser.parse_args([*argv, "--json"]).json is True, argv
