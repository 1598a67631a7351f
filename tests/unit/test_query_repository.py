"""ClickHouseRepository without ClickHouse: driver blocks to columns, errors mapped by name."""

from __future__ import annotations

import array

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from runstream.proto.errors import DeadlineExceededError, RunstreamError, UnavailableError
from runstream.query.repository import ClickHouseRepository, _Blocks, _flat


def test_point_columns_from_driver_blocks() -> None:
    assert _flat([array.array("q", [1, 2]), array.array("q", [3])]) == [1, 2, 3]
    assert _flat([["a"], ["b", "c"]]) == ["a", "b", "c"] and _flat([]) == []
    blocks = _Blocks([["a", "b"], [], ["c"]])
    assert len(blocks) == 3 and [blocks[i] for i in range(3)] == ["a", "b", "c"]
    assert blocks[-1] == "c" and blocks[1:] == ["b", "c"]
    with pytest.raises(IndexError):
        blocks[3]


@pytest.mark.parametrize(("error", "expected"), [
    (DatabaseError("Code: 60. Unknown table", code=60, name="UNKNOWN_TABLE"), UnavailableError),
    (DatabaseError("Code: 81. no database", code=81, name="UNKNOWN_DATABASE"), UnavailableError),
    (DatabaseError("Code: 159. Timeout", code=159, name="TIMEOUT_EXCEEDED"),
     DeadlineExceededError),
    (DatabaseError("Code: 160. too slow", code=160, name="TOO_SLOW"), DeadlineExceededError),
    (DatabaseError("Code: 394. cancelled", code=394, name="QUERY_WAS_CANCELLED"),
     DeadlineExceededError),
    (OperationalError("connection refused"), UnavailableError),
    (DatabaseError("Code: 62. Syntax error", code=62, name="SYNTAX_ERROR"), RunstreamError),
])
def test_clickhouse_errors_are_mapped_by_name(error: Exception, expected: type) -> None:
    mapped = ClickHouseRepository("chdb:///never-opened", "db")._error(error, "query")
    assert type(mapped) is expected


def test_missing_tables_say_the_consumer_creates_them() -> None:
    error = DatabaseError("Code: 60. Unknown table", code=60, name="UNKNOWN_TABLE")
    mapped = ClickHouseRepository("chdb:///never-opened", "db")._error(error, "query")
    assert "not in ClickHouse database 'db' yet" in str(mapped)


class _Answering:
    """A client answering the parts read (SERIES_PARTS_SQL) with ``engine`` and one part
    and the summaries' read (SUSPECT_RANKS_SQL) with ``suspects``, and counting the reads
    of the summaries, of the points (REPEATED_RANKS_SQL) and of the parts it is sent."""

    def __init__(self, engine: str, suspects: list[int]) -> None:
        self.engine, self.suspects = engine, suspects
        self.summary_reads = self.checks = self.part_reads = 0

    def query(self, sql: str, **_: object) -> object:
        class Result:
            result_rows: list[tuple[object, ...]] = []
            result_columns: list[list[object]] = [[], [], []]

        if "_part" in sql:
            self.part_reads += 1
            Result.result_rows = [(0, "uuid-1", self.engine), (1, "all_1_1_0", "")]
        elif "groupBitmapMerge(steps)" in sql:  # SUSPECT_RANKS_SQL
            self.summary_reads += 1
            Result.result_rows = [(k,) for k in self.suspects]
        elif "HAVING count() !=" in sql:  # REPEATED_RANKS_SQL
            self.checks += 1
        return Result()


@pytest.mark.parametrize(("engine", "suspects", "checks", "part_reads"), [
    ("ReplacingMergeTree", [3], 1, 3),  # a local table: kept while its parts are the same
    # Shards' part names may coincide: checked at every request, and the parts are read
    # only once, to learn the engine.
    ("Distributed", [3], 3, 1),
    # No suspect in the summaries: neither the points nor their parts are read.
    ("ReplacingMergeTree", [], 0, 0),
])
def test_the_repeated_rank_check_is_kept_only_for_a_local_table(
        engine: str, suspects: list[int], checks: int, part_reads: int) -> None:
    repo = ClickHouseRepository("chdb:///never-opened", "db")
    client = _Answering(engine, suspects)
    repo._local.client = client
    for _ in range(3):
        repo.aggregate_points("r1", "loss", [], "mean", -1, 10)
    assert client.summary_reads == 3
    assert client.checks == checks
    assert client.part_reads == part_reads
