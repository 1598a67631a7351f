"""SearchRuns inside one experiment, scoped through run_experiments: the same runs as the
unscoped SQL, on the real engine; and the backfill of a store made before the table."""

from __future__ import annotations

from typing import Any

import pytest

from runstream.consumer.factories import connect_clickhouse
from runstream.consumer.sink import ClickHouseSink
from runstream.proto import tables
from runstream.query.filters import parse_filter, parse_order_by
from runstream.query.repository import ClickHouseRepository
from runstream.query.search_sql import SCOPE, compile_search
from runstream.query.service import QueryService
from tests.factories import T0, insert, points, seed_runs, set_status, start_rank

SEARCHES = [
    ("", ""),
    ("params.lr > 0.004", "metrics.val_acc DESC"),
    ("metrics.val_acc >= 0.3 and tags.model LIKE '%'", "params.lr ASC"),
    ("attributes.status = 'FINISHED' and params.batch IN (32, 64)", "attributes.start_time DESC"),
    ("min(metrics.loss) < 100 and datasets.digest = 'sha1'", "tags.model DESC"),
    ("params.missing IS NULL", "attributes.run_name ASC"),
]


def _seed(ch: Any) -> None:
    seed_runs(ch)  # r00..r09 in "exp", r10, r11 in "other"
    # A run of several ranks, each rank's RunStarted arriving late: its params, metrics
    # and status first, then rank 1's RunStarted, then rank 0's, then rank 0's again.
    insert(ch, tables.PARAMS, [{"run_id": "late", "key": "lr", "value": "0.5", "type": "FLOAT",
                                "rank": 0, "producer_id": "p0", "seq": 2, "ts_ms": T0}])
    insert(ch, tables.METRICS, points("late", "val_acc", 0, range(3)))
    set_status(ch, "late", 0, "FINISHED", T0 + 9000, seq=9, experiment="other")
    start_rank(ch, "late", 1, 2, T0 + 5001, experiment="other", name="late-r1")
    start_rank(ch, "late", 0, 2, T0 + 5000, experiment="other", name="late")
    start_rank(ch, "late", 0, 2, T0 + 5000, experiment="other", name="late")  # a replay
    # A run whose ranks disagree on the experiment: found in both, as before.
    start_rank(ch, "split", 0, 2, T0 + 6000, experiment="other")
    start_rank(ch, "split", 1, 2, T0 + 6001, experiment="exp")
    # Many runs of another experiment, so that "other" is a small part of the store.
    for i in range(60):
        start_rank(ch, f"big{i:02d}", 0, 1, T0 + i, experiment="big")


def _rows(repo: ClickHouseRepository, experiments: list[str], filter_text: str, order: str,
          scoped: bool, view: str = "ACTIVE_ONLY") -> list[tuple[Any, ...]]:
    compiled = compile_search(experiments, parse_filter(filter_text),
                              parse_order_by([order] if order else []), None, 1000,
                              scoped=scoped, view=view)
    assert (SCOPE in compiled.sql) is scoped
    return [tuple(r) for r in repo._rows(compiled.sql, compiled.parameters)]


@pytest.mark.parametrize(("filter_text", "order"), SEARCHES)
def test_scoped_search_returns_the_runs_of_the_unscoped_sql(
    ch: Any, chdb_dsn: str, ch_database: str, filter_text: str, order: str
) -> None:
    _seed(ch)
    repo = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        for experiments in (["other"], ["exp"], ["other", "exp"], ["nothing"]):
            scoped = _rows(repo, experiments, filter_text, order, True)
            assert scoped == _rows(repo, experiments, filter_text, order, False)
        others = [r[0] for r in _rows(repo, ["other"], "", "", True)]
        assert sorted(others) == ["late", "r10", "r11", "split"]
        assert "split" in [r[0] for r in _rows(repo, ["exp"], "", "", True)]
    finally:
        repo.close()


def _archive(ch: Any, run_id: str, experiment: str, action: str, ts_ms: int) -> None:
    """An archive action as the consumer stores the CLI's Annotation (the run's head
    experiment, or '' as rows written before the column hold)."""
    insert(ch, tables.ANNOTATIONS, [{
        "run_id": run_id, "experiment": experiment, "archive": action, "user": "u",
        "host": "h", "producer_id": f"cli-{run_id}-{ts_ms}", "seq": 1, "ts_ms": ts_ms}])


def test_a_scoped_search_finds_every_archive_action_of_its_runs(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    _seed(ch)
    # "split" is archived under its head experiment ("other"); searched in "exp" it must
    # be left out too. r11's action holds no experiment; r10 is archived, then restored;
    # many runs elsewhere are archived (what the scoped read no longer groups).
    _archive(ch, "split", "other", "ARCHIVE", T0 + 7000)
    _archive(ch, "r11", "", "ARCHIVE", T0 + 7000)
    _archive(ch, "r10", "other", "ARCHIVE", T0 + 7000)
    _archive(ch, "r10", "other", "RESTORE", T0 + 8000)
    for i in range(0, 60, 2):
        _archive(ch, f"big{i:02d}", "big", "ARCHIVE", T0 + 7000)
    repo = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        for view in ("ACTIVE_ONLY", "ARCHIVED_ONLY", "ALL"):
            for experiments in (["other"], ["exp"], ["other", "exp"], ["big"]):
                for filter_text, order in SEARCHES[:2]:
                    scoped = _rows(repo, experiments, filter_text, order, True, view)
                    assert scoped == _rows(repo, experiments, filter_text, order, False, view)
        assert sorted(r[0] for r in _rows(repo, ["other"], "", "", True)) == ["late", "r10"]
        assert "split" not in [r[0] for r in _rows(repo, ["exp"], "", "", True)]
        assert "split" in [r[0] for r in _rows(repo, ["exp"], "", "", True, "ARCHIVED_ONLY")]
        assert len(_rows(repo, ["big"], "", "", True)) == 30
    finally:
        repo.close()


def test_the_service_scopes_a_small_experiment_and_finds_late_runs(
    ch: Any, chdb_dsn: str, ch_database: str
) -> None:
    _seed(ch)
    repo = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        assert repo._scope_pays(["other"]) and not repo._scope_pays(["big"])
        page = QueryService(repo).search_runs("other", filter_text="metrics.val_acc >= 0",
                                              order_by=["metrics.val_acc DESC"])
        assert [r.run_id for r in page.runs] == ["late", "r11", "r10"]
        late = page.runs[0]
        assert (late.name, late.world_size, late.status) == ("late", 2, "FINISHED")
    finally:
        repo.close()


def test_an_old_store_is_backfilled_once_at_start(chdb_dsn: str, ch_database: str) -> None:
    database = f"{ch_database}_old"
    ch = connect_clickhouse(chdb_dsn, database)
    new_only = (f"`{tables.RUN_EXPERIMENTS.name}`", f"`{tables.RUN_EXPERIMENTS.name}_mv`")
    for statement in tables.all_ddl(database):
        if not any(name in statement.split("(")[0] for name in new_only):
            ch.command(statement)
    # What an older consumer stored: runs of two experiments, one of several ranks.
    for i in range(5):
        start_rank(ch, f"old{i}", 0, 2, T0 + i, experiment="a" if i < 3 else "b")
        start_rank(ch, f"old{i}", 1, 2, T0 + i, experiment="a" if i < 3 else "b")

    def pairs() -> list[tuple[str, str]]:
        return [tuple(r) for r in ch.query(
            "SELECT experiment, run_id FROM run_experiments ORDER BY experiment, run_id"
        ).result_rows]

    ClickHouseSink(ch, database).ensure_schema()
    expected = [("a", "old0"), ("a", "old1"), ("a", "old2"), ("b", "old3"), ("b", "old4")]
    assert pairs() == expected
    # From now on the view feeds it; a second start copies nothing again.
    start_rank(ch, "new0", 0, 1, T0 + 99, experiment="b")
    ClickHouseSink(ch, database).ensure_schema()
    rows = int(ch.query("SELECT count() FROM run_experiments").result_rows[0][0])
    assert pairs() == sorted([*expected, ("b", "new0")])
    assert rows == 6  # the view's rows (one per insert) and the backfill's, nothing twice
    repo = ClickHouseRepository(chdb_dsn, database)
    try:
        for experiments in (["a"], ["b"]):
            got = _rows(repo, experiments, "", "", True)
            assert got == _rows(repo, experiments, "", "", False) and got
    finally:
        repo.close()
        ch.command(f"DROP DATABASE `{database}`")
        ch.close()
