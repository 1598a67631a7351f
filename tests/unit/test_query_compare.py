"""runstream.query.compare: what differs between runs and which was best (with its table)."""

from __future__ import annotations

from runstream.cli.runs import comparison_text
from runstream.query.compare import compare_fields, compare_metrics, default_goal
from runstream.query.models import (
    CodeVersion,
    Comparison,
    Environment,
    Gpu,
    Input,
    MetricSummary,
    Package,
    Param,
    RunInfo,
)


def test_compare_and_its_table() -> None:
    envs = [Environment(packages=(Package(name="torch", version="2.3"),),
                        gpus=(Gpu(name="A100", memory_bytes=40 << 30),)),
            Environment(packages=(Package(name="torch", version="2.4"),))]
    fields = compare_fields(
        [[Param(key="lr", value="0.1", type="FLOAT")],
         [Param(key="lr", value="0.2", type="FLOAT")]],
        [CodeVersion(git_commit="a"), CodeVersion(git_commit="a")],
        [[Input(name="d", uri="u", digest="x", role="")], []], envs, [[], []], [1, 1], [1, 1])
    differing = [(f.section, f.key) for f in fields if f.differs]
    assert differing == [("param", "lr"), ("input", "d"), ("package", "torch"),
                         ("hardware", "gpus")]
    summary = MetricSummary(key="val_loss", last=1.0, last_step=9, min=0.5, max=2.0)
    (m,) = compare_metrics(["val_loss"], [{"val_loss": summary}, {}], [{"val_loss": (4, 0)}, {}],
                           {})
    assert default_goal("val_loss") == "minimize" and default_goal("acc") == "maximize"
    assert (m.best_run, m.stats[0].best, m.stats[0].best_step, m.stats[1].present) == (
        0, 0.5, 4, False)
    info = [RunInfo(run_id=r, experiment="e", name="", status="FINISHED", start_ms=0, end_ms=0,
                    world_size=1) for r in ("a1", "b2")]
    text = comparison_text(Comparison(runs=tuple(info), fields=tuple(fields), metrics=(m,)))
    assert "≠  param" in text and "identical fields hidden" in text and "*1 (best 0.5 @4)" in text
