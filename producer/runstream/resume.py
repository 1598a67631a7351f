"""What a resume or a fork reads of an earlier run from the query service, if one answers.

The SDK itself never needs grpcio: :func:`read_run` imports ``runstream.query.client``
only when it is called (``init(resume=True)`` or ``init(fork_from=...)``), and only if it
is importable (the ``runstream[server]`` extra). It asks the service at
``RUNSTREAM_QUERY_ADDR`` (default 127.0.0.1:50051), with ``RUNSTREAM_TOKEN`` and
``RUNSTREAM_QUERY_TLS_CA`` as the query client reads them, and gives up after about
:data:`CONNECT_TIMEOUT_S` when nothing answers: the run goes on without what the service
would have said (see :class:`Lookup`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runstream.proto import config as names
from runstream.proto.errors import (
    ConfigError,
    NotFoundError,
    RunstreamError,
)
from runstream.proto.v1 import events_pb2

log = logging.getLogger(__name__)

#: How long the health check may take before the service counts as absent (seconds).
CONNECT_TIMEOUT_S = 2.0
#: Deadline of the GetRun that follows a healthy answer (seconds): a big run's summary
#: may take longer than a health check.
READ_TIMEOUT_S = 10.0
#: Metrics whose steps are not the training step (the system sampler numbers its own
#: samples): left out of the step a resume continues from.
SYSTEM_PREFIX = "system/"
_PARAM_TYPES = {"STRING": events_pb2.STRING, "INT": events_pb2.INT,
                "FLOAT": events_pb2.FLOAT, "BOOL": events_pb2.BOOL}


@dataclass(frozen=True, kw_only=True)
class PriorRun:
    """What the query service has stored of a run.

    ``last_step``: the highest ``last_step`` over its metrics other than ``system/*``
    (None: no points stored). ``params``: key -> (value text, ParamType) of its stored
    params, the first value of each (params are immutable). ``fork_run_id`` /
    ``fork_step``: the run's own parent, when it is a fork ("" / 0 otherwise, or when the
    service does not report it).
    """

    run_id: str
    experiment: str
    name: str
    last_step: int | None
    params: Mapping[str, tuple[str, events_pb2.ParamType]] = field(default_factory=dict)
    fork_run_id: str = ""
    fork_step: int = 0


@dataclass(frozen=True)
class Lookup:
    """The answer of :func:`read_run`: the run, or why the service could not say
    (``unavailable``, "" when it answered)."""

    prior: PriorRun | None
    unavailable: str = ""


def read_run(run_id: str, environ: Mapping[str, str], *, purpose: str) -> Lookup:
    """Read ``run_id`` from the query service. Blocks up to about
    ``CONNECT_TIMEOUT_S + READ_TIMEOUT_S`` seconds (``CONNECT_TIMEOUT_S`` when nothing
    answers).

    An unknown run raises ConfigError "no run X to <purpose>"; a malformed client setting
    (a TLS CA file that cannot be read) raises ConfigError too. Everything else that
    keeps the service from answering - the query client not installed, no server at the
    address, a refused token, a deadline - gives ``Lookup(None, reason)``.
    """
    try:
        client_mod: Any = importlib.import_module("runstream.query.client")
    except ImportError as e:
        return Lookup(None, f"the query client is not installed ({e.name}; "
                            "pip install 'runstream[server]')")
    client = client_mod.Client(timeout_s=READ_TIMEOUT_S, environ=environ)
    try:
        if not client.healthy(timeout_s=CONNECT_TIMEOUT_S):
            return Lookup(None, f"no query service answered at {client.target} within "
                                f"{CONNECT_TIMEOUT_S:g} s ({names.QUERY_ADDR})")
        try:
            run = client.get_run(run_id)
        except NotFoundError:
            raise ConfigError(
                f"no run {run_id} to {purpose}: the query service at {client.target} does "
                "not know it (if its events are still on their way - a spool not yet "
                "ingested, consumer lag - wait for them)"
            ) from None
        except RunstreamError as e:
            return Lookup(None, f"the query service at {client.target} did not answer "
                                f"GetRun: {e}")
    finally:
        client.close()
    return Lookup(prior_run(run))


def prior_run(run: Any) -> PriorRun:
    """A :class:`PriorRun` from a ``runstream.query.models.Run``. Pure."""
    steps = [m.last_step for m in run.metrics if not m.key.startswith(SYSTEM_PREFIX)]
    params: dict[str, tuple[str, events_pb2.ParamType]] = {}
    for p in run.params:
        params.setdefault(p.key, (p.value, _PARAM_TYPES.get(p.type, events_pb2.STRING)))
    info = run.info
    return PriorRun(
        run_id=info.run_id, experiment=info.experiment, name=info.name,
        last_step=max(steps) if steps else None, params=params,
        # Fields of the query side's fork support; absent from older clients.
        fork_run_id=getattr(info, "fork_run_id", "") or "",
        fork_step=int(getattr(info, "fork_step", 0) or 0),
    )
