"""The one module that turns run events into bytes and back.

Two encodings share one topic; a record header (``content-type``) says which:

* protobuf: ``RunEvent.SerializeToString()``;
* Avro single-object encoding: ``C3 01``, the 8-byte little-endian CRC-64-AVRO
  fingerprint of ``events.avsc``'s canonical form, then the schemaless datum.

The Avro side is derived from the protobuf descriptors (field names match one to one),
so a field added to events.proto and events.avsc travels without codec changes; the
round-trip test in tests/unit/test_codec.py proves the two schemas stay equivalent.
All functions are pure and thread-safe.
"""

from __future__ import annotations

import io
import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from runstream.proto.errors import DecodeError, InvalidArgumentError
from runstream.proto.v1 import events_pb2

PROTOBUF = "protobuf"
AVRO = "avro"

CONTENT_TYPE_HEADER = "content-type"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf; messageType=runstream.v1.RunEvent"
AVRO_CONTENT_TYPE = "application/avro-soe; record=runstream.v1.RunEvent"
CONTENT_TYPES = {PROTOBUF: PROTOBUF_CONTENT_TYPE, AVRO: AVRO_CONTENT_TYPE}

AVRO_SOE_MAGIC = b"\xc3\x01"
_AVRO_NAMESPACE = "runstream.v1."


#: Earlier versions of events.avsc, kept as ``events-<fingerprint hex>.avsc`` so that
#: Avro events written by an older SDK (a spool file from months ago) still decode:
#: fastavro resolves them against the current schema, whose new fields have defaults.
_SCHEMA_FILE = "events.avsc"


def _schema_text(name: str) -> str:
    return resources.files("runstream.proto.v1").joinpath(name).read_text("utf-8")


def _fingerprint(schema_json: Any) -> bytes:
    canonical = fastavro.schema.to_parsing_canonical_form(schema_json)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


@cache
def avro_schema() -> dict[str, Any]:
    """The parsed Avro schema of RunEvent (events.avsc)."""
    parsed: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]
        json.loads(_schema_text(_SCHEMA_FILE)))
    return parsed


@cache
def avro_fingerprint() -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, little-endian (as in Java)."""
    return _fingerprint(json.loads(_schema_text(_SCHEMA_FILE)))


@cache
def avro_writer_schemas() -> dict[bytes, dict[str, Any]]:
    """Every schema an event may have been written with, by fingerprint: the current one
    and the earlier ones shipped beside it. A historical file whose name does not match
    its content's fingerprint is a packaging bug and raises at first use."""
    out = {avro_fingerprint(): avro_schema()}
    folder = resources.files("runstream.proto.v1")
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith("events-") and name.endswith(".avsc")):
            continue
        schema_json = json.loads(entry.read_text("utf-8"))
        fingerprint = _fingerprint(schema_json)
        if fingerprint.hex() != name[len("events-"):-len(".avsc")]:
            raise RuntimeError(f"{name}: its fingerprint is {fingerprint.hex()}")
        out[fingerprint] = fastavro.parse_schema(schema_json)  # type: ignore[assignment]
    return out


def encoding_of(content_type: str | None, data: bytes) -> str:
    """Which encoding a message uses: the header if present, else sniff the Avro magic."""
    if content_type:
        if content_type.startswith("application/x-protobuf"):
            return PROTOBUF
        if content_type.startswith("application/avro"):
            return AVRO
        raise DecodeError(f"unknown content-type {content_type[:100]!r}")
    return AVRO if data[:2] == AVRO_SOE_MAGIC else PROTOBUF


def encode(event: events_pb2.RunEvent, encoding: str = PROTOBUF) -> bytes:
    """Serialize one event. Raises InvalidArgumentError for an unknown encoding."""
    if encoding == PROTOBUF:
        return event.SerializeToString()
    if encoding == AVRO:
        buf = io.BytesIO()
        buf.write(AVRO_SOE_MAGIC)
        buf.write(avro_fingerprint())
        fastavro.schemaless_writer(buf, avro_schema(), _message_to_avro(event))
        return buf.getvalue()
    raise InvalidArgumentError(f"unknown encoding {encoding!r}: expected protobuf or avro")


def decode(data: bytes, content_type: str | None = None) -> events_pb2.RunEvent:
    """Parse one event. Raises DecodeError (with the reason) for anything malformed."""
    encoding = encoding_of(content_type, data)
    if encoding == PROTOBUF:
        event = events_pb2.RunEvent()
        try:
            event.ParseFromString(data)
        except (ProtobufDecodeError, RuntimeError, ValueError) as e:
            raise DecodeError(f"not a protobuf RunEvent: {e}") from e
        return event
    if data[:2] != AVRO_SOE_MAGIC:
        raise DecodeError("Avro message without the single-object marker C3 01")
    writer = avro_writer_schemas().get(data[2:10])
    if writer is None:
        raise DecodeError(f"unknown Avro schema fingerprint {data[2:10].hex()}")
    buf = io.BytesIO(data)
    buf.seek(10)
    try:
        record: Any = fastavro.schemaless_reader(
            buf, writer, avro_schema(), return_record_name=True
        )
    except Exception as e:  # fastavro raises many types on corrupt input
        raise DecodeError(f"not an Avro RunEvent: {type(e).__name__}: {e}") from e
    if buf.tell() != len(data):
        raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the Avro datum")
    try:
        event = events_pb2.RunEvent()
        _avro_to_message(record, event)
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise DecodeError(f"Avro RunEvent does not fit the protobuf schema: {e}") from e
    return event


# --- protobuf <-> Avro datum, driven by the protobuf descriptors ----------------------

def _message_to_avro(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    descriptor: Any = msg.DESCRIPTOR
    for field in descriptor.fields:
        if field.containing_oneof is not None:
            continue
        out[field.name] = _value_to_avro(field, getattr(msg, field.name))
    for oneof in descriptor.oneofs:
        which = msg.WhichOneof(oneof.name)
        if which is None:
            raise InvalidArgumentError(f"{descriptor.name}.{oneof.name} is not set")
        sub = getattr(msg, which)
        # fastavro picks the union branch of a record by its "-type" key.
        datum = _message_to_avro(sub)
        datum["-type"] = _AVRO_NAMESPACE + sub.DESCRIPTOR.name
        out[oneof.name] = datum
    return out


def _value_to_avro(field: Any, value: Any) -> Any:
    if field.is_repeated:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return [_message_to_avro(v) for v in value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            return [field.enum_type.values_by_number[v].name for v in value]
        return list(value)
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message_to_avro(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    return value


def _avro_to_message(record: dict[str, Any], msg: Message) -> None:
    descriptor: Any = msg.DESCRIPTOR
    for oneof in descriptor.oneofs:
        name, datum = record[oneof.name]
        short = name.rpartition(".")[2]
        for field in oneof.fields:
            if field.message_type.name == short:
                _avro_to_message(datum, getattr(msg, field.name))
                # An empty submessage (Heartbeat) must still select its branch.
                getattr(msg, field.name).SetInParent()
                break
        else:
            raise ValueError(f"unknown {oneof.name} branch {name}")
    for field in descriptor.fields:
        if field.containing_oneof is not None:
            continue
        value = record[field.name]
        if field.is_repeated:
            target = getattr(msg, field.name)
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    _avro_to_message(item, target.add())
            elif field.type == FieldDescriptor.TYPE_ENUM:
                target.extend(field.enum_type.values_by_name[v].number for v in value)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _avro_to_message(value, getattr(msg, field.name))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            number = field.enum_type.values_by_name[value].number
            if number:
                setattr(msg, field.name, number)
        elif value != field.default_value or value != value:  # NaN is never equal
            # Setting a default would mark an absent submessage present; skip it.
            setattr(msg, field.name, value)
