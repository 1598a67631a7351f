"""ClickHouseSink's error classification: what is retried, what is raised at once."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError

from runstream.consumer.sink import is_transient


def test_is_transient_classification():
    assert is_transient(OperationalError("x"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ProgrammingError("syntax"))
    assert not is_transient(ValueError("bad column"))


@pytest.mark.parametrize(("name", "transient"), [
    ("TOO_MANY_PARTS", True), ("MEMORY_LIMIT_EXCEEDED", True), ("NETWORK_ERROR", True),
    ("TIMEOUT_EXCEEDED", True), ("KEEPER_EXCEPTION", True),
    ("SYNTAX_ERROR", False), ("UNKNOWN_TABLE", False), ("TYPE_MISMATCH", False), (None, False),
])
def test_server_errors_are_classified_by_name(name: str | None, transient: bool) -> None:
    error = DatabaseError(f"Code: 1. DB::Exception: x. ({name})", code=1, name=name)
    assert is_transient(error) is transient
