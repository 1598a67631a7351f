"""The experiment scope of SearchRuns' SQL (run_experiments), and that table's contract."""

from __future__ import annotations

import re

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError
from runstream.query.filters import parse_filter, parse_order_by
from runstream.query.search_sql import SCOPE, compile_search

FILTER = ("metrics.a > 1 AND min(metrics.b) < 2 AND params.lr = '0.1' AND params.n > 3 AND "
          "tags.t LIKE 'x%' AND datasets.digest = 'd' AND params.gone IS NULL AND "
          "attributes.artifact_uri LIKE 'file:%' AND attributes.user_id = 'ada'")
ORDER = ["params.lr DESC", "tags.t", "attributes.artifact_uri"]
# The tables ordered by run_id that SearchRuns reads: each read must be scoped.
RUN_TABLES = {"runs", "run_status", "param_values", "tags", "inputs", "artifacts",
              "metric_summaries"}


def _compile(experiments: list[str], scoped: bool, after: list[object] | None = None) -> str:
    return compile_search(experiments, parse_filter(FILTER), parse_order_by(ORDER), after, 10,
                          scoped=scoped).sql


def test_every_read_of_a_run_table_is_scoped_to_the_experiments() -> None:
    sql = _compile(["e1", "e2"], True)
    reads = re.split(r"\bFROM\s+", sql)[1:]
    scoped = [r for r in reads if r.split()[0] in RUN_TABLES]
    assert {r.split()[0] for r in scoped} == RUN_TABLES
    for read in scoped:
        # The scope closes the read's WHERE: `... AND run_id IN (SELECT run_id FROM run_experiments`
        assert read.rstrip().endswith("AND run_id IN (SELECT run_id"), read[:200]
    assert sql.count(SCOPE) == len(scoped)


def test_the_scope_is_the_only_difference_from_the_unscoped_sql() -> None:
    for after in (None, [0, 0.5, 0, "x", 0, "t", 0, "u", 5, "r"]):
        scoped = _compile(["e1"], True, after)
        unscoped = _compile(["e1"], False, after)
        assert "run_experiments" not in unscoped
        assert scoped.replace(f" AND {SCOPE}", "") == unscoped


def test_a_search_of_every_experiment_reads_no_scope() -> None:
    assert _compile([], True) == _compile([], False)
    assert "run_experiments" not in _compile([], True)


def test_the_scope_binds_the_experiments_as_a_parameter() -> None:
    c = compile_search(["it's; DROP"], (), (), None, 10)
    assert c.parameters["experiments"] == ["it's; DROP"]
    assert "DROP" not in c.sql
    with pytest.raises(InvalidArgumentError):
        compile_search(["e"], (), (), None, 10, view="SOME")


def test_run_experiments_is_fed_by_a_view_of_runs_and_keyed_by_experiment() -> None:
    t = tables.RUN_EXPERIMENTS
    assert t.order_by == "experiment, run_id" and t.engine == "ReplacingMergeTree"
    # The consumer writes TABLES itself; run_experiments comes from the view only.
    assert t in tables.AGGREGATE_TABLES and t not in tables.TABLES
    (view,) = [v for v in tables.VIEWS if v.target == t.name]
    assert view.source == tables.RUNS.name
    ddl = tables.all_ddl("db")
    assert ddl.index(t.ddl("db")) < ddl.index(view.ddl("db"))
    cluster = "\n".join(tables.cluster_ddl("db", "c"))
    assert "`db`.`run_experiments_local`" in cluster
    assert "TO `db`.`run_experiments_local` AS SELECT DISTINCT experiment, run_id FROM" \
        " `db`.`runs_local`" in cluster


def test_the_backfill_copies_runs_into_run_experiments() -> None:
    assert tables.backfill_ddl("db") == (
        "INSERT INTO `db`.`run_experiments` (experiment, run_id)"
        " SELECT DISTINCT experiment, run_id FROM `db`.`runs`")
    with pytest.raises(InvalidArgumentError):
        tables.backfill_ddl("db; DROP")
