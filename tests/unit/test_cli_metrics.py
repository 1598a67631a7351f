"""runstream.cli.metrics: the history table and the plot."""

from __future__ import annotations

from runstream.cli.metrics import plot_histories
from runstream.query.models import MetricHistory


def test_plot_writes_a_png(tmp_path) -> None:
    steps = list(range(0, 1000, 10))
    h = MetricHistory(run_id="r1", key="loss", steps=steps, values=[1 / (1 + s) for s in steps],
                      ts_ms=[0] * len(steps), downsampled=True,
                      min_values=[0.5 / (1 + s) for s in steps],
                      max_values=[2 / (1 + s) for s in steps])
    out = tmp_path / "loss.png"
    plot_histories([h], str(out), "loss")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
