"""The process around a run: which run is active, and the hooks that end it.

One run is active per process (:func:`active`): :func:`runstream.init` makes it so
(:func:`activate`), :meth:`Run.finish` ends it (:func:`deactivate`). The first init in a
process also calls :func:`install_hooks`, which chains

* ``sys.excepthook``: an uncaught exception finishes the run FAILED with its traceback,
  KeyboardInterrupt KILLED;
* ``threading.excepthook``: a thread that dies of an exception makes a run that is not
  finished explicitly end FAILED at exit;
* SIGTERM, from the main thread, when its handler is the default or a Python callable:
  the run finishes KILLED, then the previous handler runs (the default one terminates
  the process).

At exit an unfinished run is finished with ``exit_flush_s`` as timeout; what Kafka has
not acknowledged by then is written to the spool within that time (see
:meth:`Run.finish`), for ``runstream sync``. After a fork the child
keeps the run, as a new producer of its own (see :meth:`Run._after_fork_in_child`).

The hooks only call the run's methods meant for them (``_finish``, ``_finish_uncaught``,
``_on_thread_failure``, ``_finish_at_exit``, ``_after_fork_in_child``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from runstream.proto.errors import AlreadyExistsError

if TYPE_CHECKING:
    from runstream.run import Run

log = logging.getLogger(__name__)

_active: Run | None = None
_active_lock = threading.Lock()
_hooks_installed = False
_previous_sigterm: Any = None


def active() -> Run | None:
    """The run init() returned and finish() has not ended, if any."""
    return _active


def activate(run_id: str, experiment: str, create: Callable[[], Run]) -> tuple[Run, bool]:
    """(the active run, False) if it is ``run_id`` of ``experiment``; else, when none is
    active, (``create()`` made active, True). AlreadyExistsError while another run is
    active. Thread-safe."""
    global _active
    with _active_lock:
        if _active is not None:
            if _active.id == run_id and _active.experiment == experiment:
                return _active, False
            raise AlreadyExistsError(
                f"run {_active.id} (experiment {_active.experiment!r}) is still active in "
                f"this process; call finish() on it before init() of run {run_id}"
            )
        _active = create()
        return _active, True


def deactivate(run: Run) -> None:
    """No run is active any more, if ``run`` was. Thread-safe."""
    global _active
    with _active_lock:
        if _active is run:
            _active = None


def install_hooks() -> None:
    """Chain sys.excepthook, threading.excepthook and (from the main thread, when its
    handler is the default or a Python callable) SIGTERM. Once per process."""
    global _hooks_installed, _previous_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
    previous_excepthook = sys.excepthook

    def excepthook(exc_type: type[BaseException], exc: BaseException,
                   tb: TracebackType | None) -> None:
        run = _active
        if run is not None:
            run._finish_uncaught(exc_type, exc, tb)
        previous_excepthook(exc_type, exc, tb)

    sys.excepthook = excepthook
    previous_thread_hook = threading.excepthook

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        run = _active
        if run is not None and args.exc_type is not SystemExit:
            run._on_thread_failure(args)
        previous_thread_hook(args)

    threading.excepthook = thread_excepthook
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_DFL or callable(previous):
        _previous_sigterm = previous
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Finish the active run as KILLED, then run the previous handler (the default one
    terminates the process). The finish runs on a helper thread: if this handler
    interrupted the main thread inside a Runstream lock, the helper cannot queue its
    events, so the handler returns, the main thread goes on and releases the lock, and
    the helper sends SIGTERM again once the run is finished."""
    run = _active
    if run is not None and not run.finished and run.started_here:
        queued = threading.Event()
        detached = threading.Event()
        timeout_s = run.config.exit_flush_s
        reason = f"terminated by signal {signal.Signals(signum).name}"

        def finish_killed() -> None:
            try:
                run._finish("KILLED", reason, timeout_s, queued)
            except Exception:
                log.exception("runstream: finishing the run on %s failed", reason)
            if detached.is_set():
                os.kill(os.getpid(), signum)

        helper = threading.Thread(target=finish_killed, name="runstream-producer-signal",
                                  daemon=True)
        helper.start()
        if not queued.wait(1.0):
            detached.set()
            if not queued.is_set():
                return
            detached.clear()
        helper.join(timeout_s + 1.0)
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _finish_at_exit() -> None:
    run = _active
    if run is not None:
        run._finish_at_exit()


def _after_fork_in_child() -> None:
    global _active_lock
    _active_lock = threading.Lock()
    run = _active
    if run is not None:
        run._after_fork_in_child()


atexit.register(_finish_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
