"""The codec: both encodings carry every event type losslessly and reject garbage clearly."""

from __future__ import annotations

import math

import pytest

from runstream.proto import codec
from runstream.proto.errors import DecodeError, InvalidArgumentError
from runstream.proto.v1 import events_pb2 as pb

TS = 1_750_000_000_000


def envelope(seq: int = 1) -> pb.RunEvent:
    return pb.RunEvent(
        run_id="run-1", experiment="exp", rank=1, world_size=4, local_rank=1, node="node-a",
        producer_id="p" * 32, seq=seq, ts_ms=TS,
    )


def every_event_type() -> list[pb.RunEvent]:
    started = envelope(1)
    started.run_started.name = "lr=0.1"
    started.run_started.code.git_commit = "a" * 40
    started.run_started.code.git_dirty = True
    started.run_started.code.in_git_repo = True
    started.run_started.env.python_version = "3.11.7"
    started.run_started.env.cpu_count = 2
    started.run_started.env.command = "train.py --lr 0.1"
    started.run_started.env.cpu_model = "AMD EPYC"
    started.run_started.env.memory_bytes = 24 << 30
    started.run_started.env.packages.add(name="numpy", version="2.4.6")
    started.run_started.env.gpus.add(name="NVIDIA H100", memory_bytes=80 << 30)
    started.run_started.env.gpu_driver = "550.54"
    started.run_started.env.cuda_version = "12.4"
    started.run_started.code.diff_sha256 = "ef" * 32
    started.run_started.code.diff_uri = "file:///store/sha256/ef/" + "ef" * 32
    params = envelope(2)
    params.params.params.add(key="optim.lr", value="0.1", type=pb.FLOAT)
    params.params.params.add(key="epochs", value="3", type=pb.INT)
    params.params.params.add(key="amp", value="true", type=pb.BOOL)
    params.params.params.add(key="model", value="ünïcode ☃", type=pb.STRING)
    metrics = envelope(3)
    metrics.metrics.keys.extend(["loss", "acc"])
    metrics.metrics.key_index.extend([0, 1, 0, 1])
    metrics.metrics.steps.extend([0, 0, 1, 1])
    metrics.metrics.values.extend([2.5, math.nan, math.inf, -math.inf])
    metrics.metrics.ts_ms.extend([TS, TS, TS + 5, TS + 5])
    tags = envelope(4)
    tags.tags.tags.add(key="team", value="vision")
    artifact = envelope(5)
    artifact.artifact.name = "model.npz"
    artifact.artifact.uri = "file:///store/sha256/ab/" + "ab" * 32
    artifact.artifact.size_bytes = 12345
    artifact.artifact.sha256 = "ab" * 32
    inp = envelope(6)
    inp.input.name = "digits"
    inp.input.uri = "sklearn://digits"
    inp.input.digest = "sha256:" + "cd" * 32
    inp.input.role = "train"
    heartbeat = envelope(7)
    heartbeat.heartbeat.SetInParent()
    finished = envelope(8)
    finished.run_finished.status = pb.FAILED
    finished.run_finished.error = "Traceback ...\nValueError: boom"
    events = [started, params, metrics, tags, artifact, inp, heartbeat, finished]
    bodies = {e.WhichOneof("body") for e in events}
    assert bodies == {f.name for f in pb.RunEvent.DESCRIPTOR.oneofs_by_name["body"].fields}
    return events


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
        codec.encode(envelope(), "json")


def test_event_without_body_cannot_be_avro_encoded() -> None:
    with pytest.raises(InvalidArgumentError, match="body"):
        codec.encode(envelope(), "avro")
