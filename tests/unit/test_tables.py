"""runstream.proto.tables: single-node and cluster DDL come from the same Table definitions."""

from __future__ import annotations

import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError


def test_replicated_engine_keeps_the_version_argument():
    assert tables.replicated_engine("ReplacingMergeTree(ts_ms)", "rs", "runs_local") == (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/rs/runs_local',"
        " '{replica}', ts_ms)")
    assert tables.replicated_engine("AggregatingMergeTree", "rs", "x_local") == (
        "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/rs/x_local', '{replica}')")


def test_cluster_ddl_has_a_local_and_a_distributed_table_for_every_table():
    ddl = tables.cluster_ddl("rs", "main")
    every = (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)
    for t in every:
        local = next(s for s in ddl if f"`rs`.`{t.name}_local` ON CLUSTER" in s
                     and s.startswith("CREATE TABLE"))
        assert "ENGINE = Replicated" in local
        assert f"ORDER BY ({t.order_by})" in local
        for column, _type in t.columns:
            assert f"`{column}` {_type}" in local  # same columns, types and codecs
        dist = next(s for s in ddl if s.startswith(f"CREATE TABLE IF NOT EXISTS `rs`.`{t.name}`"))
        assert f"Distributed(`main`, `rs`, `{t.name}_local`" in dist
    views = [s for s in ddl if "MATERIALIZED VIEW" in s]
    assert len(views) == len(tables.VIEWS)
    assert all("_local`" in v.split(" AS SELECT")[0] and "FROM `rs`." in v for v in views)
    assert all("FROM `rs`.`" in v and "_local`" in v.split("FROM")[1] for v in views)


def test_single_node_ddl_has_every_table_and_view_once():
    ddl = tables.all_ddl("rs")
    names = [t.name for t in (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)]
    for name in names:
        assert sum(f"`rs`.`{name}` (" in s for s in ddl) == 1
    assert sum("MATERIALIZED VIEW" in s for s in ddl) == len(tables.VIEWS)


def test_identifiers_are_checked():
    with pytest.raises(InvalidArgumentError):
        tables.cluster_ddl("rs", "main; DROP")
    with pytest.raises(InvalidArgumentError):
        tables.all_ddl("r-s")


def test_insert_types_drop_codecs_and_low_cardinality():
    types = dict(zip(tables.METRICS.column_names, tables.METRICS.insert_types, strict=True))
    assert types == {"run_id": "String", "key": "String", "rank": "UInt32", "step": "Int64",
                     "value": "Float64", "ts_ms": "Int64", "producer_id": "String",
                     "seq": "UInt64", "idx": "UInt32", "experiment": "String"}
    runs = dict(zip(tables.RUNS.column_names, tables.RUNS.insert_types, strict=True))
    assert runs["packages"] == "Map(String, String)"
    assert runs["gpu_memory_bytes"] == "Array(UInt64)"


def test_add_columns_ddl_adds_only_what_an_existing_table_lacks():
    have = {t.name: set(t.column_names) | {c for c, _ in t.computed}
            for t in (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)}
    assert tables.add_columns_ddl("rs", have) == []
    have["run_status"] -= {"points_logged", "drop_points"}
    del have["tags"]  # missing tables are CREATE's business
    assert tables.add_columns_ddl("rs", have) == [
        "ALTER TABLE `rs`.`run_status` ADD COLUMN IF NOT EXISTS `points_logged` UInt64,"
        " ADD COLUMN IF NOT EXISTS `drop_points` Array(UInt64)"]
    with pytest.raises(InvalidArgumentError):
        tables.add_columns_ddl("r-s", have)


def test_an_older_store_gets_the_projections_and_view_queries_it_lacks():
    have = {t.name: set(t.column_names) | {c for c, _ in t.computed}
            for t in (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)}
    views = {v.name: set(next(t for t in tables.AGGREGATE_TABLES if t.name == v.target)
                         .column_names) for v in tables.VIEWS}
    assert tables.upgrade_views_ddl("rs", {**have, **views}) == []
    views["metric_summaries_mv"] -= {"experiment"}
    (modify,) = tables.upgrade_views_ddl("rs", {**have, **views})
    assert modify.startswith("ALTER TABLE `rs`.`metric_summaries_mv` MODIFY QUERY SELECT")
    assert "AS experiment," in modify and "AS counted FROM `rs`.`metrics`" in modify
    # A view older than the repeated-rank check's columns is brought up to date too.
    views["metric_summaries_mv"] = {"run_id", "key", "rank", "last", "last_step", "min", "max",
                                    "experiment"}
    (modify,) = tables.upgrade_views_ddl("rs", {**have, **views})
    assert "groupBitmapState(toUInt64(step)) AS steps" in modify
    projected = {t.name for t in (*tables.TABLES, *tables.AGGREGATE_TABLES) if t.projection}
    assert projected == {"runs", "run_status", "param_values", "tags", "artifacts", "inputs",
                         "metric_summaries"}
    assert tables.add_projections_ddl("rs", set(have), projected) == []
    setting, add = tables.add_projections_ddl("rs", set(have), projected - {"tags"})
    assert setting == ("ALTER TABLE `rs`.`tags` MODIFY SETTING"
                       " deduplicate_merge_projection_mode = 'rebuild'")
    assert add == ("ALTER TABLE `rs`.`tags` ADD PROJECTION IF NOT EXISTS by_experiment"
                   " (SELECT *, `ver` ORDER BY (experiment, run_id, key))")
    assert tables.add_projections_ddl("rs", set(have) - {"tags"}, projected - {"tags"}) == []


def test_param_values_keep_every_value_and_the_earliest_of_equal_ones():
    assert tables.PARAMS.name == "param_values"
    assert tables.PARAMS.order_by == "run_id, key, rank, value"
    assert tables.PARAMS.engine == "ReplacingMergeTree(ver)"
    copy, rename = tables.migration_ddl("rs")
    assert copy.startswith("INSERT INTO `rs`.`param_values` (") and "FROM `rs`.`params`" in copy
    assert rename == "RENAME TABLE `rs`.`params` TO `rs`.`params_migrated`"


def test_cluster_upgrade_adds_every_column_to_local_and_distributed_tables():
    every = (*tables.TABLES, *tables.AUX_TABLES, *tables.AGGREGATE_TABLES)
    ddl = tables.cluster_add_columns_ddl("rs", "main")
    for t in every:
        for name in (f"{t.name}_local", t.name):
            (alter,) = [s for s in ddl if s.startswith(f"ALTER TABLE `rs`.`{name}` ON CLUSTER"
                                                       " `main` ADD COLUMN")]
            for column, type_ in (*t.columns, *t.computed):
                assert f"ADD COLUMN IF NOT EXISTS `{column}` {type_}" in alter
    # Local tables first: a Distributed table's new column reads from its shards.
    assert max(i for i, s in enumerate(ddl) if "_local` ON CLUSTER `main` ADD COLUMN" in s) < min(
        i for i, s in enumerate(ddl) if "ADD COLUMN" in s and "_local`" not in s)
    # Projections after the columns they sort on and the setting they need; views last.
    projected = [t for t in every if t.projection]
    adds = [i for i, s in enumerate(ddl) if "ADD PROJECTION IF NOT EXISTS by_experiment" in s]
    assert len(adds) == len(projected) == 7
    settings = [i for i, s in enumerate(ddl) if "deduplicate_merge_projection_mode" in s]
    assert len(settings) == len(projected) and max(settings) < min(adds)
    modify = [s for s in ddl if "MODIFY QUERY" in s]
    assert len(modify) == len(tables.VIEWS)
    assert all("_local` ON CLUSTER `main` MODIFY QUERY SELECT" in s for s in modify)
    upgrade = tables.cluster_upgrade_ddl("rs", "main")
    assert sorted(upgrade) == sorted([*tables.cluster_ddl("rs", "main"), *ddl])
    # Every view after every ADD COLUMN (it is checked against its source's columns), and
    # before the MODIFY QUERY that brings an existing one up to date.
    creates = [i for i, s in enumerate(upgrade) if s.startswith("CREATE MATERIALIZED VIEW")]
    columns = [i for i, s in enumerate(upgrade) if " ADD COLUMN " in s]
    modify = [i for i, s in enumerate(upgrade) if " MODIFY QUERY " in s]
    assert len(creates) == len(tables.VIEWS) and max(columns) < min(creates)
    assert max(creates) < min(modify)
    tables_first = [i for i, s in enumerate(upgrade) if s.startswith("CREATE TABLE")]
    assert max(tables_first) < min(columns)
    with pytest.raises(InvalidArgumentError):
        tables.cluster_add_columns_ddl("rs", "main`; DROP")


def test_print_ddl_upgrade_prints_the_cluster_upgrade(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse" / "print_ddl.py"
    spec = importlib.util.spec_from_file_location("print_ddl", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--cluster", "main", "--database", "rs", "--upgrade"]) == 0
    out = capsys.readouterr().out
    statements, _, comments = out.partition("-- Then, on one replica of each shard")
    printed = [s.strip() for s in statements.split(";\n") if s.strip()]
    assert printed == tables.cluster_upgrade_ddl("rs", "main")
    # The per-shard copies, as comments (INSERTs are not ON CLUSTER).
    assert [line.removeprefix("-- ").removesuffix(";") for line in comments.splitlines()[1:]
            ] == [tables.backfill_ddl("rs", "_local"), tables.blocks_backfill_ddl("rs", "_local")]
    with pytest.raises(SystemExit):
        module.main(["--upgrade"])  # a single node upgrades itself


@pytest.mark.parametrize(("aggregate", "forked", "steps"), [
    ("", False, tables.BLOCK_STEPS), ("mean", False, 0), ("", True, 0), ("max", True, 0)])
def test_blocks_serve_a_runs_own_points_per_rank_only(aggregate: str, forked: bool,
                                                      steps: int) -> None:
    assert tables.series_block_steps(aggregate, forked) == steps
