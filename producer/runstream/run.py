"""The public SDK: :func:`init` and :class:`Run`.

One run is active per process at a time (:mod:`runstream.lifecycle` keeps it, with the
exception, SIGTERM, exit and fork hooks the first ``init`` installs). ``Run.log`` is the
hot path: it validates cheaply, appends one ``step, ts_ms, {key: value}`` record to an
in-memory list (flat, three items per record; one ``+=``, atomic under the GIL, so no
lock), and returns; encoding and I/O happen on the sender thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from runstream import artifacts, capture, dvc, lifecycle
from runstream import params as params_mod
from runstream import resume as resume_mod
from runstream.batch import FLAT_WIDTH
from runstream.config import ProducerConfig
from runstream.delivery import Delivery, DeliveryAccount
from runstream.launcher import LauncherInfo, detect_launcher, resolve_run_id
from runstream.proto import config as names
from runstream.proto.errors import ConfigError, InvalidArgumentError
from runstream.proto.status import ENDED
from runstream.proto.v1 import events_pb2
from runstream.proto.validation import (
    MAX_DIGEST_LEN,
    MAX_EXPERIMENT_LEN,
    MAX_NAME_LEN,
    MAX_NODE_LEN,
    MAX_ROLE_LEN,
    MAX_RUN_NAME_LEN,
    MAX_STEP,
    MAX_TEXT_LEN,
    MAX_URI_LEN,
    check_run_id,
    check_text,
    wire_text,
)
from runstream.sender import EventQueue, Identity, Item, Request, Sender
from runstream.system import SystemSampler
from runstream.telemetry import StepTimer
from runstream.transport import KafkaTransport, SpoolTransport, Transport

log = logging.getLogger(__name__)

_time_ns = time.time_ns


class Run:
    """One rank's handle on a run. Create with :func:`runstream.init`.

    ``resumed``: this process continues an earlier run (``init(resume=True)``);
    ``fork_from``: (parent run id, last inherited step) of a fork, else None;
    ``start_step``: the first step ``log()`` without ``step=`` uses.

    Methods are thread-safe. ``log`` never blocks on I/O (see its docstring for the one
    bounded wait); ``log_artifact`` and ``log_input`` block while they copy or hash
    files; ``flush`` and ``finish`` block up to their timeouts.
    """

    def __init__(
        self,
        *,
        experiment: str,
        run_id: str,
        name: str | None,
        launcher: LauncherInfo,
        config: ProducerConfig,
        resumed: bool = False,
        fork_from: tuple[str, int] | None = None,
        start_step: int = 0,
        stored_params: Mapping[str, tuple[str, events_pb2.ParamType]] | None = None,
    ) -> None:
        self.id = run_id
        self.experiment = experiment
        self.name = name
        self.rank = launcher.rank
        self.world_size = launcher.world_size
        self.local_rank = launcher.local_rank
        self._launch_env = capture.launch_environment(launcher)
        # The launcher's restart count (LauncherInfo.restart; older launchers lack it).
        self._restart = int(getattr(launcher, "restart", 0) or 0)
        self.resumed = resumed
        self.fork_from = fork_from
        self.start_step = start_step
        self.config = config
        self._init_pid = os.getpid()
        self._node = wire_text(socket.gethostname())[:MAX_NODE_LEN]
        self._next_step = start_step
        self._known_keys: set[str] = set()
        # A resumed run's stored params count as logged: the same value again is a no-op,
        # another raises at the call.
        self._params: dict[str, tuple[str, events_pb2.ParamType]] = dict(stored_params or {})
        self._params_lock = threading.Lock()
        self._finished = False
        self._finish_ok = True
        self._finish_lock = threading.Lock()
        # Buffered log() calls (records) that wake the sender early / block the caller.
        # Both counted in flat buffer items (FLAT_WIDTH per record).
        self._wake_at = max(config.points_per_batch, 1) * FLAT_WIDTH
        self._max_records = max(config.max_buffered_points // 10, 1) * FLAT_WIDTH
        self._thread_failure = ""
        self._digests: artifacts.DigestCache | None = None
        self._queue = EventQueue()
        self._sender: Sender | None = None
        self._start_sender(first=True)
        self._sampler: SystemSampler | None = None
        if config.system_metrics_s > 0:
            self._sampler = SystemSampler(self._log_system, config.system_metrics_s)
            self._sampler.start()

    # --- sender lifecycle -------------------------------------------------------------

    def _transport(self, producer_id: str, account: DeliveryAccount) -> Transport:
        cfg = self.config
        spool = SpoolTransport(cfg.spool_dir, producer_id, cfg.encoding, cfg.spool_roll_s,
                               account)
        if cfg.kafka:
            return KafkaTransport(cfg.kafka, cfg.topic, cfg.encoding, spool,
                                  stall_s=cfg.kafka_stall_s)
        return spool

    def _start_sender(self, first: bool = False) -> Sender:
        producer_id = uuid.uuid4().hex
        started = None
        if first:
            fork_run_id, fork_step = self.fork_from or ("", 0)
            started = (events_pb2.RunStarted(name=self.name or "", env=self._launch_env,
                                             restart=self._restart, resume=self.resumed,
                                             fork_run_id=fork_run_id, fork_step=fork_step),
                       _time_ns() // 1_000_000)
        sender = Sender(
            identity=Identity(
                run_id=self.id,
                experiment=self.experiment,
                rank=self.rank,
                world_size=self.world_size,
                local_rank=self.local_rank,
                node=self._node,
                producer_id=producer_id,
            ),
            config=self.config,
            queue=self._queue,
            transport=self._transport(producer_id, DeliveryAccount()),
            started=started,
            heartbeats=self.started_here,
        )
        self._sender = sender
        try:
            sender.start()
        except RuntimeError:
            # Interpreter shutdown refuses new threads; finish() then sends inline.
            pass
        return sender

    def _ensure_sender(self) -> Sender:
        sender = self._sender
        return sender if sender is not None else self._start_sender()

    def _after_fork_in_child(self) -> None:
        # The parent's buffered data stays the parent's; the child is a new producer
        # (new producer_id, seq from 1) whose sender starts when it first has data.
        self._queue = EventQueue()
        self._sender = None
        self._params_lock = threading.Lock()
        self._finish_lock = threading.Lock()

    @property
    def producer_id(self) -> str:
        """This process' producer id for this run (uuid4 hex; new after fork)."""
        return self._ensure_sender().identity.producer_id

    # --- the hot path -----------------------------------------------------------------

    def log(self, metrics: Mapping[str, float | int], step: int | None = None) -> None:
        """Record metric values at ``step`` (default: the previous step + 1, from
        ``start_step``: 0, or where a resumed run or a fork continues, see :func:`init`).

        Values: int and float (NaN and inf kept as they are), bool (cast to 1.0/0.0),
        and anything with ``__float__`` such as numpy scalars; str raises. Keys: strings
        of 1..250 characters, valid Unicode (no lone surrogate). Steps: 0..2**63-1.
        InvalidArgumentError on bad input, and nothing from that call is recorded; also
        after ``finish()``. Timestamps are taken here (epoch ms, one per call). Any
        number of keys per call: the sender cuts batches within every consumer limit.

        Cost: well under a microsecond per point for float values and known keys (one
        dict copy - the caller may reuse its dict - and one lock-free append); no I/O. When
        ``max_buffered_points // 10`` calls wait for the sender (it cannot keep up),
        this call blocks until the sender takes the buffer - it takes all of it at once
        and spools to disk rather than waiting on Kafka, so the wait is one sender cycle.
        Thread-safe.
        """
        if step is None:
            step = self._next_step
        elif type(step) is not int or not 0 <= step <= MAX_STEP:
            step = _check_step(step)
        # Fast path: a plain dict of known keys and float values is copied as it is (the
        # copy is the buffer's; the caller may reuse its dict). Anything else is checked
        # and converted key by key.
        if type(metrics) is dict and self._known_keys.issuperset(metrics):
            for value in metrics.values():
                if type(value) is not float:
                    metrics = self._checked(metrics)
                    break
            else:
                metrics = metrics.copy()
        else:
            metrics = self._checked(metrics)
        if self._sender is None:
            self._start_sender()  # the first call after a fork
        ts_ms = _time_ns() // 1_000_000
        queue = self._queue
        # No lock: one ``+=`` of a tuple is atomic under the GIL, and the sender moves
        # points out without swapping the list (EventQueue._take_points). Flat records
        # (runstream.batch.FLAT_WIDTH items each) keep no tuple per call alive.
        buffered = queue.points
        buffered += (step, ts_ms, metrics)
        if queue.closed and queue.unlog(metrics):
            raise InvalidArgumentError(f"run {self.id} is finished; log() after finish()")
        n = len(buffered)
        self._next_step = step + 1
        # The sender is woken once per batch, not on every call while it catches up.
        # (Threads logging at once may skip a length; the timer and the bound below
        # still hold.)
        if n == self._wake_at:
            queue.wake.set()
        elif n >= self._max_records:
            sender = self._ensure_sender()
            queue.wait_for_room(self._max_records // FLAT_WIDTH, sender.is_alive)

    def _checked(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """A validated copy with float values; the slow path of ``log``."""
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise InvalidArgumentError(f"metrics must be a dict, not {type(metrics).__name__}")
        known = self._known_keys
        out: dict[str, float] = {}
        for key, value in metrics.items():
            if key not in known:
                params_mod.check_key("metric", key)
            out[key] = value if type(value) is float else _as_float(key, value)
        known.update(out)
        return out

    def _log_system(self, metrics: dict[str, float], step: int) -> None:
        """Append system metrics without touching the user's step counter."""
        self._known_keys.update(metrics)
        queue = self._queue
        with queue.lock:
            if queue.closed:
                return
            queue.points += (step, _time_ns() // 1_000_000, metrics)
        if self._sender is None:
            self._start_sender()

    # --- other events -----------------------------------------------------------------

    def _put_event(self, field: str, body: Any) -> None:
        if self._finished:
            raise InvalidArgumentError(f"run {self.id} is finished; no more events")
        self._ensure_sender()
        if not self._queue.put_event(field, body, _time_ns() // 1_000_000):
            raise InvalidArgumentError(f"run {self.id} is finished; no more events")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters. Nested dicts are flattened with dots ({"opt": {"lr":
        0.1}} -> "opt.lr"); values are typed INT/FLOAT/BOOL/STRING and sent as text.
        Re-logging a key with the same value is a no-op; with a different value it raises
        InvalidArgumentError and records nothing from this call - also for the values a
        resumed run had stored (when the query service answered, see :func:`init`).
        Thread-safe; no I/O."""
        typed = params_mod.typed_params(params)
        with self._params_lock:
            _check_immutable(typed, self._params)
            new = {k: v for k, v in typed.items() if k not in self._params}
            if not new:
                return
            self._put_event(
                "params",
                events_pb2.Params(
                    params=[events_pb2.Param(key=k, value=t, type=p) for k, (t, p) in new.items()]
                ),
            )
            self._params.update(new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (string values; others via ``str``). A later value for a key replaces
        the earlier one. Thread-safe; no I/O."""
        values = params_mod.tag_values(tags)
        if values:
            self._put_event(
                "tags", events_pb2.Tags(tags=[events_pb2.Tag(key=k, value=v)
                                              for k, v in values.items()])
            )

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Copy a file or directory into the content-addressed store (the artifacts dir,
        ``RUNSTREAM_ARTIFACTS``) and record it; returns the content's sha256 hex.
        ``name`` defaults to the path's base name. Blocks while copying."""
        source = Path(path)
        label = name if name is not None else source.resolve().name
        check_text("artifact name", label, MAX_NAME_LEN, error=InvalidArgumentError,
                   empty=False)
        check_text("the artifacts directory", str(self.config.artifacts_dir),
                   MAX_URI_LEN - 100, error=InvalidArgumentError)
        stored = artifacts.store(self.config.artifacts_dir, source)
        self._put_event(
            "artifact",
            events_pb2.Artifact(
                name=label, uri=stored.uri, size_bytes=stored.size_bytes, sha256=stored.sha256
            ),
        )
        return stored.sha256

    def log_input(
        self,
        uri_or_path: str | os.PathLike[str],
        name: str | None = None,
        digest: str | None = None,
        role: str = "train",
        *,
        stage: str | None = None,
    ) -> str:
        """Record a data set the run reads; returns its digest.

        A local file is digested as ``sha256:<hex>`` of its content, a directory over its
        sorted relative paths and file digests (blocks while hashing; files whose size and
        mtime are unchanged since an earlier call are not re-read, see
        ``artifacts.DigestCache`` kept under the artifacts dir; pass ``digest`` to
        skip). A URI with a scheme (``s3://...``, ``hf://...``) is recorded as given,
        with ``digest`` or "". Anything else raises InvalidArgumentError.

        A DVC file - a ``*.dvc`` file, or a ``dvc.lock`` with ``stage`` (which may be
        left out when it has one stage) - records the data DVC tracks with DVC's own
        hash, never reading the data (see :mod:`runstream.dvc`): every ``outs`` entry of
        a .dvc file, a stage's ``deps`` (with ``role``) and ``outs`` (role "output"),
        each named by its path, digest ``md5:<DVC's md5>``; returns the first one's
        digest. Nothing is recorded from a call that raises.
        """
        refs = self._input_refs(uri_or_path, name, digest, role, stage)
        for ref in refs:
            for what, text, limit in (("input uri", ref.uri, MAX_URI_LEN),
                                      ("input name", ref.name, MAX_NAME_LEN),
                                      ("input digest", ref.digest, MAX_DIGEST_LEN),
                                      ("input role", ref.role, MAX_ROLE_LEN)):
                check_text(what, text, limit, error=InvalidArgumentError)
        for ref in refs:
            self._put_event(
                "input", events_pb2.Input(name=ref.name, uri=ref.uri, digest=ref.digest,
                                          role=ref.role)
            )
        return refs[0].digest

    def _input_refs(self, uri_or_path: str | os.PathLike[str], name: str | None,
                    digest: str | None, role: str,
                    stage: str | None) -> list[artifacts.InputRef]:
        text = os.fspath(uri_or_path)
        if digest is None and "://" not in text:
            path = Path(text).expanduser()
            if dvc.is_dvc_file(path):
                return dvc.input_refs(path, name=name, stage=stage, role=role)
        if stage is not None:
            raise InvalidArgumentError(
                f"stage={stage!r} is for a {dvc.LOCK_NAME} file; {text!r} is not one")
        return [artifacts.input_ref(uri_or_path, name, digest, role, self._digest_cache)]

    def _digest_cache(self) -> artifacts.DigestCache:
        cache = self._digests
        if cache is None:
            cache = self._digests = artifacts.DigestCache(
                self.config.artifacts_dir / "index" / "file-digests.json")
        return cache

    # --- flush and finish -------------------------------------------------------------

    def step_timer(self, *, device_memory: bool = True) -> StepTimer:
        """Per-rank telemetry for a hand-written loop (:class:`runstream.telemetry.StepTimer`):
        ``with timer.step(i): ...`` logs the step time, the wait for data before it and this
        rank's device memory, which ``runstream ranks`` reads to find a slow rank."""
        return StepTimer(self, device_memory=device_memory)

    def delivery(self) -> Delivery:
        """Where this process' data for the run is now: points logged, sent (acknowledged
        by Kafka, or taken out of the spool by ``runstream sync``/``serve``), spooled (in
        spool files on disk), pending, and dropped by reason (see
        :class:`runstream.Delivery`). Cheap (a few counters; no I/O), thread-safe, never
        blocks on I/O; also after ``finish()``. Spool files taken by another reader are
        noticed within a few seconds."""
        sender = self._sender
        queue = self._queue
        with queue.lock:
            logged = queue.logged_points()
            if sender is None:
                return Delivery(points_logged=logged, points_pending=logged)
            return sender.account.snapshot(logged)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Block until everything logged before this call is durable - acknowledged by
        Kafka, or written to a published spool file - or ``timeout_s`` passes. Returns
        True when it is and nothing was ever dropped (see :meth:`delivery`).
        Thread-safe; idempotent; after finish() it returns what finish() returned."""
        if self._finished:
            return self._finish_ok
        if self._sender is None and not self._queue.points and not self._queue.segments:
            return True
        sender = self._ensure_sender()
        request = Request(timeout_s)
        if not self._queue.put(Item.FLUSH, request):
            return self.finish(timeout_s=timeout_s)  # finished meanwhile: wait for that
        if not sender.is_alive():
            sender.run_inline()
        return request.done.wait(timeout_s) and request.ok and not sender.account.drops()

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has begun (nothing more can be logged)."""
        return self._finished

    @property
    def started_here(self) -> bool:
        """True in the process that called init (False in a forked child)."""
        return os.getpid() == self._init_pid

    def finish(self, status: str = "FINISHED", error: str = "", timeout_s: float = 10.0) -> bool:
        """End this rank's part of the run: send RunFinished (``status`` FINISHED, FAILED
        or KILLED, ``error`` the reason), flush within ``timeout_s``, stop the sender.
        Idempotent (later calls return the first call's result at once). In a forked
        child it only flushes and stops: the rank's status belongs to the process that
        called init. Blocks up to ``timeout_s``.

        Returns True iff nothing was lost: every point and event this process logged is
        acknowledged by Kafka or safely in a published spool file (``runstream sync`` or
        ``serve`` takes it from there), and none was dropped. What Kafka has not
        acknowledged by the deadline is written to the spool before it returns (a
        fifth of ``timeout_s`` is kept for that, at least 1 s). :meth:`delivery` says
        how much went where, and what was dropped and why; RunFinished carries the same
        counts (``points_logged``, ``dropped``) to the consumer."""
        return self._finish(status, error, timeout_s, None)

    def _finish(self, status: str, error: str, timeout_s: float,
                queued: threading.Event | None) -> bool:
        """:meth:`finish`, setting ``queued`` once the final events are queued (or there
        are none): the SIGTERM hook waits for that, not for the delivery."""
        if status not in ENDED:
            raise InvalidArgumentError(
                f"status {status!r}: expected one of {', '.join(sorted(ENDED))}"
            )
        sampler = self._sampler
        if sampler is not None:
            sampler.stop()  # its last sample goes in before the run_finished event
        with self._finish_lock:
            if self._finished:
                if queued is not None:
                    queued.set()
                return self._finish_ok
            final = None
            if self.started_here:
                final = (
                    "run_finished",
                    events_pb2.RunFinished(status=status,
                                           error=wire_text(error[-MAX_TEXT_LEN:])),
                    _time_ns() // 1_000_000,
                )
            self._finished = True
            ok = True
            queue = self._queue
            if self._sender is not None or queue.points or queue.segments or final:
                sender = self._ensure_sender()
                request = Request(timeout_s)
                queue.close(final, request)
                if queued is not None:
                    queued.set()
                if sender.is_alive():
                    request.done.wait(timeout_s)
                    sender.join(request.remaining_s())
                else:
                    sender.run_inline()
                ok = (request.done.is_set() and request.ok
                      and self.delivery().lossless)
            else:
                with queue.lock:
                    queue.closed = True
                if queued is not None:
                    queued.set()
            self._finish_ok = ok
        lifecycle.deactivate(self)
        return ok

    # --- what the process hooks call (runstream.lifecycle) ------------------------------

    def _finish_uncaught(self, exc_type: type[BaseException], exc: BaseException,
                         tb: TracebackType | None) -> None:
        """An uncaught exception ends the run FAILED (KeyboardInterrupt: KILLED)."""
        if self._finished:
            return
        status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
        try:
            self.finish(status, _format(exc_type, exc, tb), timeout_s=self.config.exit_flush_s)
        except Exception:
            log.exception("runstream: recording the uncaught exception failed")

    def _on_thread_failure(self, args: threading.ExceptHookArgs) -> None:
        """Keep the first thread that died of an exception: the run ends FAILED at exit
        unless it is finished explicitly before."""
        if not self._thread_failure:
            where = f"in thread {args.thread.name if args.thread else '?'}:\n"
            self._thread_failure = where + _format(args.exc_type, args.exc_value,
                                                   args.exc_traceback)

    def _finish_at_exit(self) -> None:
        """Finish an unfinished run at interpreter exit, within ``exit_flush_s``."""
        if self._finished:
            return
        status = "FAILED" if self._thread_failure else "FINISHED"
        try:
            ok = self.finish(status, self._thread_failure, timeout_s=self.config.exit_flush_s)
        except Exception:
            log.exception("runstream: finishing the run at exit failed")
            return
        if not ok:
            d = self.delivery()
            log.error(
                "runstream: run %s at exit (within %.0f s): %d points logged, %d sent, %d "
                "spooled, %d pending, %d dropped %s", self.id, self.config.exit_flush_s,
                d.points_logged, d.points_sent, d.points_spooled, d.points_pending,
                d.points_dropped, dict(d.dropped) or "",
            )

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("KILLED", _format(exc_type, exc, tb))
        else:
            self.finish("FAILED", _format(exc_type, exc, tb))

    def __repr__(self) -> str:
        return (f"Run(id={self.id!r}, experiment={self.experiment!r}, rank={self.rank}, "
                f"world_size={self.world_size})")


def _format(exc_type: type[BaseException], exc: BaseException | None,
            tb: TracebackType | None) -> str:
    return "".join(traceback.format_exception(exc_type, exc, tb))


def _check_step(step: object) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise InvalidArgumentError(f"step must be a non-negative int, got {step!r:.80}")
    value = int(step.__index__())
    if value < 0:
        raise InvalidArgumentError(f"step {value} is negative")
    if value > MAX_STEP:
        raise InvalidArgumentError(f"step {value} is over the limit of {MAX_STEP} (int64)")
    return value


def _as_float(key: str, value: object) -> float:
    if isinstance(value, str | bytes) or value is None:
        raise InvalidArgumentError(f"metric {key!r} value {value!r:.80} is not a number")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgumentError(f"metric {key!r} value {value!r:.80} is not a number") from e


def init(
    experiment: str,
    name: str | None = None,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    *,
    resume: bool | None = None,
    fork_from: tuple[str, int] | None = None,
    start_step: int | None = None,
    encoding: str | None = None,
    kafka: str | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    topic: str | None = None,
    heartbeat_s: float | None = None,
    system_metrics_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Run:
    """Start (or join, for the other ranks of a distributed job) a run and return it.

    Settings: explicit argument > ``RUNSTREAM_*`` variable > default (``kafka`` unset
    means the local spool, ``~/.runstream/spool``). Rank and the shared run id come from
    the launcher (torchrun, SLURM, OpenMPI, PMI): ``run_id`` > ``RUNSTREAM_RUN_ID`` > the
    launcher's job id > a fresh uuid4 hex for a single process; several ranks without a
    shared id raise ConfigError. ``environ`` replaces os.environ (tests).

    One run is active per process: calling init again before ``finish()`` returns the
    active run when it has the same run id, else raises AlreadyExistsError. Malformed
    settings raise ConfigError. Returns quickly: the sender thread captures the git
    version and sends ``run_started``, then ``params`` and ``tags``. Thread-safe.
    The first call installs the exception, SIGTERM and exit hooks of
    :mod:`runstream.lifecycle`; ``system_metrics_s`` > 0 starts the
    ``runstream-producer-system`` sampler (``RUNSTREAM_SYSTEM_METRICS_S``, default 10 s;
    0 turns it off).

    ``resume=True`` (default ``RUNSTREAM_RESUME``, "1"/"0") continues an existing run -
    the one ``run_id``, ``RUNSTREAM_RUN_ID`` or the launcher's job id names (none:
    ConfigError) - as a new attempt: RunStarted says ``resume`` and the launcher's
    restart count, and the run is RUNNING again. ``fork_from=(run_id, step)`` starts a
    new run (its own id) whose history up to and including ``step`` is that run's:
    ``step`` 0..2**63-1 and a valid run id, else InvalidArgumentError; the parent's
    params are not copied (a fork usually changes one; log them). The two cannot be
    combined (InvalidArgumentError).

    ``start_step``: the first step ``log()`` without ``step=`` uses. Default: 0; for a
    fork, ``step + 1``; for a resume, one past the highest step stored of the run's
    metrics (``system/*`` aside). Pass your checkpoint's step to be exact.

    A resume or a fork asks the query service (``RUNSTREAM_QUERY_ADDR``, with
    ``RUNSTREAM_TOKEN`` / ``RUNSTREAM_QUERY_TLS_CA``; needs ``runstream[server]``) about
    the run it continues, blocking up to ~2 s when none answers (up to ~12 s if one
    answers slowly): a run it does not know raises ConfigError; a resume takes its step,
    experiment (another one raises InvalidArgumentError), name (when ``name`` is None),
    fork and params - a param logged again with another value raises InvalidArgumentError
    at the call (``params=`` here, ``log_params`` later). With no answer it goes on,
    saying so once in a warning: steps from ``start_step`` (default 0), and param
    conflicts are recorded by the server as conflicts, first value kept. Make sure the
    earlier attempt's events are ingested before resuming (a spool ``serve`` has not read
    yet is invisible to the service).
    """
    env = names.environ_or_os(environ)
    check_text("experiment", experiment, MAX_EXPERIMENT_LEN, error=InvalidArgumentError,
               empty=False)
    if name is not None:
        check_text("run name", name, MAX_RUN_NAME_LEN, error=InvalidArgumentError)
    config = names.with_explicit(
        ProducerConfig.from_env(env), kafka=kafka, topic=topic, encoding=encoding,
        spool_dir=spool_dir, artifacts_dir=artifacts_dir, heartbeat_s=heartbeat_s,
        system_metrics_s=system_metrics_s, resume=resume,
    )
    launcher = detect_launcher(env)
    fork = _check_fork(fork_from)
    first = None if start_step is None else _check_step(start_step)
    if config.resume:
        if fork is not None:
            raise InvalidArgumentError(
                "resume and fork_from cannot be combined: a resume continues the same run, "
                "a fork starts a new run from another one"
                + (f" (resume comes from {names.RESUME}=1)" if resume is None else ""))
        if not _names_a_run(run_id, config.run_id, launcher):
            raise ConfigError(
                "resume=True needs the id of the run to continue: pass run_id=..., set "
                f"{names.RUN_ID}, or start under a launcher whose job id names the run")
    resolved = resolve_run_id(run_id, config.run_id, launcher)
    if fork is not None and fork[0] == resolved:
        raise InvalidArgumentError(
            f"fork_from: run {resolved} cannot fork from itself; give the fork its own "
            f"run id (or none)")
    typed = params_mod.typed_params(params) if params else {}
    tag_text = params_mod.tag_values(tags) if tags else {}
    active = lifecycle.active()
    plan = _Start(name=name, fork=fork, start_step=first)
    if active is None or active.id != resolved or active.experiment != experiment:
        # (A second init of the active run returns it below: nothing to ask.)
        if config.resume:
            plan = _resume_plan(resolved, experiment, typed, plan, env)
        elif fork is not None:
            _check_parent(resolved, fork, env)
    run, created = lifecycle.activate(resolved, experiment, lambda: Run(
        experiment=experiment, run_id=resolved, name=plan.name, launcher=launcher,
        config=config, resumed=config.resume, fork_from=plan.fork,
        start_step=plan.first_step(), stored_params=plan.stored_params))
    if not created:
        return run
    lifecycle.install_hooks()
    if typed:
        run.log_params(params or {})
    if tag_text:
        run.set_tags(tag_text)
    return run


def _check_fork(fork_from: object) -> tuple[str, int] | None:
    """``fork_from`` as (run id, step), or InvalidArgumentError."""
    if fork_from is None:
        return None
    if not isinstance(fork_from, tuple | list) or len(fork_from) != 2:
        raise InvalidArgumentError(
            f"fork_from must be a (run_id, step) pair, got {fork_from!r:.80}")
    parent, step = fork_from
    check_run_id(parent, name="fork_from run id", error=InvalidArgumentError)
    return parent, _check_step(step)


def _check_immutable(typed: Mapping[str, tuple[str, events_pb2.ParamType]],
                     known: Mapping[str, tuple[str, events_pb2.ParamType]]) -> None:
    """InvalidArgumentError if a param of ``typed`` has another value in ``known``."""
    for key, (text, ptype) in typed.items():
        old = known.get(key)
        if old is not None and old != (text, ptype):
            raise InvalidArgumentError(
                f"param {key!r} was already logged as {old[0]!r}; cannot change it "
                f"to {text!r} (params are immutable within a run)"
            )


def _names_a_run(run_id: str | None, env_run_id: str | None, launcher: LauncherInfo) -> bool:
    """Whether the run id init resolves could be an earlier start's: given, or the
    launcher's (its job id, or one it derives the same way again on a restart) - not the
    fresh uuid4 of a lone process."""
    return (run_id is not None or env_run_id is not None or launcher.run_id is not None
            or launcher.world_size > 1 or bool(getattr(launcher, "one_node", False))
            or bool(getattr(launcher, "batch_job", "")))


@dataclass(frozen=True)
class _Start:
    """How init starts the Run: its name, fork, first auto step (None: the default) and
    the params a resumed run has stored."""

    name: str | None
    fork: tuple[str, int] | None
    start_step: int | None
    stored_params: Mapping[str, tuple[str, events_pb2.ParamType]] = field(
        default_factory=dict)

    def first_step(self) -> int:
        if self.start_step is not None:
            return self.start_step
        # A fork (also a resumed one without points of its own) goes on after fork_step.
        return self.fork[1] + 1 if self.fork is not None else 0


def _resume_plan(run_id: str, experiment: str,
                 typed: Mapping[str, tuple[str, events_pb2.ParamType]], plan: _Start,
                 env: Mapping[str, str]) -> _Start:
    """What a resume takes from the stored run: ConfigError if the query service does
    not know it, InvalidArgumentError for another experiment or a changed param of
    ``typed``; with no answer, ``plan`` as it is and the one warning."""
    found = resume_mod.read_run(run_id, env, purpose="resume")
    prior = found.prior
    if prior is None:
        log.warning(
            "runstream: resuming run %s without a query service (%s): steps without step= "
            "start at %d%s, and a param logged with another value than before is recorded "
            "by the server as a conflict (the first value stays), not refused here",
            run_id, found.unavailable, plan.first_step(),
            "" if plan.start_step is not None else " (pass init(start_step=...) to continue "
            "from your checkpoint's step)")
        return plan
    if prior.experiment and prior.experiment != experiment:
        raise InvalidArgumentError(
            f"run {run_id} is in experiment {prior.experiment!r}, not {experiment!r}; "
            "resume it in its own experiment")
    _check_immutable(typed, prior.params)
    start = plan.start_step
    if start is None and prior.last_step is not None:
        start = min(prior.last_step + 1, MAX_STEP)
    return _Start(
        name=plan.name if plan.name is not None else (prior.name or None),
        # The fork a resumed fork was started as (its RunStarted says it again).
        fork=(prior.fork_run_id, prior.fork_step) if prior.fork_run_id else plan.fork,
        start_step=start, stored_params=prior.params)


def _check_parent(run_id: str, fork: tuple[str, int], env: Mapping[str, str]) -> None:
    """ConfigError if the query service does not know the fork's parent; a warning when
    no service answered or the fork step is past the parent's last stored step."""
    found = resume_mod.read_run(fork[0], env, purpose="fork from")
    parent = found.prior
    if parent is None:
        log.warning("runstream: run %s forks from %s at step %d without a query service "
                    "(%s): that the parent exists is not checked",
                    run_id, fork[0], fork[1], found.unavailable)
    elif parent.last_step is None or parent.last_step < fork[1]:
        log.warning("runstream: run %s forks from %s at step %d, past the last step stored "
                    "of it (%s): its history has a gap until its own points",
                    run_id, fork[0], fork[1], parent.last_step)


def active_run() -> Run | None:
    """The run init() returned and finish() has not ended, if any."""
    return lifecycle.active()


def finish(status: str = "FINISHED", error: str = "") -> None:
    """Finish the active run, if any (see :meth:`Run.finish`). Blocks up to 10 s."""
    run = lifecycle.active()
    if run is not None:
        run.finish(status, error)
