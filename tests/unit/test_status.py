"""runstream.proto.status: the status names and what the two sets mean."""

from __future__ import annotations


def test_status_sets_are_run_status_names() -> None:
    from runstream.proto import status
    from runstream.proto.v1 import events_pb2

    names = set(events_pb2.RunStatus.keys())
    assert status.ENDED_OR_CRASHED <= names and status.UNSPECIFIED in names
    assert status.ENDED == {"FINISHED", "FAILED", "KILLED"}
    assert status.ENDED_OR_CRASHED - status.ENDED == {status.CRASHED}
