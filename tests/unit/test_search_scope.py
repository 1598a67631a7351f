"""The experiment scope of SearchRuns' SQL (the experiment column its tables' projections
sort on, and run_experiments for older rows), and run_experiments' contract."""

from __future__ import annotations

import re

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError
from runstream.query.filters import parse_filter, parse_order_by
from runstream.query.search_sql import ANNOTATED_RUNS, PREFILTER, SCOPE, compile_search

FILTER = ("metrics.a > 1 AND min(metrics.b) < 2 AND params.lr = '0.1' AND params.n > 3 AND "
          "tags.t LIKE 'x%' AND datasets.digest = 'd' AND params.gone IS NULL AND "
          "attributes.artifact_uri LIKE 'file:%' AND attributes.user_id = 'ada'")
ORDER = ["params.lr DESC", "tags.t", "attributes.artifact_uri"]
# The tables ordered by run_id that SearchRuns reads: each read must be scoped (runs by
# its experiment alone: it always had the column, so no older rows lack it).
RUN_TABLES = {"run_status", "param_values", "tags", "inputs", "artifacts", "metric_summaries"}


def _compile(experiments: list[str], scoped: bool, after: list[object] | None = None) -> str:
    return compile_search(experiments, parse_filter(FILTER), parse_order_by(ORDER), after, 10,
                          scoped=scoped).sql


def test_every_read_of_a_run_table_is_scoped_to_the_experiments() -> None:
    for scoped, scope in ((True, SCOPE), (False, PREFILTER)):
        sql = _compile(["e1", "e2"], scoped)
        reads = re.split(r"\bFROM\s+", sql)[1:]
        tables_read = [r for r in reads if r.split()[0] in RUN_TABLES]
        assert {r.split()[0] for r in tables_read} == RUN_TABLES
        # Each read's WHERE holds the scope (when scoped, its run_experiments set is the
        # next read), and no FINAL: a projection is never read under FINAL.
        head = scope.split(" FROM run_experiments")[0]
        for i, read in enumerate(reads):
            if read.split()[0] in RUN_TABLES:
                assert read.split()[1] != "FINAL", read[:200]
                assert read.rstrip().endswith(head) if scoped else f"AND {scope}" in read, \
                    read[:300]
                if scoped:
                    assert reads[i + 1].startswith("run_experiments WHERE experiment IN")
        assert sql.count(scope) == len(tables_read)
        (runs,) = [r for r in reads if r.split()[0] == "runs"]
        assert runs.split("GROUP BY")[0].split() == ["runs", "WHERE", "experiment", "IN",
                                                      "{experiments:Array(String)}"]
        assert "FINAL" not in sql


def test_the_scope_is_the_only_difference_from_the_unscoped_sql() -> None:
    for after in (None, [0, 0.5, 0, "x", 0, "t", 0, "u", 5, "r"]):
        scoped = _compile(["e1"], True, after)
        unscoped = _compile(["e1"], False, after)
        assert "run_experiments" not in unscoped
        # and, unscoped, the projections are not used (they skip nothing there), nor are
        # the archive actions narrowed to the experiments' runs.
        assert scoped.replace(SCOPE, PREFILTER).replace(ANNOTATED_RUNS, "").replace(
            "join_use_nulls = 1", "join_use_nulls = 1, optimize_use_projections = 0") == unscoped


def test_a_scoped_search_reads_the_archive_actions_of_the_experiments_runs_only() -> None:
    scoped = _compile(["e1"], True)
    (annotations,) = [r for r in re.split(r"\bFROM\s+", scoped)[1:]
                      if r.startswith("annotations")]
    # By run id (a run's annotations carry its head experiment only), from the same set
    # of the experiments' runs as the other reads' scope.
    assert annotations.startswith("annotations WHERE archive != ''" + ANNOTATED_RUNS.split(
        " FROM run_experiments")[0])
    assert ANNOTATED_RUNS in scoped
    assert ANNOTATED_RUNS not in _compile(["e1"], False)
    assert ANNOTATED_RUNS not in _compile([], True)
    # No archive condition, no archive read.
    every = compile_search(["e1"], (), (), None, 10, view="ALL").sql
    assert "annotations" not in every


def test_a_search_of_every_experiment_reads_no_scope() -> None:
    assert _compile([], True) == _compile([], False)
    assert "run_experiments" not in _compile([], True)
    assert "optimize_use_projections = 0" in _compile([], True)
    assert "optimize_use_projections" not in _compile(["e1"], True)


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
