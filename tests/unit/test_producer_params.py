"""Params and tags: flattening, types, keys (runstream.params)."""

from __future__ import annotations

import pytest

from runstream.params import flatten, typed_params
from runstream.proto.errors import InvalidArgumentError
from runstream.proto.v1 import events_pb2


def test_params_flatten_and_types():
    assert flatten({"opt": {"lr": 0.1, "betas": {"b1": 0.9}}, "seed": 1}) == {
        "opt.lr": 0.1, "opt.betas.b1": 0.9, "seed": 1}
    typed = typed_params({"a": 1, "b": 0.5, "c": True, "d": "x", "e": None, "f": [1, 2],
                          "g": float("nan")})
    assert typed == {
        "a": ("1", events_pb2.INT),
        "b": ("0.5", events_pb2.FLOAT),
        "c": ("true", events_pb2.BOOL),
        "d": ("x", events_pb2.STRING),
        "e": ("", events_pb2.STRING),
        "f": ("[1, 2]", events_pb2.STRING),
        "g": ("nan", events_pb2.FLOAT),
    }
    with pytest.raises(InvalidArgumentError):
        typed_params({"k": "x" * 7000})
    with pytest.raises(InvalidArgumentError):
        typed_params({"": 1})
