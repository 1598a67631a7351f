"""runstream.query.filters: MLflow's grammar parsed to typed clauses, errors at their position."""

from __future__ import annotations

import pytest

from runstream.query.filters import Agg, FilterError, Kind, Op, parse_filter, parse_order_by


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


# Ported from MLflow's tests/utils/test_search_utils.py::test_filter (the cases that apply):
# (filter, [(kind, name, op, values)]).
@pytest.mark.parametrize(("text", "expected"), [
    ("metric.acc >= 0.94", [(Kind.METRIC, "acc", Op.GE, (0.94,))]),
    ("metric.acc>=100", [(Kind.METRIC, "acc", Op.GE, (100.0,))]),
    ("params.m!='tf'", [(Kind.PARAM, "m", Op.NE, ("tf",))]),
    ('params."m"!="tf"', [(Kind.PARAM, "m", Op.NE, ("tf",))]),
    ('metric."legit name" >= 0.243', [(Kind.METRIC, "legit name", Op.GE, (0.243,))]),
    ("metrics.XYZ = 3", [(Kind.METRIC, "XYZ", Op.EQ, (3.0,))]),
    ('params."cat dog" = "pets"', [(Kind.PARAM, "cat dog", Op.EQ, ("pets",))]),
    ('metrics."X-Y-Z" = 3', [(Kind.METRIC, "X-Y-Z", Op.EQ, (3.0,))]),
    ('metrics."X//Y#$$@&Z" = 3', [(Kind.METRIC, "X//Y#$$@&Z", Op.EQ, (3.0,))]),
    ("metrics.rmse < 1 and params.model_class = 'LR'",
     [(Kind.METRIC, "rmse", Op.LT, (1.0,)), (Kind.PARAM, "model_class", Op.EQ, ("LR",))]),
    ("`metric`.a >= 0.1", [(Kind.METRIC, "a", Op.GE, (0.1,))]),
    ("`params`.model >= 'LR'", [(Kind.PARAM, "model", Op.GE, ("LR",))]),
    ("`tags`.source_name = 'a notebook'", [(Kind.TAG, "source_name", Op.EQ, ("a notebook",))]),
    ('metrics."accuracy.2.0" > 5', [(Kind.METRIC, "accuracy.2.0", Op.GT, (5.0,))]),
    ("metrics.`spacey name` > 5", [(Kind.METRIC, "spacey name", Op.GT, (5.0,))]),
    ('params."p.a.r.a.m" != "a"', [(Kind.PARAM, "p.a.r.a.m", Op.NE, ("a",))]),
    ('tags."t.a.g" = "a"', [(Kind.TAG, "t.a.g", Op.EQ, ("a",))]),
    ("attribute.artifact_uri = '1/23/4'", [(Kind.ATTRIBUTE, "artifact_uri", Op.EQ, ("1/23/4",))]),
    ("attribute.start_time >= 1234", [(Kind.ATTRIBUTE, "start_ms", Op.GE, (1234.0,))]),
    ("run.status = 'RUNNING'", [(Kind.ATTRIBUTE, "status", Op.EQ, ("RUNNING",))]),
    ("dataset.name = 'my_dataset'", [(Kind.DATASET, "name", Op.EQ, ("my_dataset",))]),
    ("tags.version IS NULL", [(Kind.TAG, "version", Op.IS_NULL, ())]),
    ("tags.version IS NOT NULL", [(Kind.TAG, "version", Op.IS_NOT_NULL, ())]),
    ("params.lr IS NULL", [(Kind.PARAM, "lr", Op.IS_NULL, ())]),
    ("params.lr IS NOT NULL", [(Kind.PARAM, "lr", Op.IS_NOT_NULL, ())]),
    ("tags.a IS NULL AND params.b = 'val'",
     [(Kind.TAG, "a", Op.IS_NULL, ()), (Kind.PARAM, "b", Op.EQ, ("val",))]),
    # test_correct_quote_trimming
    ('params.m = "L\'Hosp"', [(Kind.PARAM, "m", Op.EQ, ("L'Hosp",))]),
    # MLflow's other spellings: every kind alias, attribute aliases, bare attribute names.
    ("parameter.a = 'x' AND parameters.b = 'y' AND param.c = 'z' AND tag.d = 'w'",
     [(Kind.PARAM, "a", Op.EQ, ("x",)), (Kind.PARAM, "b", Op.EQ, ("y",)),
      (Kind.PARAM, "c", Op.EQ, ("z",)), (Kind.TAG, "d", Op.EQ, ("w",))]),
    ("attr.run_id = 'x' AND attributes.user_id = 'u' AND `attribute`.end_time < 5",
     [(Kind.ATTRIBUTE, "run_id", Op.EQ, ("x",)), (Kind.ATTRIBUTE, "user_id", Op.EQ, ("u",)),
      (Kind.ATTRIBUTE, "end_ms", Op.LT, (5.0,))]),
    ("attributes.created > 1 AND attributes.`Run name` = 'n' AND datasets.context = 'train'",
     [(Kind.ATTRIBUTE, "start_ms", Op.GT, (1.0,)), (Kind.ATTRIBUTE, "name", Op.EQ, ("n",)),
      (Kind.DATASET, "role", Op.EQ, ("train",))]),
    ("status = 'FAILED' and start_time > 0 and run_name LIKE 'a%'",
     [(Kind.ATTRIBUTE, "status", Op.EQ, ("FAILED",)), (Kind.ATTRIBUTE, "start_ms", Op.GT, (0.0,)),
      (Kind.ATTRIBUTE, "name", Op.LIKE, ("a%",))]),
    ("attributes.run_id IN ('a', 'b')", [(Kind.ATTRIBUTE, "run_id", Op.IN, ("a", "b"))]),
])
def test_mlflow_filters_parse(text: str, expected: list[tuple[Kind, str, Op, tuple[object]]]
                              ) -> None:
    got = [(c.field.kind, c.field.name, c.op, c.values) for c in parse_filter(text)]
    assert got == expected


# Ported from MLflow's test_error_filter, test_error_comparison_clauses, test_bad_quotes,
# test_invalid_clauses, test_bad_comparators: every one is rejected, at a position.
@pytest.mark.parametrize(("text", "position"), [
    ("metric.acc >= 0.94; metrics.rmse < 1", 18), ("m.acc >= 0.94", 0), ("acc >= 0.94", 0),
    ("attri.x != 1", 0), ("model >= 'LR'", 0),
    ("metrics.A > 0.1 OR params.B = 'LR'", 16), ("metrics.A > 0.1 NAND params.B = 'LR'", 16),
    ("metrics.A > 0.1 AND (params.B = 'LR')", 20), ("`metrics.A > 0.1", 0),
    ("param`.A > 0.1", 5), ("`dummy`.A > 0.1", 0), ("attribute.start != 1", 10),
    ("attribute.lifecycle_stage = 'ACTIVE'", 10), ("attribute._status != 'RUNNING'", 10),
    ("attribute.status = true", 19), ("dataset.status = 'true'", 8),
    ("dataset.profile = 'num_rows: 10'", 8),
    ("metrics.acc IS NULL", 12), ("attribute.status IS NULL", 17),
    ("datasets.name IS NOT NULL", 14), ("min(metrics.a) IS NULL", 15),
    ("metric.model = 'LR'", 15),
    ("tags.acc = 5", 11), ("metrics.acc != metrics.acc", 15), ("1.0 > metrics.acc", 0),
    ("attribute.status = 1", 19),
    ("params.acc = LR", 13), ("params.acc = `LR`", 13), ("params.'acc = LR", 7),
    ("params.acc = 'LR", 13), ("params.acc = \"LR'", 13), ("tags.acc = = 'LR'", 11),
    ("attribute.status IS 'RUNNING'", 20), ("tags.a IS NOT 'x'", 14),
    ("params.acc LR !=", 11), ("metric.acc !=", 13), ("foo is null", 0), ("1=1", 0),
    ("metrics.abc ~ 1.0", 12), ("attributes.start_time LIKE 1234", 22),
    ('"metrics".a > 1', 0),
])
def test_mlflow_rejections_name_the_position(text: str, position: int) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(text)
    assert info.value.position == position, str(info.value)
    assert f"at position {position}" in str(info.value)


def test_mlflow_order_by_spellings() -> None:
    # MLflow's test_correct_sorting / test_space_order_by_search_runs spellings.
    items = ['metrics."key1"  desc', "params.my_param aSc", "attributes.status   DESC"]
    assert [(o.field.kind, o.field.name, o.descending) for o in parse_order_by(items)] == [
        (Kind.METRIC, "key1", True), (Kind.PARAM, "my_param", False),
        (Kind.ATTRIBUTE, "status", True)]
    (o,) = parse_order_by(["metrics.`Mean Square Error` DESC"])
    assert (o.field.name, o.descending) == ("Mean Square Error", True)
    (o,) = parse_order_by(["start_time"])  # a bare name is an attribute
    assert (o.field.kind, o.field.name, o.descending) == (Kind.ATTRIBUTE, "start_ms", False)
    (o,) = parse_order_by(["`params`.`my_param` DESC"])
    assert (o.field.kind, o.field.name) == (Kind.PARAM, "my_param")
    for bad, position in [("m.acc", 0), ("acc", 0), ("attri.x", 0), ("`metrics.A", 0),
                          ("`metrics.A`", 0), ("attribute.start", 10),
                          ("metrics.A != 1", 10), ("attribute.run_id ACS", 17),
                          ("attribute.run_id decs", 17)]:
        with pytest.raises(FilterError) as info:
            parse_order_by([bad])
        assert info.value.position == position, (bad, str(info.value))


def test_runstream_extensions_mlflow_rejects() -> None:
    """Filters MLflow refuses that Runstream accepts (listed in the README)."""
    (p,) = parse_filter("params.acc = 5")  # typed params: a number compares numerically
    assert (p.numeric, p.values) == (True, (5.0,))
    (m,) = parse_filter("metric.model = '5'")  # quoted number on a metric
    assert m.values == (5.0,)
    (t,) = parse_filter("tags.model IN ('a', 'b')")
    assert t.op is Op.IN
    (n,) = parse_filter("max(metrics.acc) > 0.9")
    assert n.field.agg is Agg.MAX
    (e, x) = parse_filter("Metrics.acc > 1 AND attributes.experiment_id = 'x'")
    assert (e.field.kind, x.field.name) == (Kind.METRIC, "experiment")
    (w,) = parse_filter("attributes.world_size >= 8")
    assert w.field.name == "world_size"
