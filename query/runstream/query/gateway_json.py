"""The web UI's JSON: :mod:`runstream.query.models` dataclasses to bytes (pure, thread-safe).

Dataclasses become objects of their fields by name, tuples and lists arrays, mappings
objects. A float JSON cannot carry becomes the string ``"NaN"``, ``"Infinity"`` or
``"-Infinity"`` (``Number(x)`` in JavaScript reads numbers and these strings alike).

Columnar arrays are the bulk of every answer, so they are not walked element by element:
``sum()`` of a list of numbers runs in C, and a finite sum proves every element finite
(a NaN or an infinity makes the sum non-finite), so such a list goes to the encoder as it
is; only a list whose sum is not finite is rewritten, element by element. A list that
holds anything but numbers (``sum`` raises TypeError at the first such element) is walked.
The encoder is orjson when installed (about 1 ms for a 10,000-point downsampled history),
else the standard library's ``json`` with the same output.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the server extra installs it
    orjson = None  # type: ignore[assignment]

_FIELDS: dict[type, tuple[str, ...]] = {}


def non_finite_name(x: float) -> str:
    """``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` for a float that is not finite."""
    if x != x:
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def _fields(obj: Any) -> tuple[str, ...]:
    cls = type(obj)
    names = _FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            raise TypeError(f"cannot convert {cls.__name__} to JSON")
        names = tuple(f.name for f in dataclasses.fields(obj))
        _FIELDS[cls] = names
    return names


def _sequence(seq: list[Any] | tuple[Any, ...]) -> Any:
    try:
        total = sum(seq)
    except TypeError:  # not all numbers: dataclasses, strings, nested lists
        return [plain(x) for x in seq]
    try:
        finite = math.isfinite(total)
    except OverflowError:  # integers beyond a float's range
        finite = False
    if finite:
        return seq
    return [x if not isinstance(x, float) or math.isfinite(x) else non_finite_name(x)
            for x in seq]


def plain(obj: Any) -> Any:
    """``obj`` as what a JSON encoder takes: dicts, lists, str, int, finite floats, bool and
    None. A list of finite numbers is returned as it is (not copied): treat it as read-only.
    TypeError for anything that is neither a dataclass nor a JSON value."""
    if obj is None or isinstance(obj, str | int):  # bool is an int
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else non_finite_name(obj)
    if isinstance(obj, list | tuple):
        return _sequence(obj)
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    return {name: plain(getattr(obj, name)) for name in _fields(obj)}


def encode_plain(tree: Any) -> bytes:
    """UTF-8 JSON of a tree :func:`plain` made (compact, no NaN tokens)."""
    if orjson is not None:
        try:
            return orjson.dumps(tree)
        except TypeError:  # a lone surrogate in a string, an int beyond 64 bits
            pass
    return json.dumps(tree, allow_nan=False, separators=(",", ":")).encode()


def dumps(obj: Any) -> bytes:
    """UTF-8 JSON of a model, a list of them, or a dict of JSON values and models."""
    return encode_plain(plain(obj))
