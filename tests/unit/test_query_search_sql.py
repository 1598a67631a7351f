"""runstream.query.search_sql: SearchRuns compiled to SQL without user text, every metric,
param and tag read in one pass of its table."""

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


def test_every_param_and_every_tag_is_read_in_one_pass_of_its_table() -> None:
    clauses = parse_filter("params.lr > 0.1 AND params.opt = 'adam' AND tags.t != 'x'"
                           " AND tags.u LIKE 'a%' AND params.lr < 1")
    order = parse_order_by(["params.batch DESC", "tags.t"])
    sql = compile_search(["e"], clauses, order, None, 10)
    assert sql.sql.count("FROM param_values") == 1 and sql.sql.count("FROM tags") == 1
    assert sql.parameters["param_keys"] == ["batch", "lr", "opt"]
    assert sql.parameters["tag_keys"] == ["t", "u"]
    # No clause is a run_id IN (subquery): it was pushed into every other read.
    assert "r.run_id IN" not in sql.sql
    datasets = compile_search(["e"], parse_filter(
        "datasets.digest = 'd' AND datasets.name IN ('a', 'b') AND attributes.artifact_uri"
        " LIKE 's3://%'"), parse_order_by(["attributes.artifact_uri"]), None, 10).sql
    assert datasets.count("FROM inputs") == datasets.count("FROM artifacts") == 1
    assert "countIf(name IN {c1_v:Array(String)}) > 0 AS c1_any" in datasets
    assert "min(uri) AS v" in datasets and "r.run_id IN" not in datasets
    assert "FROM tags" not in compile_search([], parse_filter("params.x = 1"), [], None, 10).sql


def test_every_metric_field_is_read_in_one_pass() -> None:
    clauses = parse_filter("metrics.a > 1 AND min(metrics.b) < 2 AND metrics.a != 3")
    order = parse_order_by(["metrics.c DESC", "max(metrics.a)"])
    compiled = compile_search([], clauses, order, None, 10)
    assert compiled.sql.count("metric_summaries") == 1
    assert compiled.parameters["metric_keys"] == ["a", "b", "c"]
    # metrics.a, named twice, is merged once; max(metrics.a) is another aggregate.
    assert compiled.sql.count("argMaxMergeIf(last, key = {c0_k:String})") == 1
    assert "c2_k" not in compiled.parameters and "(m.c0_has AND m.c0_m != {c2_v:Float64})" \
        in compiled.sql
    assert "maxIf(max, key = {o1_k:String})" in compiled.sql
    assert "metric_summaries" not in compile_search([], parse_filter("params.x = 1"), [], None,
                                                    10).sql


def test_is_null_tests_the_key_and_negated_artifact_ops_mean_none() -> None:
    compiled = compile_search([], parse_filter(
        "tags.v IS NULL AND params.lr IS NOT NULL AND attributes.artifact_uri != 's3://x'"
        " AND attributes.artifact_uri LIKE 's3://%'"), [], None, 10)
    # Whether the run has any row of the key, from the pass over its table.
    assert "countIf(key = {c0_k:String}) > 0 AS c0_has" in compiled.sql
    assert "AND NOT ifNull(t.c0_has, 0)\n    AND ifNull(p.c1_has, 0)\n" in compiled.sql
    # Each artifact at its latest version, in one pass; "!=" means no artifact has the URI.
    uris = ("(SELECT run_id, argMax(uri, ts_ms) AS uri FROM artifacts WHERE 1\n"
            "    GROUP BY run_id, name, rank)")
    assert compiled.sql.count("FROM artifacts") == 1 and f"FROM {uris}" in compiled.sql
    assert "countIf(uri = {c2_v:String}) > 0 AS c2_any" in compiled.sql
    assert "countIf(uri LIKE {c3_v:String}) > 0 AS c3_any" in compiled.sql
    assert "AND NOT ifNull(a.c2_any, 0)\n    AND ifNull(a.c3_any, 0)\n" in compiled.sql
    assert (compiled.parameters["c0_k"], compiled.parameters["c2_v"]) == ("v", "s3://x")


def test_user_id_reads_the_mlflow_user_tag_only_when_named() -> None:
    compiled = compile_search([], parse_filter("attributes.user_id = 'ann'"), [], None, 10)
    assert compiled.parameters["u_k"] == "mlflow.user" and "FROM tags" in compiled.sql
    assert compiled.parameters["tag_keys"] == ["mlflow.user"]
    assert "FROM tags" not in compile_search([], parse_filter("status = 'x'"), [], None, 10).sql
    # The same tag named as a tag too: one column pair, the user's.
    both = compile_search([], parse_filter("tags.`mlflow.user` LIKE 'a%' AND attributes.user_id"
                                           " != 'bob'"), [], None, 10)
    assert both.sql.count("AS u_has") == 1 and "c0_has" not in both.sql
    assert "(t.u_has AND t.u_t LIKE {c0_v:String})" in both.sql


def test_ties_break_as_mlflow_start_time_desc_then_run_id_asc() -> None:
    compiled = compile_search([], (), parse_order_by(["metrics.a"]), None, 10)
    assert compiled.sql.split("ORDER BY ")[-1].startswith(
        "s0_0_n ASC, s0_0_v ASC, start_ms DESC, run_id ASC")
    assert [(c.alias, c.descending) for c in compiled.keyset][-2:] == [
        ("start_ms", True), ("run_id", False)]


def test_the_view_filters_on_one_join_of_the_archive_actions() -> None:
    sqls = {view: compile_search(["e"], (), (), None, 10, view=view).sql
            for view in ("ACTIVE_ONLY", "ARCHIVED_ONLY", "ALL")}
    assert "AND NOT ifNull(x.archived, 0)\n" in sqls["ACTIVE_ONLY"]
    assert "AND ifNull(x.archived, 0)\n" in sqls["ARCHIVED_ONLY"]
    for view in ("ACTIVE_ONLY", "ARCHIVED_ONLY"):
        # Not a set of the archived runs: that was pushed into every read.
        assert sqls[view].count("FROM annotations") == 1
        assert "r.run_id IN" not in sqls[view] and "r.run_id NOT IN" not in sqls[view]
    assert "annotations" not in sqls["ALL"]
