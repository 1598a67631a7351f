"""Every DDL statement Runstream generates, single node and cluster, through ClickHouse's
own parser (the embedded engine parses what it cannot execute: ON CLUSTER, Replicated*
engines, Distributed tables), with every table setting and engine checked against the
engine's own lists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from runstream.proto import tables

DB, CLUSTER = "rs", "main"


@pytest.fixture(scope="module")
def ch(chdb_dsn: str) -> Iterator[Any]:
    client = clickhouse_connect.get_client(dsn=chdb_dsn)
    yield client
    client.close()


def formatted(ch: Any, statement: str) -> str:
    """ClickHouse's own formatting of ``statement``; raises if it does not parse."""
    return str(ch.query("SELECT formatQuery({q:String})",
                        parameters={"q": statement}).result_rows[0][0])


def statements() -> dict[str, list[str]]:
    nothing = {t.name: {t.columns[0][0]}
               for t in (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)}
    return {
        "all_ddl": tables.all_ddl(DB),
        "add_columns_ddl": tables.add_columns_ddl(DB, nothing),
        "upgrade_views_ddl": tables.upgrade_views_ddl(DB, {v.name: set() for v in tables.VIEWS}),
        "add_projections_ddl": tables.add_projections_ddl(DB, set(nothing), set()),
        "migration_ddl": tables.migration_ddl(DB),
        "backfills": [f(DB, suffix) for f in (tables.backfill_ddl, tables.blocks_backfill_ddl)
                      for suffix in ("", tables.LOCAL_SUFFIX)],
        "cluster_ddl": tables.cluster_ddl(DB, CLUSTER),
        "cluster_add_columns_ddl": tables.cluster_add_columns_ddl(DB, CLUSTER),
    }


def test_every_statement_parses(ch: Any) -> None:
    every = statements()
    assert len(every["add_columns_ddl"]) == len(every["all_ddl"]) - 1 - len(tables.VIEWS)
    for name, batch in every.items():
        for statement in batch:
            try:
                text = formatted(ch, statement)
            except DatabaseError as e:
                pytest.fail(f"{name}: ClickHouse cannot parse {statement[:200]!r}: {e}")
            if name.startswith("cluster"):
                assert f"ON CLUSTER {CLUSTER}" in text, statement[:200]
    cluster = " ".join(formatted(ch, s) for s in every["cluster_ddl"])
    assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/rs/" in cluster
    assert "ENGINE = ReplicatedAggregatingMergeTree(" in cluster
    assert f"ENGINE = Distributed({CLUSTER}, {DB}, metrics_local, cityHash64(run_id))" in cluster


def test_a_statement_that_does_not_parse_fails(ch: Any) -> None:
    broken = tables.cluster_ddl(DB, CLUSTER)[1].replace(" ORDER BY (", " ORDER BY ((", 1)
    with pytest.raises(DatabaseError, match=r"SYNTAX_ERROR|Syntax error"):
        formatted(ch, broken)


def settings_of(statement: str) -> list[str]:
    """Names of the table settings a statement sets (CREATE ... SETTINGS, MODIFY SETTING)."""
    match = re.search(r"(?:\) SETTINGS|MODIFY SETTING) (.+)$", statement)
    return [] if match is None else [s.split("=")[0].strip() for s in match[1].split(",")]


def test_table_settings_and_engines_are_ones_clickhouse_has(ch: Any) -> None:
    known = {r[0] for r in ch.query("SELECT name FROM system.merge_tree_settings").result_rows}
    engines = {r[0] for r in ch.query("SELECT name FROM system.table_engines").result_rows}
    used: set[str] = set()
    for batch in statements().values():
        for statement in batch:
            names = settings_of(statement)
            assert set(names) <= known, (names, statement[:120])
            used.update(names)
            for engine in re.findall(r"ENGINE = (\w+)", statement):
                assert engine in engines, engine
    assert used == {"non_replicated_deduplication_window", "replicated_deduplication_window",
                    "replicated_deduplication_window_seconds", "deduplicate_merge_projection_mode"}


def test_the_cluster_deduplicates_as_far_back_as_a_single_node() -> None:
    single = [s for s in tables.all_ddl(DB) if s.startswith("CREATE TABLE")]
    local = [s for s in tables.cluster_ddl(DB, CLUSTER)
             if s.startswith("CREATE TABLE") and "ENGINE = Replicated" in s]
    assert len(local) == len(single)
    window = tables.DEDUP_WINDOW
    assert all(f"non_replicated_deduplication_window = {window}" in s for s in single)
    # Replicated tables also forget tokens by age (3,600 s by default in current servers).
    cluster = (f"replicated_deduplication_window = {window},"
               f" replicated_deduplication_window_seconds = {tables.DEDUP_WINDOW_S}")
    assert tables.DEDUP_WINDOW_S >= 7 * 24 * 3600
    assert all(f"SETTINGS {cluster}" in s for s in local)
    upgrade = tables.cluster_add_columns_ddl(DB, CLUSTER)
    assert sum(f"MODIFY SETTING {cluster}" in s for s in upgrade) == len(local)
    # A projection of a Replacing/AggregatingMergeTree needs its merge mode, on both.
    for ddl in (single, local):
        projected = [s for s in ddl if "PROJECTION by_experiment" in s]
        assert len(projected) == 7
        assert all("deduplicate_merge_projection_mode = 'rebuild'" in s for s in projected)
