"""The query server: health, reflection, token auth, deadlines, and how it fails."""

from __future__ import annotations

from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from runstream.proto.errors import UnauthenticatedError
from runstream.query.client import Client
from runstream.query.config import SERVICE_NAME
from runstream.query.repository import ClickHouseRepository
from runstream.query.server import build_server, stop
from runstream.query.service import QueryService
from tests.factories import seed_runs


def test_token_auth_guards_every_rpc_but_health(ch: Any, chdb_dsn: str, ch_database: str) -> None:
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    grpc_server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4,
                                     token="s3cret")
    grpc_server.start()
    try:
        target = f"127.0.0.1:{port}"
        with Client(target, token="") as anonymous, Client(target, token="wrong") as wrong:
            assert anonymous.healthy()
            for c in (anonymous, wrong):
                with pytest.raises(UnauthenticatedError):
                    c.search_runs()
                with pytest.raises(UnauthenticatedError):
                    c.list_experiments()
                with pytest.raises(UnauthenticatedError):
                    list(c.follow("x", timeout_s=10))
        with Client(target, token="s3cret") as good:
            assert good.search_runs()[0] == []
    finally:
        stop(grpc_server, 1.0)
        repository.close()


@pytest.fixture
def guarded(ch: Any, chdb_dsn: str, ch_database: str) -> Any:
    """A real query server with token "s3cret"; yields its port."""
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    grpc_server, port = build_server(QueryService(repository), "127.0.0.1:0", max_workers=4,
                                     token="s3cret")
    grpc_server.start()
    yield port
    stop(grpc_server, 1.0)
    repository.close()


def _list_services(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> set[str]:
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    replies = list(reflect.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata))
    return {s.name for s in replies[0].list_services_response.service}


def test_bearer_scheme_is_case_insensitive_and_reflection_needs_the_token(guarded: int) -> None:
    from runstream.proto.v1 import query_pb2, query_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{guarded}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for header in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"):
            stub.ListExperiments(query_pb2.ListExperimentsRequest(), timeout=10,
                                 metadata=(("authorization", header),))
            assert SERVICE_NAME in _list_services(channel, (("authorization", header),))
        for header in ("Bearer S3CRET", "Basic s3cret", "Bearers3cret", "s3cret", "Bearer"):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListExperiments(query_pb2.ListExperimentsRequest(), timeout=10,
                                     metadata=(("authorization", header),))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, header
        # Reflection is behind the token (grpcurl -H 'authorization: Bearer ...'); health is not.
        with pytest.raises(grpc.RpcError) as refused:
            _list_services(channel, ())
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_deadlines_are_honoured(ch: Any, server: tuple[grpc.Server, int]) -> None:
    seed_runs(ch, 3)
    from runstream.proto.errors import DeadlineExceededError

    with Client(f"127.0.0.1:{server[1]}", timeout_s=0.001) as hurried, \
            pytest.raises(DeadlineExceededError):
        hurried.search_runs(filter="metrics.val_acc > 0")


def test_health_is_serving_and_reflection_lists_the_service(
    server: tuple[grpc.Server, int],
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = list(reflect.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in replies[0].list_services_response.service}
        assert SERVICE_NAME == "runstream.v1.QueryService"
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names


def test_start_server_without_tables_answers_unavailable(
    chdb_dsn: str, ch_database: str
) -> None:
    from runstream.proto.errors import UnavailableError
    from runstream.query.config import QueryConfig
    from runstream.query.server import start_server

    config = QueryConfig(addr="127.0.0.1:0", clickhouse_dsn=chdb_dsn, database=ch_database)
    # A generous deadline: the answer takes ~2.5 s on an idle machine (the embedded engine's
    # first queries in this server), and CI runs the Kafka cluster tests beside it.
    with start_server(config) as running, Client(running.address, timeout_s=120) as c:
        assert running.address == f"127.0.0.1:{running.port}" and running.port > 0
        with pytest.raises(UnavailableError, match="not in ClickHouse"):
            c.get_run("r1")
    assert running.wait(0)
    running.stop()  # idempotent


class _BrokenService(QueryService):
    def get_run(self, run_id: str) -> Any:
        raise KeyError("secret internals")


def test_unexpected_errors_are_internal_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from runstream.proto.errors import RunstreamError

    grpc_server, port = build_server(_BrokenService(cast(Any, None)), "127.0.0.1:0")
    grpc_server.start()
    try:
        with Client(f"127.0.0.1:{port}") as c, pytest.raises(RunstreamError) as raised:
            c.get_run("r1")
        assert type(raised.value) is RunstreamError
        assert "secret" not in str(raised.value) and "GetRun" in str(raised.value)
        assert "secret internals" in caplog.text
    finally:
        stop(grpc_server, 0)


def test_unreachable_server_is_unavailable() -> None:
    from runstream.proto.errors import UnavailableError
    from tests.conftest import free_port

    with Client(f"127.0.0.1:{free_port()}", timeout_s=5) as c, pytest.raises(UnavailableError):
        c.get_run("r1")
