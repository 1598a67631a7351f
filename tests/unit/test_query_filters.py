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
