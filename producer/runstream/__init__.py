"""Runstream SDK: track distributed training runs.

>>> import runstream
>>> with runstream.init("mnist", params={"lr": 0.1}) as run:   # doctest: +SKIP
...     run.log({"loss": 0.5}, step=1)

Importing this package is light: no grpcio, no clickhouse-connect.
"""

from runstream.config import ProducerConfig
from runstream.delivery import Delivery
from runstream.launcher import LauncherInfo, detect_launcher
from runstream.run import Run, active_run, finish, init

__all__ = [
    "Delivery",
    "LauncherInfo",
    "ProducerConfig",
    "Run",
    "active_run",
    "detect_launcher",
    "finish",
    "init",
]
