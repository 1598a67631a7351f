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


def test_check_store_notices_a_removed_or_replaced_store(tmp_path, caplog) -> None:
    import shutil

    from runstream.consumer.sink import ClickHouseSink, StoreLostError
    from runstream.proto import tables

    store = tmp_path / "chdb"
    store.mkdir()
    sink = ClickHouseSink(object(), "db")
    sink.check_store()  # before the schema is ensured: nothing to check
    sink.store_id = "abc"
    sink._mark_store(store)
    assert (store / tables.STORE_MARKER).read_text().strip() == "abc"
    sink.check_store()
    shutil.rmtree(store)
    store.mkdir()  # recreated at once, as chdb does on its next insert
    with pytest.raises(StoreLostError, match=str(store)):
        sink.check_store()
    with pytest.raises(StoreLostError):  # and stays lost
        sink.check_store()
    assert sum(r.levelname == "ERROR" for r in caplog.records) == 1
