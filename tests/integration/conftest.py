"""Fixtures of the query tests: a fresh database with Runstream's tables in the session's
embedded ClickHouse, an in-process gRPC query server over it (port 0), and a Client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import grpc
import pytest

from runstream.proto import tables
from runstream.query.client import Client
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService


@pytest.fixture
def ch(chdb_dsn: str, ch_database: str) -> Iterator[Any]:
    bootstrap = clickhouse_connect.get_client(dsn=chdb_dsn)
    for statement in tables.all_ddl(ch_database):
        bootstrap.command(statement)
    bootstrap.close()
    client = clickhouse_connect.get_client(dsn=chdb_dsn, database=ch_database)
    yield client
    client.close()


@pytest.fixture
def server(ch: Any, chdb_dsn: str, ch_database: str) -> Iterator[tuple[grpc.Server, int]]:
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    grpc_server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4)
    grpc_server.start()
    yield grpc_server, port
    stop(grpc_server, 1.0)
    repository.close()


@pytest.fixture
def client(server: tuple[grpc.Server, int]) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server[1]}", timeout_s=60) as c:
        yield c
