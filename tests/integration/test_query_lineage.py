"""GetLineage through the real engine and gRPC: which runs produced content with a digest
(each with its run as GetRun returns it) and which used it as an input, with input digests
stored the way runstream.log_input writes them ("sha256:<hex>") or as given (bare hex)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.client import Client
from tests.factories import TS, envelope, seed_through_consumer, started_event

SHA = "ab" * 32


def artifact(run_id: str, rank: int, name: str, sha: str, ts_ms: int) -> Any:
    e = envelope(run_id=run_id, rank=rank, seq=5, producer_id=f"{run_id}-{rank}", ts_ms=ts_ms)
    e.artifact.name, e.artifact.uri = name, f"file:///store/sha256/{sha[:2]}/{sha}"
    e.artifact.size_bytes, e.artifact.sha256 = 4096, sha
    return e


def used(run_id: str, name: str, digest: str, ts_ms: int) -> Any:
    e = envelope(run_id=run_id, rank=0, seq=6, producer_id=f"{run_id}-0", ts_ms=ts_ms)
    e.input.name, e.input.uri, e.input.digest, e.input.role = (
        name, "file:///data/model.npz", digest, "train")
    return e


def test_lineage_of_an_artifact(ch: Any, client: Client) -> None:
    events = [started_event("train-1", r, 2, TS + r, producer=f"train-1-{r}") for r in range(2)]
    # Both ranks logged the same file, and a replay: one match, the lowest rank.
    events += [artifact("train-1", r, "model.npz", SHA, TS + 100 + r) for r in range(2)]
    events += [artifact("train-1", 0, "model.npz", SHA, TS + 100)]
    events += [started_event("train-2", 0, 1, TS + 500, producer="train-2-0"),
               artifact("train-2", 0, "best.npz", SHA, TS + 600),
               artifact("train-2", 0, "other.npz", "cd" * 32, TS + 601)]
    events += [started_event("eval-1", 0, 1, TS + 1_000, producer="eval-1-0"),
               used("eval-1", "model", f"sha256:{SHA}", TS + 1_001),  # as log_input writes it
               started_event("eval-2", 0, 1, TS + 2_000, producer="eval-2-0"),
               used("eval-2", "model", SHA, TS + 2_001),  # a digest given as bare hex
               started_event("eval-3", 0, 1, TS + 3_000, producer="eval-3-0"),
               used("eval-3", "model", "sha256:" + "cd" * 32, TS + 3_001)]
    seed_through_consumer(ch, events)

    lineage = client.get_lineage(SHA)
    assert [(m.run_id, m.name, m.rank, m.size_bytes, m.ts_ms) for m in lineage.produced_by] == [
        ("train-1", "model.npz", 0, 4096, TS + 100), ("train-2", "best.npz", 0, 4096, TS + 600)]
    first = lineage.produced_by[0]
    assert first.uri.endswith(SHA) and first.run is not None
    assert first.run == client.get_run("train-1")  # the run as GetRun returns it
    assert first.run.info.world_size == 2 and first.run.env.launcher == "torchrun"
    assert [(m.run_id, m.name, m.ts_ms, m.run) for m in lineage.used_by] == [
        ("eval-1", "model", TS + 1_001, None), ("eval-2", "model", TS + 2_001, None)]

    unknown = client.get_lineage("ef" * 32)
    assert unknown.produced_by == () and unknown.used_by == ()


@pytest.mark.parametrize("bad", ["", "AB" * 32, "ab" * 31, "sha256:" + "ab" * 32, "zz" * 32])
def test_a_malformed_digest_is_invalid_argument(ch: Any, client: Client, bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="64 lowercase hex"):
        client.get_lineage(bad)


def test_lineage_over_the_raw_stub(ch: Any, server: tuple[grpc.Server, int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        response = stub.GetLineage(query_pb2.GetLineageRequest(sha256=SHA), timeout=30)
        assert list(response.produced_by) == [] and list(response.used_by) == []
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetLineage(query_pb2.GetLineageRequest(sha256="nope"), timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
