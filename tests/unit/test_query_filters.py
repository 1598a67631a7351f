"""The filter grammar, the SQL compiler's hygiene, LTTB selection and the CLI texts (pure)."""

from __future__ import annotations

import pytest

from runstream.cli.metrics import plot_histories
from runstream.cli.runs import comparison_text, reproduce_text
from runstream.query.compare import compare_fields, compare_metrics, default_goal
from runstream.query.downsample import Bucket, bucket_width, select_points
from runstream.query.filters import Agg, FilterError, Kind, Op, parse_filter, parse_order_by
from runstream.query.models import (
    CodeVersion,
    Comparison,
    Environment,
    Gpu,
    Input,
    MetricHistory,
    MetricSummary,
    Package,
    Param,
    Run,
    RunInfo,
)
from runstream.query.search_sql import compile_search


def test_mlflow_examples_parse_to_typed_clauses() -> None:
    (lr, acc, model, status) = parse_filter(
        "params.lr = '0.01' and metrics.val_acc > 0.9 and tags.model LIKE 'bert%'"
        " AND attributes.status = 'FINISHED'")
    assert (lr.field.kind, lr.op, lr.values, lr.numeric) == (Kind.PARAM, Op.EQ, ("0.01",), False)
    assert (acc.field.kind, acc.op, acc.values, acc.numeric) == (Kind.METRIC, Op.GT, (0.9,), True)
    assert (model.op, model.values) == (Op.LIKE, ("bert%",))
    assert (status.field.name, status.values) == ("status", ("FINISHED",))
    (m,) = parse_filter("min(metrics.`val loss`) <= -1e-3")
    assert (m.field.agg, m.field.name, m.values) == (Agg.MIN, "val loss", (-0.001,))
    (p,) = parse_filter("params.batch NOT IN (32, 64)")
    assert (p.op, p.values, p.numeric) == (Op.NOT_IN, (32.0, 64.0), True)
    (q,) = parse_filter('params.optim.lr >= "0.1"')  # ordering on a numeric text: numeric
    assert (q.field.name, q.numeric, q.values) == ("optim.lr", True, (0.1,))
    assert parse_filter("  ") == ()
    (o,) = parse_order_by(["max(metrics.acc) desc"])
    assert o.descending and o.field.agg is Agg.MAX


@pytest.mark.parametrize(("text", "position"), [
    ("metrics.a > 'x'", 12), ("params.a = 'x' OR params.b = 'y'", 15), ("a = 1", 0),
    ("metrics.a = 1 AND", 17), ("tags.t = 1", 9), ("attributes.nope = 'x'", 11),
    ("min(params.a) > 1", 0), ("metrics.a IN (1, 2", 18), ("tags.a = 'unterminated", 9),
    ("metrics.a > 1e400", 12), ("datasets.size = 'x'", 9), ("metrics.a ~ 1", 10),
])
def test_errors_point_at_the_offending_token(text: str, position: int) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert info.value.position == position, str(info.value)


def test_limits() -> None:
    with pytest.raises(FilterError, match="over the limit"):
        parse_filter("metrics.a > 1 AND " * 400)
    with pytest.raises(FilterError, match="clauses"):
        parse_filter(" AND ".join(["metrics.a > 1"] * 33))
    with pytest.raises(FilterError, match="order_by"):
        parse_order_by(["metrics.a"] * 4)


def test_no_user_text_reaches_the_sql() -> None:
    evil = "x'); DROP TABLE runs; --"
    clauses = parse_filter(
        f"params.`{evil}` = '{evil.replace(chr(39), chr(39) * 2)}' AND tags.`{evil}` LIKE 'a'"
        f" AND metrics.`{evil}` > 1 AND datasets.name IN ('{evil.replace(chr(39), chr(39) * 2)}')")
    order = parse_order_by([f"metrics.`{evil}` DESC", f"params.`{evil}`"])
    compiled = compile_search(["exp'"], clauses, order, None, 10)
    assert evil not in compiled.sql and "DROP" not in compiled.sql and "exp'" not in compiled.sql
    assert evil in compiled.parameters.values()
    after = [0, 1.0, 0, 2.0, 0, evil, 5, "run"]
    compiled = compile_search([], clauses, order, after, 10)
    assert evil not in compiled.sql
    with pytest.raises(Exception, match="page_token"):
        compile_search([], clauses, order, [0, "notfloat", 0, 2.0, 0, evil, 5, "run"], 10)


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


def test_reproduce_text_lists_commit_diff_packages_and_command() -> None:
    run = Run(
        info=RunInfo(run_id="r1", experiment="e", name="n", status="FINISHED", start_ms=1,
                     end_ms=2, world_size=8),
        params=(Param(key="lr", value="0.1", type="FLOAT"),),
        inputs=(Input(name="train", uri="s3://b/train", digest="sha256:ab", role="train"),),
        code=CodeVersion(git_commit="abc123", git_remote="git@h:r.git", git_dirty=True,
                         in_git_repo=True, diff_sha256="ff", diff_uri="file:///a/diff.patch"),
        env=Environment(python_version="3.11.9", command="torchrun train.py --lr 0.1",
                        packages=(Package(name="torch", version="2.4.0"),), cuda_version="12.4",
                        gpus=(Gpu(name="H100", memory_bytes=80 << 30),)),
    )
    text = reproduce_text(run)
    for needle in ("git clone git@h:r.git", "git checkout abc123", "git apply /a/diff.patch",
                   "pip install torch==2.4.0", "digest sha256:ab", "lr=0.1",
                   "torchrun train.py --lr 0.1", "1x H100 (80.0 GiB)"):
        assert needle in text, needle


def test_plot_writes_a_png(tmp_path) -> None:
    steps = list(range(0, 1000, 10))
    h = MetricHistory(run_id="r1", key="loss", steps=steps, values=[1 / (1 + s) for s in steps],
                      ts_ms=[0] * len(steps), downsampled=True,
                      min_values=[0.5 / (1 + s) for s in steps],
                      max_values=[2 / (1 + s) for s in steps])
    out = tmp_path / "loss.png"
    plot_histories([h], str(out), "loss")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_metric_field_is_read_in_one_pass() -> None:
    clauses = parse_filter("metrics.a > 1 AND min(metrics.b) < 2 AND metrics.a != 3")
    order = parse_order_by(["metrics.c DESC", "max(metrics.a)"])
    compiled = compile_search([], clauses, order, None, 10)
    assert compiled.sql.count("metric_summaries") == 1
    assert compiled.parameters["metric_keys"] == ["a", "b", "c"]
    assert "metric_summaries" not in compile_search([], parse_filter("params.x = 1"), [], None,
                                                    10).sql
