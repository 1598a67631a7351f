"""A task run every few seconds on a named daemon thread until a stop event is set.

Shared by the consumer's monitors (liveness checks, progress reports): a failed pass
is logged and the next one tries again, so a brief ClickHouse outage never ends them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def run_every(
    interval_s: float,
    stop: threading.Event,
    task: Callable[[], object],
    what: str,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Call ``task`` every ``interval_s`` seconds (skipping passes where ``ready()`` is
    False) until ``stop`` is set. Blocks. Exceptions are logged as "<what> failed"."""
    while not stop.wait(interval_s):
        if not ready():
            continue
        try:
            task()
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, interval_s)


def start_daemon(run: Callable[[threading.Event], None], stop: threading.Event,
                 name: str) -> threading.Thread:
    """``run(stop)`` on a started daemon thread called ``name``."""
    thread = threading.Thread(target=run, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread
