"""In-memory stand-ins for the pipeline's source, ClickHouse client and dead-letter sink
(unit tests of the pipeline logic only; integration tests use the real parts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from runstream.consumer.sources import Message, Position
from runstream.proto import tables

TOPIC = "events"


class FakeSource:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = list(messages)
        self.commits: list[dict[Position, int]] = []
        self.log: list[str] = []
        self.closed = False
        self.revoke: Callable[[], None] | None = None

    def poll(self, timeout_s: float, max_records: int) -> list[Message]:
        out, self.messages = self.messages[:max_records], self.messages[max_records:]
        return out

    def commit(self, positions: Mapping[Position, int]) -> None:
        self.log.append("commit")
        self.commits.append(dict(positions))

    def caught_up(self) -> bool:
        return not self.messages

    def set_revoke_callback(self, callback: Callable[[], None]) -> None:
        self.revoke = callback

    def offsets(self) -> dict[Position, tuple[int, int]]:
        return {(TOPIC, 0): (0, len(self.messages))}

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """Stands in for a clickhouse-connect client; fails the first `failures` inserts."""

    def __init__(self, failures: list[Exception] | None = None,
                 log: list[str] | None = None) -> None:
        self.failures = list(failures or [])
        self.inserts: list[tuple[str, list[list[Any]], str]] = []
        self.log = log if log is not None else []

    def insert(self, table: str, data: list[list[Any]], *, column_names: list[str],
               column_type_names: list[str], column_oriented: bool, database: str,
               settings: dict[str, str]) -> None:
        assert column_oriented
        spec = next(t for t in tables.TABLES if t.name == table)
        assert column_names == list(spec.column_names)
        assert column_type_names == list(spec.insert_types)
        if self.failures:
            raise self.failures.pop(0)
        self.log.append(f"insert:{table}")
        self.inserts.append((table, [list(c) for c in data],
                             settings["insert_deduplication_token"]))

    def insert_arrow(self, table: str, data: Any, *, database: str,
                     settings: dict[str, Any]) -> None:
        spec = next(t for t in tables.TABLES if t.name == table)
        assert data.column_names == list(spec.column_names)
        if self.failures:
            raise self.failures.pop(0)
        self.log.append(f"insert:{table}")
        self.inserts.append((table, [c.to_pylist() for c in data.columns],
                             settings["insert_deduplication_token"]))

    def command(self, sql: str) -> None:
        pass

    def rows(self, table: str) -> int:
        return sum(len(cols[0]) for name, cols, _ in self.inserts if name == table)


class FakeDeadLetters:
    def __init__(self, log: list[str]) -> None:
        self.queued: list[tuple[Message, str]] = []
        self.flushed: list[tuple[Message, str]] = []
        self.log = log
        self.closed = False

    def add(self, message: Message, reason: str) -> None:
        self.queued.append((message, reason))

    def flush(self) -> None:
        self.log.append("dlq-flush")
        self.flushed.extend(self.queued)
        self.queued.clear()

    def close(self) -> None:
        self.flush()
        self.closed = True
