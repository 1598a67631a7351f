"""Archive, notes and changes through the real engine and gRPC: Annotation events as the
consumer writes them, SearchRuns' views, GetRun's notes and changes, ListExperiments."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from runstream.proto.v1 import events_pb2 as pb
from runstream.proto.v1 import query_pb2, query_pb2_grpc
from runstream.query.client import Client
from tests.factories import TS, annotation_event, ids, seed_through_consumer, started_event


def seed(ch: Any) -> None:
    events = [started_event(f"run-{i}", 0, 1, TS + i * 1_000, producer=f"p{i}")
              for i in range(4)]
    events += [
        annotation_event("run-1", TS + 10_000, producer="cli-a", archive=pb.ARCHIVE),
        annotation_event("run-2", TS + 10_000, producer="cli-b", archive=pb.ARCHIVE),
        annotation_event("run-2", TS + 20_000, producer="cli-c", archive=pb.RESTORE,
                         user="bob", host="lab-2"),
        annotation_event("run-3", TS + 5_000, producer="cli-d", tags={"reviewed": "yes"},
                         note="lr too high after step 40 ☃"),
        annotation_event("run-3", TS + 6_000, producer="cli-e", note="second look: fine"),
        annotation_event("run-3", TS + 7_000, producer="cli-f", archive=pb.ARCHIVE),
    ]
    seed_through_consumer(ch, events)


def test_search_leaves_archived_runs_out_unless_asked(ch: Any, client: Client) -> None:
    seed(ch)
    assert ids(client.search_runs("exp")[0]) == ["run-2", "run-0"]  # run-2 was restored
    archived = client.search_runs("exp", view="ARCHIVED_ONLY")[0]
    assert ids(archived) == ["run-3", "run-1"] and all(r.archived for r in archived)
    every = client.search_runs("exp", view="ALL")[0]
    assert [(r.run_id, r.archived) for r in every] == [
        ("run-3", True), ("run-2", False), ("run-1", True), ("run-0", False)]
    assert ids(client.iter_runs("exp", page_size=1, view="ALL")) == ids(every)
    # A filter combines with the view, and tags set by an annotation are tags.
    assert ids(client.search_runs("exp", filter="tags.reviewed = 'yes'")[0]) == []
    assert ids(client.search_runs("exp", filter="tags.reviewed = 'yes'", view="ALL")[0]) == [
        "run-3"]
    with pytest.raises(ValueError, match="view"):
        client.search_runs("exp", view="archived")


def test_a_page_token_belongs_to_its_view(ch: Any, client: Client) -> None:
    seed(ch)
    _, token = client.search_runs("exp", page_size=1, view="ALL")
    from runstream.proto.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="different request"):
        client.search_runs("exp", page_size=1, page_token=token)


def test_get_run_shows_notes_changes_and_the_archive_state(ch: Any, client: Client) -> None:
    seed(ch)
    run = client.get_run("run-3")
    assert run.info.archived
    assert [(n.text, n.user, n.host, n.ts_ms) for n in run.notes] == [
        ("lr too high after step 40 ☃", "ada", "ws-1", TS + 5_000),
        ("second look: fine", "ada", "ws-1", TS + 6_000)]
    assert [(c.what, c.ts_ms) for c in run.changes] == [
        ("tag reviewed=yes", TS + 5_000), ("note", TS + 5_000), ("note", TS + 6_000),
        ("archive", TS + 7_000)]
    assert [(t.key, t.value) for t in run.tags] == [("reviewed", "yes")]
    restored = client.get_run("run-2")
    assert not restored.info.archived
    assert [(c.what, c.user, c.host) for c in restored.changes] == [
        ("archive", "ada", "ws-1"), ("restore", "bob", "lab-2")]
    plain = client.get_run("run-0")
    assert (plain.info.archived, plain.notes, plain.changes) == (False, (), ())


def test_list_experiments_counts_the_runs_search_lists(ch: Any, client: Client) -> None:
    seed(ch)
    [exp] = client.list_experiments()
    assert (exp.experiment, exp.run_count, exp.last_start_ms) == ("exp", 2, TS + 3_000)


def test_an_unknown_view_number_is_invalid_argument(ch: Any,
                                                    server: tuple[grpc.Server, int]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = query_pb2_grpc.QueryServiceStub(channel)
        ok = stub.SearchRuns(query_pb2.SearchRunsRequest(view=query_pb2.ARCHIVED_ONLY),
                             timeout=30)
        assert list(ok.runs) == []
        with pytest.raises(grpc.RpcError) as raised:
            stub.SearchRuns(query_pb2.SearchRunsRequest(view=9), timeout=30)  # type: ignore[arg-type]
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetRun(query_pb2.GetRunRequest(run_id="nope", all_attempts=True), timeout=30)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
