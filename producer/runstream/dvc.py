"""DVC-tracked data as run inputs: the content hashes DVC has already computed, read from
a ``.dvc`` file or a ``dvc.lock`` stage, never the data hashed again.

What one entry (an ``outs`` item of a ``.dvc`` file, a ``deps``/``outs`` item of a
``dvc.lock`` stage) becomes (:class:`runstream.artifacts.InputRef`):

* ``digest``: ``"<hash name>:<value>"`` with DVC's value unchanged, e.g.
  ``md5:a304afb96060aad90176268345e10355`` for a file and
  ``md5:153aad06d376b6595932470e459ef42a.dir`` for a directory (DVC's hash of its
  ``.dir`` listing). The hash name is the entry's ``hash:`` field (DVC 3 writes
  ``md5``, a true MD5 of the content); an entry without one was written by DVC 2, whose
  MD5 of a text file is taken after CRLF -> LF, which DVC 3 calls ``md5-dos2unix``: so
  that name. Equal digests mean equal data as DVC sees it.
* ``uri``: ``file://`` of the data path resolved against the file's directory (and the
  stage's ``wdir``), whether or not the data is checked out here; a path with a scheme
  (``s3://...``, an external output) as written.
* ``name``: the path as DVC writes it (relative to that directory), unless given.

YAML is read with PyYAML's safe loader, imported on first use. Pure functions apart
from reading the files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runstream.artifacts import InputRef
from runstream.proto.errors import InvalidArgumentError

#: The lock file of DVC pipelines; beside it, dvc.yaml says each stage's wdir.
LOCK_NAME = "dvc.lock"
_HASH_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: The hash name of an entry without ``hash:`` (written by DVC 2).
LEGACY_HASH = "md5-dos2unix"
#: The role of a dvc.lock stage's outputs (its deps take the caller's role).
OUT_ROLE = "output"


def is_dvc_file(path: Path) -> bool:
    """True for a path :func:`input_refs` reads: a ``*.dvc`` file or a ``dvc.lock``."""
    return (path.suffix == ".dvc" or path.name == LOCK_NAME) and path.is_file()


def input_refs(path: Path, *, name: str | None = None, stage: str | None = None,
               role: str = "train") -> list[InputRef]:
    """The inputs a ``.dvc`` file (each of its ``outs``) or a ``dvc.lock`` stage (its
    ``deps`` with ``role``, then its ``outs`` with role ``"output"``) records.

    ``stage`` names the dvc.lock stage (``"train"``, a foreach stage ``"build@us"``);
    it may be left out when the lock file has one stage. ``name`` replaces the name of a
    single entry. InvalidArgumentError for a file that is not DVC's YAML, an unknown
    stage, an entry without a hash (DVC has not committed it: ``dvc commit``), ``name``
    given for several entries, or ``stage`` given for a ``.dvc`` file. Blocks while
    reading the file (never the data).
    """
    doc = _load(path)
    base = path.parent
    if path.name == LOCK_NAME:
        stage_name, entry = _stage(path, doc, stage)
        base = base / _wdir(path.parent / "dvc.yaml", stage_name)
        items = [(d, role) for d in _entries(path, entry, "deps")]
        items += [(o, OUT_ROLE) for o in _entries(path, entry, "outs")]
    else:
        if stage is not None:
            raise InvalidArgumentError(f"{path}: stage={stage!r} is for a {LOCK_NAME} file, "
                                       "not a .dvc file")
        wdir = doc.get("wdir", ".")
        base = base / (wdir if isinstance(wdir, str) else ".")
        items = [(o, role) for o in _entries(path, doc, "outs")]
    if not items:
        raise InvalidArgumentError(f"{path}: no entry with a path to record")
    if name is not None and len(items) > 1:
        raise InvalidArgumentError(
            f"{path}: name={name!r} given for {len(items)} entries; leave it out (each is "
            "named by its path)")
    refs = [_ref(path, base, e, r) for e, r in items]
    if name is not None:
        refs[0] = InputRef(name=name, uri=refs[0].uri, digest=refs[0].digest,
                           role=refs[0].role)
    return refs


def _load(path: Path) -> dict[str, Any]:
    import yaml  # type: ignore[import-untyped]  # PyYAML ships no type information

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(path.read_text("utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InvalidArgumentError(f"{path}: not a DVC file DVC could read: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidArgumentError(f"{path}: not a DVC file (expected a YAML mapping)")
    return doc


def _stage(path: Path, doc: Mapping[str, Any], stage: str | None) -> tuple[str, Any]:
    # Lock files of DVC 2+ say `schema: '2.0'` and keep stages under `stages`; DVC 1's
    # had the stages at the top.
    stages = doc.get("stages") if "schema" in doc else doc
    if not isinstance(stages, dict) or not stages:
        raise InvalidArgumentError(f"{path}: no stages")
    if stage is None:
        if len(stages) > 1:
            raise InvalidArgumentError(
                f"{path} has {len(stages)} stages; say which: stage= one of "
                f"{', '.join(sorted(map(str, stages)))}")
        stage = str(next(iter(stages)))
    entry = stages.get(stage)
    if not isinstance(entry, dict):
        raise InvalidArgumentError(
            f"{path}: no stage {stage!r} (stages: {', '.join(sorted(map(str, stages)))})")
    return stage, entry


def _wdir(dvc_yaml: Path, stage: str) -> str:
    """The stage's ``wdir`` from dvc.yaml (its paths in dvc.lock are relative to it);
    "." when dvc.yaml is absent, unreadable or templated."""
    if not dvc_yaml.is_file():
        return "."
    try:
        doc = _load(dvc_yaml)
    except InvalidArgumentError:
        return "."
    stages = doc.get("stages")
    spec = stages.get(stage.partition("@")[0]) if isinstance(stages, dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("do"), dict):
        spec = spec["do"]  # foreach stages: build@us is `do` of `build`
    wdir = spec.get("wdir", ".") if isinstance(spec, dict) else "."
    return wdir if isinstance(wdir, str) and "${" not in wdir else "."


def _entries(path: Path, doc: Mapping[str, Any], section: str) -> list[Mapping[str, Any]]:
    items = doc.get(section) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidArgumentError(f"{path}: {section} is not a list of entries")
    return items


def _ref(path: Path, base: Path, entry: Mapping[str, Any], role: str) -> InputRef:
    data_path = entry.get("path")
    if not isinstance(data_path, str) or not data_path:
        raise InvalidArgumentError(f"{path}: an entry has no path")
    value = entry.get("md5")
    hash_name = entry.get("hash", LEGACY_HASH)
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(
            f"{path}: {data_path!r} has no md5 (DVC has not hashed it; run `dvc commit`)")
    if not isinstance(hash_name, str) or not _HASH_NAME.fullmatch(hash_name):
        raise InvalidArgumentError(f"{path}: {data_path!r} has hash {hash_name!r}, not a "
                                   "hash name")
    if "://" in data_path:
        uri = data_path
    else:
        uri = Path(os.path.normpath(base.resolve() / data_path)).as_uri()
    return InputRef(name=data_path, uri=uri, digest=f"{hash_name}:{value}", role=role)
