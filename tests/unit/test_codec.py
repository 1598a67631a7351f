"""The codec: both encodings carry every event type losslessly and reject garbage clearly."""

from __future__ import annotations

import pytest

from runstream.proto import codec
from runstream.proto.errors import DecodeError, InvalidArgumentError
from runstream.proto.v1 import events_pb2 as pb
from tests.factories import every_event_type, full_envelope


@pytest.mark.parametrize("encoding", ["protobuf", "avro"])
def test_every_event_type_round_trips(encoding: str) -> None:
    for event in every_event_type():
        data = codec.encode(event, encoding)
        back = codec.decode(data, codec.CONTENT_TYPES[encoding])
        # Compare serialized forms: NaN != NaN would fail a message comparison.
        assert back.SerializeToString(deterministic=True) == event.SerializeToString(
            deterministic=True
        ), event.WhichOneof("body")


def test_avro_and_protobuf_decode_to_the_same_event() -> None:
    for event in every_event_type():
        via_avro = codec.decode(codec.encode(event, "avro"))
        via_pb = codec.decode(codec.encode(event, "protobuf"))
        assert via_avro.SerializeToString(deterministic=True) == via_pb.SerializeToString(
            deterministic=True
        )


def test_avro_is_single_object_encoding() -> None:
    data = codec.encode(every_event_type()[0], "avro")
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.avro_fingerprint()
    assert len(codec.avro_fingerprint()) == 8


def test_encoding_is_sniffed_without_header() -> None:
    event = every_event_type()[2]
    assert codec.decode(codec.encode(event, "avro")).metrics.steps[:] == [0, 0, 1, 1]
    assert codec.encoding_of(None, codec.encode(event, "avro")) == "avro"
    assert codec.encoding_of(None, codec.encode(event, "protobuf")) == "protobuf"


def test_every_avro_field_has_a_protobuf_twin() -> None:
    """The .avsc and the .proto name the same fields, message by message."""
    schema = codec.avro_schema()
    top = {f["name"] for f in schema["fields"]}
    proto_top = {f.name for f in pb.RunEvent.DESCRIPTOR.fields if f.containing_oneof is None}
    assert top == proto_top | {"body"}
    branches = next(f["type"] for f in schema["fields"] if f["name"] == "body")
    for branch in branches:
        short = branch["name"].rpartition(".")[2]
        descriptor = pb.DESCRIPTOR.message_types_by_name[short]
        assert {f["name"] for f in branch["fields"]} == {f.name for f in descriptor.fields}


@pytest.mark.parametrize(
    ("data", "content_type", "reason"),
    [
        (b"\xff\xff\xff\xff", None, "not a protobuf"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", None, "fingerprint"),
        (b"hello", "application/json", "unknown content-type"),
        (b"\x00\x01", "application/avro-soe", "single-object marker"),
    ],
)
def test_garbage_raises_decode_error(data: bytes, content_type: str | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(data, content_type)


def test_truncated_avro_raises_decode_error() -> None:
    data = codec.encode(every_event_type()[2], "avro")
    with pytest.raises(DecodeError):
        codec.decode(data[:-5])


def test_unknown_encoding_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError):
        codec.encode(full_envelope(), "json")


def test_event_without_body_cannot_be_avro_encoded() -> None:
    with pytest.raises(InvalidArgumentError, match="body"):
        codec.encode(full_envelope(), "avro")


def test_avro_written_with_an_earlier_schema_still_decodes() -> None:
    """A spool file written by an older SDK (before RunFinished counted drops) decodes
    with the current codec: the writer's schema is found by fingerprint and resolved
    against the current one, whose new fields take their defaults."""
    import io
    import json
    from importlib import resources

    import fastavro

    name = "events-af599d6c4450d26c.avsc"
    old = json.loads(resources.files("runstream.proto.v1").joinpath(name).read_text())
    event = full_envelope()
    event.run_finished.status = pb.FAILED
    event.run_finished.error = "boom"
    datum = codec._message_to_avro(event)
    datum["body"].pop("points_logged")
    datum["body"].pop("dropped")
    buf = io.BytesIO()
    buf.write(codec.AVRO_SOE_MAGIC + bytes.fromhex("af599d6c4450d26c"))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), datum)
    back = codec.decode(buf.getvalue(), codec.AVRO_CONTENT_TYPE)
    assert back.run_finished.status == pb.FAILED and back.run_finished.error == "boom"
    assert back.run_finished.points_logged == 0 and not back.run_finished.dropped
    assert set(codec.avro_writer_schemas()) == {
        codec.avro_fingerprint(), bytes.fromhex("af599d6c4450d26c"),
        bytes.fromhex("d979ed03066043da"), bytes.fromhex("fe5f5dc9aced79c0")}


#: RunStarted fields added after the d979ed03066043da schema (attempts, resume, fork).
_LATER_RUN_STARTED_FIELDS = ("restart", "resume", "fork_run_id", "fork_step")


def test_run_started_written_before_the_launcher_was_recorded_still_decodes() -> None:
    """A RunStarted from an SDK before argv, launcher, shape, cwd and script were
    recorded decodes with them empty (so reproduce knows to fall back), the rest intact."""
    import io
    import json
    from importlib import resources

    import fastavro

    name = "events-d979ed03066043da.avsc"
    old = json.loads(resources.files("runstream.proto.v1").joinpath(name).read_text())
    assert codec._fingerprint(old).hex() == "d979ed03066043da" != codec.avro_fingerprint().hex()
    event = every_event_type()[0]
    datum = codec._message_to_avro(event)
    for key in ("argv", "launcher", "nnodes", "nproc_per_node", "runstream_editable"):
        datum["body"]["env"].pop(key)
    for key in ("cwd", "script"):
        datum["body"]["code"].pop(key)
    for key in _LATER_RUN_STARTED_FIELDS:
        datum["body"].pop(key)
    buf = io.BytesIO()
    buf.write(codec.AVRO_SOE_MAGIC + bytes.fromhex("d979ed03066043da"))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), datum)
    back = codec.decode(buf.getvalue(), codec.AVRO_CONTENT_TYPE)
    expected = pb.RunEvent()
    expected.CopyFrom(event)
    for key in ("argv", "launcher", "nnodes", "nproc_per_node", "runstream_editable"):
        expected.run_started.env.ClearField(key)
    for key in ("cwd", "script"):
        expected.run_started.code.ClearField(key)
    for key in _LATER_RUN_STARTED_FIELDS:
        expected.run_started.ClearField(key)
    assert back == expected
    assert back.run_started.env.command == "train.py --lr 0.1"
    assert list(back.run_started.env.argv) == [] and back.run_started.env.launcher == ""


@pytest.mark.parametrize("encoding", ["protobuf", "avro"])
def test_the_recorded_launch_round_trips(encoding: str) -> None:
    from tests.factories import recorded_launch_started

    event = recorded_launch_started(rank=2)
    back = codec.decode(codec.encode(event, encoding), codec.CONTENT_TYPES[encoding])
    assert back == event
    assert list(back.run_started.env.argv) == ["train.py", "--name", "two words"]
    assert (back.run_started.code.cwd, back.run_started.env.nproc_per_node) == ("experiments", 4)
