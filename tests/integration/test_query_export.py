"""ExportMetricHistory, the default path of ``Client.metric_history``, through the real
engine and gRPC: the same points as the paged GetMetricHistory, in chunks, streamed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from runstream.proto import tables
from runstream.proto.errors import InvalidArgumentError, NotFoundError
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.client import Client
from runstream.query.limits import MAX_EXPORT_CHUNK
from runstream.query.models import MetricHistory
from runstream.query.repository import ClickHouseRepository
from runstream.query.service import QueryService
from tests.factories import T0, insert, points, start_rank


def paged(client: Client, run_id: str, key: str, page_size: int, **kw: Any) -> MetricHistory:
    """Every page of GetMetricHistory, joined, as clients that page see them."""
    cols: tuple[list[Any], ...] = ([], [], [], [])
    token = ""
    while True:
        page = client.metric_history(run_id, key, page_size=page_size, page_token=token, **kw)
        for col, part in zip(cols, columns(page), strict=True):
            col += part
        token = page.next_page_token
        if not token:
            return MetricHistory(run_id=run_id, key=key, ranks=cols[0], steps=cols[1],
                                 values=cols[2], ts_ms=cols[3])


def columns(h: MetricHistory) -> tuple[list[Any], ...]:
    return h.ranks, h.steps, h.values, h.ts_ms


def seed(ch: Any) -> None:
    start_rank(ch, "run-x", 0, 4, T0)
    for rank in range(4):
        insert(ch, tables.METRICS, points("run-x", "loss", rank, range(2500)))
    # A replay of part of rank 1 (same identity: collapsed), a second value at one step
    # of rank 2 (new seq: kept), another key.
    insert(ch, tables.METRICS, points("run-x", "loss", 1, range(2500))[300:1200])
    insert(ch, tables.METRICS, points("run-x", "loss", 2, range(5, 6), seq=99, ts0=T0 + 50))
    insert(ch, tables.METRICS, points("run-x", "other", 0, range(10)))


def test_default_export_is_exactly_the_paged_history(ch: Any, client: Client) -> None:
    seed(ch)
    default = client.metric_history("run-x", "loss")
    assert len(default) == 10_001 and default.next_page_token == ""
    assert columns(default) == columns(paged(client, "run-x", "loss", 777))
    keys = list(zip(default.ranks, default.steps, default.ts_ms, strict=True))
    assert keys == sorted(keys)

    some = client.metric_history("run-x", "loss", ranks=[3, 1])
    assert columns(some) == columns(paged(client, "run-x", "loss", 500, ranks=[1, 3]))
    assert sorted(set(some.ranks)) == [1, 3] and len(some) == 5000

    for aggregate in ("mean", "min", "max"):
        streamed = client.metric_history("run-x", "loss", aggregate=aggregate)
        assert streamed.ranks == [] and streamed.aggregate == aggregate
        assert columns(streamed) == columns(
            paged(client, "run-x", "loss", 600, aggregate=aggregate))
        assert streamed.steps == list(range(2500))

    # The paged RPC and its tokens still work for clients that page.
    first = client.metric_history("run-x", "loss", page_size=100, page_token="")
    assert len(first) == 100 and first.next_page_token


def test_a_series_larger_than_one_chunk_streams_in_chunks(
    ch: Any, client: Client, server: tuple[grpc.Server, int], chdb_dsn: str, ch_database: str
) -> None:
    n = 2 * MAX_EXPORT_CHUNK + 1234
    start_rank(ch, "long", 0, 1, T0)
    ch.insert(tables.METRICS.name, [
        ["long"] * n, ["loss"] * n, [0] * n, list(range(n)), [s * 0.25 for s in range(n)],
        [T0 + s for s in range(n)], ["p"] * n, [1] * n, list(range(n)),
    ], column_names=["run_id", "key", "rank", "step", "value", "ts_ms", "producer_id", "seq",
                     "idx"], column_oriented=True)
    history = client.metric_history("long", "loss")
    assert history.steps == list(range(n)) and history.values[-1] == (n - 1) * 0.25
    assert history.ts_ms == [T0 + s for s in range(n)] and set(history.ranks) == {0}

    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        request = query_pb2.ExportMetricHistoryRequest(run_id="long", key="loss")
        sizes = [len(c.steps) for c in stub.ExportMetricHistory(request, timeout=60)]
        assert len(sizes) >= 3 and max(sizes) <= MAX_EXPORT_CHUNK and sum(sizes) == n
        # A stream abandoned after one chunk leaves its server thread fit for the next call.
        for _ in range(6):
            call = stub.ExportMetricHistory(request, timeout=60)
            next(call)
            call.cancel()
    for _ in range(6):
        assert len(client.metric_history("long", "loss", ranks=[0])) == n

    # The service re-chunks blocks to any chunk size, and the chunks join losslessly.
    repository = ClickHouseRepository(chdb_dsn, ch_database)
    try:
        chunks = list(QueryService(repository).export_metric_history(
            "long", "loss", chunk_points=10_000))
    finally:
        repository.close()
    assert max(len(c) for c in chunks) == 10_000
    assert [s for c in chunks for s in c.steps] == list(range(n))


def test_export_errors(ch: Any, client: Client, server: tuple[grpc.Server, int]) -> None:
    start_rank(ch, "run-e", 0, 1, T0)
    empty = client.metric_history("run-e", "missing")
    assert (len(empty), empty.next_page_token) == (0, "")
    with pytest.raises(NotFoundError):
        client.metric_history("ghost", "loss")
    with pytest.raises(InvalidArgumentError):
        client.metric_history("run-e", "")
    with pytest.raises(InvalidArgumentError):
        client.metric_history("bad run id!", "loss")
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        for request in (
            query_pb2.ExportMetricHistoryRequest(run_id="", key="loss"),
            query_pb2.ExportMetricHistoryRequest(run_id="run-e", key=""),
            query_pb2.ExportMetricHistoryRequest(run_id="run-e", key="loss",
                                                 aggregate=99),  # type: ignore[arg-type]
            query_pb2.ExportMetricHistoryRequest(run_id="run-e", key="loss",
                                                 ranks=list(range(70_000))),
        ):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.ExportMetricHistory(request, timeout=10))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
