"""Params and tags: flatten nested dicts, type values, check limits. Pure functions."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from runstream.proto import validation
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import MAX_PARAM_VALUE_LEN, MAX_TAG_VALUE_LEN


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"opt": {"lr": 0.1}} -> {"opt.lr": 0.1}. Keys must be strings."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"param key {key!r} is not a string")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def typed_value(key: str, value: Any) -> tuple[str, events_pb2.ParamType]:
    """(text, ParamType) of one param value.

    bool -> BOOL "true"/"false"; int -> INT; float -> FLOAT (repr, so it round-trips;
    nan/inf as "nan"/"inf"/"-inf"); str -> STRING; None -> STRING ""; anything else ->
    STRING, as JSON when it serialises (lists, tuples), else ``str(value)``.
    """
    if isinstance(value, bool):
        text, ptype = ("true" if value else "false"), events_pb2.BOOL
    elif isinstance(value, int):
        text, ptype = str(value), events_pb2.INT
    elif isinstance(value, float):
        text = repr(value) if math.isfinite(value) else str(value)
        ptype = events_pb2.FLOAT
    elif isinstance(value, str):
        text, ptype = value, events_pb2.STRING
    elif value is None:
        text, ptype = "", events_pb2.STRING
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = str(value)
        ptype = events_pb2.STRING
    validation.check_text(f"param {key!r} value", text, MAX_PARAM_VALUE_LEN,
                          error=InvalidArgumentError)
    return text, ptype


def check_key(kind: str, key: object) -> str:
    """The key if it is a 1..250-character string without lone surrogates, else
    InvalidArgumentError."""
    return validation.check_key(kind, key, error=InvalidArgumentError)


def typed_params(params: Mapping[str, Any]) -> dict[str, tuple[str, events_pb2.ParamType]]:
    """Flatten and type a params dict: key -> (text, ParamType). Any number of params:
    the sender cuts them into events within the consumer's MAX_ITEMS_PER_EVENT and the
    broker's size limit."""
    return {check_key("param", k): typed_value(k, v) for k, v in flatten(params).items()}


def tag_values(tags: Mapping[str, Any]) -> dict[str, str]:
    """Check tag keys and turn values into text (``str(value)``; None -> "")."""
    out: dict[str, str] = {}
    for key, value in tags.items():
        check_key("tag", key)
        text = "" if value is None else value if isinstance(value, str) else str(value)
        out[key] = validation.check_text(f"tag {key!r} value", text, MAX_TAG_VALUE_LEN,
                                         error=InvalidArgumentError)
    return out
