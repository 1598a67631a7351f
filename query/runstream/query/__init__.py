"""The Runstream query service and its Python client (``runstream.query``).

``from runstream.query import Client`` needs grpcio only; the domain objects it returns
(:mod:`runstream.query.models`) need protobuf only. The server side
(``runstream.query.server``, ``.service``, ``.repository``) also needs clickhouse-connect
and is imported explicitly by whoever runs it. The names below load on first use, so
importing one submodule (the models, the filter grammar) loads nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runstream.query.client import Client
    from runstream.query.models import (
        Artifact,
        CodeVersion,
        Environment,
        Input,
        MetricHistory,
        MetricSummary,
        Param,
        RankInfo,
        Run,
        RunInfo,
        RunPage,
        Tag,
    )

__all__ = [
    "Artifact", "Client", "CodeVersion", "Environment", "Input", "MetricHistory",
    "MetricSummary", "Param", "RankInfo", "Run", "RunInfo", "RunPage", "Tag",
]
_WHERE = {name: "runstream.query.client" if name == "Client" else "runstream.query.models"
          for name in __all__}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
