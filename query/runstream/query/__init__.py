"""The Runstream query service and its Python client (``runstream.query``).

``from runstream.query import Client`` needs grpcio only. The server side
(``runstream.query.server``, ``.service``, ``.repository``) also needs clickhouse-connect
and is imported explicitly by whoever runs it.
"""

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
    "Artifact",
    "Client",
    "CodeVersion",
    "Environment",
    "Input",
    "MetricHistory",
    "MetricSummary",
    "Param",
    "RankInfo",
    "Run",
    "RunInfo",
    "RunPage",
    "Tag",
]
