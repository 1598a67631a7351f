"""What the integrations share: joining the job's one run on every rank, and turning what
frameworks hand over (hyperparameter objects, logged dicts) into what ``Run`` accepts.

No framework is imported here. Pure functions except :func:`rank0_run_id` and
:func:`join_run`, which read the environment and start a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import runstream
from runstream.config import ProducerConfig
from runstream.launcher import detect_launcher, resolve_run_id
from runstream.proto.validation import MAX_KEY_LEN, MAX_PARAM_VALUE_LEN
from runstream.run import Run

log = logging.getLogger(__name__)

_SCALARS = (bool, int, float, str)


def process_group() -> Any:
    """torch.distributed when a process group of more than one rank is up, else None.
    Never imports torch (the framework running the job has, if it uses one)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist


def rank0_run_id(run_id: str | None, environ: Mapping[str, str]) -> str:
    """The run id rank 0 shares with the other ranks: the active run's, else ``run_id`` >
    ``RUNSTREAM_RUN_ID`` > the launcher's job id > a fresh uuid4 hex (safe here, unlike in
    a plain ``init`` of several ranks, because the caller broadcasts it)."""
    active = runstream.active_run()
    if active is not None:
        return active.id
    config = ProducerConfig.from_env(environ)
    info = detect_launcher(environ)
    if run_id is None and config.run_id is None and info.run_id is None:
        return uuid.uuid4().hex
    return resolve_run_id(run_id, config.run_id, info)


def join_run(
    experiment: str,
    *,
    run_id: str | None,
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Run, bool]:
    """This rank's handle on the job's run: ``(run, created)``, ``created`` False when a run
    the user started is active (the integration then never finishes it).

    ``rank``/``world_size``/``local_rank``, when given, are where the framework says this
    process sits; they are passed to ``init`` as torchrun's variables when the launcher's
    environment does not say the same (Lightning's own ``ddp`` launcher sets no RANK).
    Blocks briefly (``init``)."""
    active = runstream.active_run()
    if active is not None and (run_id is None or active.id == run_id):
        return active, False
    kwargs = dict(init_kwargs or {})
    environ = dict(kwargs.pop("environ", None) or os.environ)
    if rank is not None and world_size is not None:
        info = detect_launcher(environ)
        if (info.rank, info.world_size) != (rank, world_size):
            environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size),
                            "LOCAL_RANK": str(local_rank if local_rank is not None else rank)})
    run = runstream.init(experiment, name=name, run_id=run_id, tags=tags, environ=environ,
                         **kwargs)
    return run, True


def loggable_params(params: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a framework's hyperparameters into what ``Run.log_params`` takes.

    Nested mappings, dataclasses and ``argparse.Namespace`` become dotted keys; enums
    their value; bool/int/float/str/None stay; lists and tuples become JSON, anything
    else ``str``. Text over the param value limit is cut (with a warning naming the key); keys
    over the key limit are left out (warned). Pure apart from the warnings."""
    out: dict[str, Any] = {}
    for raw_key, value in params.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, Mapping):
            out.update(loggable_params(value, key + "."))
            continue
        if not key or len(key) > MAX_KEY_LEN:
            log.warning("runstream: param %.80r left out: keys are 1..%d characters",
                        key, MAX_KEY_LEN)
            continue
        out[key] = _param_value(key, value)
    return out


def _param_value(key: str, value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, _SCALARS):
        text = value
    elif isinstance(value, list | tuple):
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = str(value)
    else:
        text = str(value)
    if isinstance(text, str) and len(text) > MAX_PARAM_VALUE_LEN:
        log.warning("runstream: param %r cut to %d characters (was %d)", key,
                    MAX_PARAM_VALUE_LEN, len(text))
        text = text[: MAX_PARAM_VALUE_LEN - 3] + "..."
    return text


def numeric_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The entries of a framework's logged dict that are numbers (int, float, bool, and
    scalars of numpy/JAX/torch through ``__float__``), as floats; text and arrays of more
    than one element are left out. Converting a device scalar waits for the device."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, float):
            out[prefix + key] = value
        elif isinstance(value, int):  # bool too
            out[prefix + key] = float(value)
        elif value is None or isinstance(value, str | bytes) or not hasattr(value, "__float__"):
            continue
        else:
            try:
                out[prefix + key] = float(value)
            except (TypeError, ValueError):
                continue
    return out
