"""Every table and column the SQL names exists in runstream.proto.tables (the storage contract).

The query repository's SQL is captured as it is sent, by driving every repository method
(each variant: ranks or not, a cursor or not, aggregated or not, ...) against a client
that records the query and answers with nothing; SearchRuns' compiled SQL and the
consumer's liveness query are checked the same way. An identifier in the SQL must be a
keyword or function the test knows, an alias the query itself defines, a table of the
contract, or a column of a table the query reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from runstream.consumer.liveness import LIVENESS_SQL
from runstream.proto import tables
from runstream.query.filters import parse_filter, parse_order_by
from runstream.query.repository import SCOPE_SIZE_SQL, ClickHouseRepository
from runstream.query.search_sql import compile_search
from runstream.query.tokens import PointCursor

CONTRACT = {t.name: t for t in (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)}

KNOWN = {
    # keywords
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "AS", "GROUP", "BY", "ORDER",
    "LIMIT", "HAVING", "UNION", "ALL", "WITH", "FINAL", "LEFT", "JOIN", "ON", "SETTINGS",
    "DESC", "ASC", "LIKE", "ILIKE", "IS", "NULL", "join_use_nulls",
    # functions
    "if", "ifNull", "isNull", "isNaN", "argMax", "argMin", "argMaxIf", "argMaxMerge",
    "argMaxMergeIf", "minIf", "maxIf", "countIf", "count", "min", "max", "avg", "tuple",
    "toUInt32", "toUInt128", "toFloat64", "toFloat64OrNull", "toString", "bitOr", "bitXor", "sum",
    "bitNot", "bitShiftLeft", "reinterpretAsUInt64", "intDiv", "transform", "concat",
    "isFinite", "materialize", "exp2", "assumeNotNull", "nullIf", "toUInt8",
    "toInt64", "arrayFilter", "argMinIf", "arrayJoin", "greatest", "abs", "row_number",
    "arrayElement", "toUInt64", "uniqExact", "argMinMerge", "bitAnd", "bitShiftRight",
    "bitTest", "reinterpretAsInt64", "reinterpretAsFloat64", "argMinState", "argMaxState",
    "groupBitmap", "groupBitmapMerge",
    # rank health (GetRankHealth)
    "OVER", "PARTITION", "quantilesIf", "quantiles", "median", "startsWith",
    # lambda parameters (FORK_SUMMARIES_SQL)
    "seg_owner", "seg_run", "seg_after", "seg_to",
    # a virtual column of every MergeTree table, and DISTINCT (SERIES_PARTS_SQL)
    "_part", "DISTINCT",
}
# ClickHouse's own catalog, which the SQL may read besides the contract: the database's
# tables and these of their columns (SERIES_PARTS_SQL: the metrics table's uuid, engine).
CATALOG = {"system": {"tables", "database", "name", "uuid", "engine"}}


class _RecordingResult:
    result_rows: list[Any] = []
    result_columns: list[Any] = []

    def __init__(self, sql: str) -> None:
        if "min(step), max(step), count()" in sql:
            self.result_rows = [(0, 0, 0)]
        elif "groupBitmapMerge(steps)" in sql:  # a suspect rank: its points are checked too
            self.result_rows = [(1,)]

    @property
    @contextmanager
    def column_block_stream(self) -> Iterator[list[Any]]:
        yield []


class _RecordingClient:
    def __init__(self) -> None:
        self.sql: list[str] = []

    def query(self, sql: str, **_: Any) -> _RecordingResult:
        self.sql.append(sql)
        return _RecordingResult(sql)


def repository_sql() -> list[str]:
    repo = ClickHouseRepository("chdb:///never-opened", "db")
    client = _RecordingClient()
    repo._local.client = client
    runs, keys, cursor = ["r1", "r2"], ["loss"], PointCursor(0, 1, 2, "p", 3, 4)
    repo.run_exists("r1")
    repo.rank_rows(runs)
    repo.statuses(runs)
    repo.params(runs)
    repo.param_conflicts(runs)
    repo.accounts(runs)
    repo.producer_points("r1")
    repo.tags(runs)
    repo.artifacts("r1")
    repo.inputs(runs)
    repo.metric_summaries(runs)
    repo.metric_summaries(runs, keys)
    repo.best_steps(runs, keys)
    for ranks in ((), (0, 1)):
        for after in (None, cursor):
            repo.metric_points("r1", "loss", ranks, after, 10)
        for aggregate in ("", "mean", "min", "max"):
            repo.series_range("r1", "loss", ranks, aggregate)
            repo.buckets("r1", "loss", ranks, aggregate, 0, 10)
            repo.aggregate_points("r1", "loss", ranks, aggregate or "mean", -1, 10)
        for followed in ((), ("loss",)):
            for cursors in ({}, {("loss", 0): 5}):
                repo.new_points("r1", followed, ranks, cursors, -1, 10)
    repo.series_tips("r1")
    from runstream.query.attempts import Segment

    segments = (Segment("p", -1, 5), Segment("r1", 5))
    for ranks in ((), (0, 1)):
        for after in (None, cursor):
            repo.metric_points("r1", "loss", ranks, after, 10, segments=segments)
        for aggregate in ("", "mean"):
            repo.series_range("r1", "loss", ranks, aggregate, segments=segments)
            repo.buckets("r1", "loss", ranks, aggregate, 0, 10, segments=segments)
    repo.run_starts(runs)
    repo.status_events(runs)
    repo.forks(runs)
    repo.annotations(runs)
    repo.archived(runs)
    repo.produced_by("ab" * 32)
    repo.used_by(["ab" * 32])
    for some in ((), keys):
        repo.fork_summaries({"r1": segments}, some)
    repo.rank_value_stats("r1", ["a", "b"])
    repo.rank_lags("r1", "a")
    repo.first_non_finite("r1")
    repo.rank_last_seen("r1")
    repo.busiest_key("r1")
    repo.experiments(10)
    repo.ingest_progress(0)
    # The web UI's reads (step ranges, several series, envelope, lag, columns, keys).
    for ranks in ((), (0, 1)):
        for steps in (None, (5, 9)):
            for after in (None, cursor):
                repo.metric_points("r1", "loss", ranks, after, 10, steps=steps)
                repo.metric_points("r1", "loss", ranks, after, 10, segments=segments,
                                   steps=steps)
            for aggregate in ("", "mean"):
                repo.series_range("r1", "loss", ranks, aggregate, steps=steps)
                repo.buckets("r1", "loss", ranks, aggregate, 0, 10, segments=segments,
                             steps=steps)
                repo.aggregate_points("r1", "loss", ranks, "mean", -1, 10, steps=steps)
                repo.series_ranges(runs, keys, ranks, aggregate, steps=steps)
                repo.series_buckets({("r1", "loss"): (0, 10)}, ranks, aggregate, steps=steps)
    repo.existing_runs(runs)
    for steps in (None, (5, 9)):
        repo.envelope("r1", "loss", 100, steps=steps)
        repo.rank_spread("r1", "loss", steps=steps)
        repo.key_non_finite("r1", "loss", steps=steps)
    repo.rank_lag_cells("r1", "loss", 100)
    repo.column_values(runs, ["lr"], ["team"])
    for experiments in ((), ("exp",)):
        repo.run_keys(experiments, 10)
    search = compile_search(
        ["exp"],
        parse_filter("metrics.a > 1 AND min(metrics.b) < 2 AND params.lr = '0.1' AND "
                     "params.n > 3 AND tags.t LIKE 'x%' AND datasets.digest = 'd' AND "
                     "attributes.status = 'FINISHED' AND attributes.start_time > 0 AND "
                     "attributes.end_time > 0 AND attributes.world_size > 1 AND "
                     "attributes.run_name != 'n' AND attributes.run_id IN ('r1')"),
        parse_order_by(["metrics.c DESC", "params.lr", "tags.t"]),
        [0, 1.0, 0, 2.0, 0, "x", 0, "t", 5, "run"], 10,
    )
    return [*client.sql, search.sql, SCOPE_SIZE_SQL]


def _identifiers(sql: str) -> tuple[set[str], set[str], set[str]]:
    """(tables read, aliases defined, every other identifier) of one SQL text."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'", " ", sql)  # string literals
    text = re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*:[^}]*\}", " ", text)  # bound parameters
    text = re.sub(r"\b0x[0-9A-Fa-f]+\b|\b\d+(?:\.\d*)?", " ", text)  # numbers
    read = set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_]\w*)", text))
    aliases = set(re.findall(r"\bAS\s+([A-Za-z_]\w*)", text))
    qualifiers = set(re.findall(r"\b([A-Za-z_]\w*)\.", text))
    words = set(re.findall(r"[A-Za-z_]\w*", text)) - aliases - qualifiers - read - KNOWN
    return read, aliases, words


@pytest.mark.parametrize("sql", [*repository_sql(), LIVENESS_SQL])
def test_sql_names_only_tables_and_columns_of_the_contract(sql: str) -> None:
    read, _aliases, words = _identifiers(sql)
    assert read, sql
    ours = read - CATALOG.keys()
    assert ours <= CONTRACT.keys(), f"tables outside the contract: {ours - CONTRACT.keys()}"
    columns = {c for name in ours
               for c, _ in (*CONTRACT[name].columns, *CONTRACT[name].computed)}
    columns |= set().union(*(CATALOG[name] for name in read & CATALOG.keys()))
    assert words <= columns, f"not columns of {sorted(read)}: {sorted(words - columns)}\n{sql}"


def test_every_repository_query_was_captured() -> None:
    # The table reads are what the service needs; a new method must be added above.
    read = set().union(*(_identifiers(sql)[0] for sql in repository_sql()))
    assert read == {"runs", "run_status", "param_values", "tags", "artifacts", "inputs",
                    "metrics", "metric_counts", "metric_summaries", "metric_blocks",
                    "ingest_progress", "run_starts", "annotations", "rank_activity",
                    "run_experiments", "system"}


def test_a_misspelled_column_is_caught() -> None:
    _, _, words = _identifiers("SELECT run_id, tss_ms FROM runs WHERE rank = {r:UInt32}")
    assert words - {c for c, _ in tables.RUNS.columns} == {"tss_ms"}
