"""runstream.query.search_sql: SearchRuns compiled to SQL without user text, every metric
read in one pass."""

from __future__ import annotations

import pytest

from runstream.query.filters import parse_filter, parse_order_by
from runstream.query.search_sql import compile_search


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


def test_every_metric_field_is_read_in_one_pass() -> None:
    clauses = parse_filter("metrics.a > 1 AND min(metrics.b) < 2 AND metrics.a != 3")
    order = parse_order_by(["metrics.c DESC", "max(metrics.a)"])
    compiled = compile_search([], clauses, order, None, 10)
    assert compiled.sql.count("metric_summaries") == 1
    assert compiled.parameters["metric_keys"] == ["a", "b", "c"]
    assert "metric_summaries" not in compile_search([], parse_filter("params.x = 1"), [], None,
                                                    10).sql
