"""PyTorch Lightning: :class:`RunstreamLogger` for run-level data, :class:`RunstreamCallback`
for per-rank step telemetry.

>>> from runstream.integrations.lightning import RunstreamCallback, RunstreamLogger
>>> trainer = L.Trainer(logger=RunstreamLogger("mnist"),            # doctest: +SKIP
...                     callbacks=[RunstreamCallback()], strategy="ddp", devices=2)

One run per job, whoever starts the ranks. Lightning reads ``logger.experiment`` on every
rank while it sets up (after the process group is up, before any callback's ``setup``);
there rank 0 picks the run id (``run_id`` > ``RUNSTREAM_RUN_ID`` > the launcher's job id
(torchrun, SLURM) > a fresh one) and ``torch.distributed`` broadcasts it to the others, so
Lightning's own ``ddp``/``ddp_spawn`` launchers (which set no RANK) and torchrun with a
static rendezvous (no job id) join one run too. Each rank joins with the rank and world
size the process group says.

Run-level data is rank 0's: hyperparameters, the metrics Lightning logs (at the trainer's
step; reduce them with ``sync_dist=True`` to log the mean of all ranks), checkpoints
(content-addressed artifacts ``checkpoints/<file name>``, copied when ModelCheckpoint saves
them; this blocks rank 0 while copying). Every rank sends its status: ``finalize``
"success" -> FINISHED, "failed" -> FAILED (KILLED for KeyboardInterrupt), "finished"
(SLURM auto-requeue) -> KILLED. After ``finalize`` a later ``trainer.test()`` rejoins the
same run.

The logger cannot see a batch start, so the per-rank telemetry (``telemetry/*`` of
:class:`runstream.telemetry.StepTimer`) needs :class:`RunstreamCallback`; without it, the
other ranks still join the run and send their status, but no step times. Importing this
module imports Lightning (and torch).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

import runstream
from runstream.integrations._common import (
    join_run,
    loggable_params,
    numeric_metrics,
    process_group,
    rank0_run_id,
)
from runstream.run import Run
from runstream.telemetry import StepTimer

log = logging.getLogger(__name__)

#: Lightning's finalize() status -> the run status this rank ends with.
STATUS = {"success": "FINISHED", "failed": "FAILED", "finished": "KILLED"}


def run_status(status: str, exc: BaseException | None) -> tuple[str, str]:
    """(run status, error text) for Lightning's ``finalize(status)``, called while
    ``exc`` (if any) is being handled. Pure."""
    ended = STATUS.get(status, "FINISHED")
    if ended == "FAILED" and isinstance(exc, KeyboardInterrupt):
        ended = "KILLED"
    error = ""
    if exc is not None and ended != "FINISHED":
        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    elif status == "finished":
        error = "stopped for a SLURM requeue (Lightning auto-requeue)"
    return ended, error


class RunstreamLogger(Logger):
    """A Lightning logger that sends to one Runstream run per job.

    ``experiment`` names the Runstream experiment; ``run_name``, ``run_id`` and ``tags``
    go to :func:`runstream.init`, as does any other keyword (``kafka``, ``spool_dir``,
    ...). ``log_checkpoints``: store each checkpoint ModelCheckpoint saves as an artifact.
    If a run is already active in the process (the script called ``runstream.init``), the
    logger uses it and leaves finishing it to the script.

    Lightning calls it from the training loop's thread; the methods are not meant to be
    called concurrently. ``log_metrics`` and ``log_hyperparams`` never block on I/O;
    saving a checkpoint blocks while it is copied into the artifact store.
    """

    def __init__(self, experiment: str = "lightning", *, run_name: str | None = None,
                 run_id: str | None = None, tags: Mapping[str, Any] | None = None,
                 log_checkpoints: bool = True, **init_kwargs: Any) -> None:
        super().__init__()
        self._experiment_name = experiment
        self._run_name = run_name
        self._run_id = run_id
        self._tags = dict(tags or {})
        self._init_kwargs = init_kwargs
        self.log_checkpoints = log_checkpoints
        self._run: Run | None = None
        self._owned = False
        self._job_run_id: str | None = None
        self._shared = False  # the job's run id went through the process group
        self._stored: dict[str, tuple[float, int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the logger into each worker: each joins the run there.
        state = self.__dict__.copy()
        state["_run"] = None
        return state

    # --- Lightning's Logger interface ------------------------------------------------

    @property
    def name(self) -> str:
        return self._experiment_name

    @property
    def version(self) -> str:
        """The run id once the run is joined (Lightning joins it before ModelCheckpoint
        asks for its folder name); before that the id given, or "". Never joins: reading
        it in the launching process of ddp_spawn must not start a run there."""
        run = self._run
        return run.id if run is not None else (self._job_run_id or self._run_id or "")

    @property
    def experiment(self) -> Run:
        """This rank's :class:`runstream.Run` (joined on first use; Lightning's setup does
        that on every rank at once, which the run id broadcast relies on)."""
        run = self._run
        if run is None or run.finished or (not self._shared and process_group() is not None):
            run = self._join()
        return run

    def _join(self) -> Run:
        dist = process_group()
        rank = world_size = local_rank = None
        if dist is not None:
            rank, world_size = dist.get_rank(), dist.get_world_size()
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
            if not self._shared:
                # Rank 0 may have joined before the process group was up (the script read
                # logger.experiment before fit): its run's id is the job's then.
                chosen: list[str | None] = [None]
                if rank == 0:
                    chosen = [self._job_run_id or rank0_run_id(self._run_id, os.environ)]
                dist.broadcast_object_list(chosen, src=0)
                self._job_run_id = chosen[0]
                self._shared = True
        current = self._run
        if current is not None and not current.finished and current.id == self._job_run_id:
            return current
        run, self._owned = join_run(
            self._experiment_name, run_id=self._job_run_id or self._run_id, rank=rank,
            world_size=world_size, local_rank=local_rank, name=self._run_name,
            tags=self._tags if (rank or 0) == 0 else None, init_kwargs=self._init_kwargs)
        self._job_run_id = run.id
        self._run = run
        return run

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any,
                        **kwargs: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        values = loggable_params(params)
        if values:
            self.experiment.log_params(values)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = numeric_metrics(metrics)
        if values:
            self.experiment.log(values, step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self.log_checkpoints:
            self._store_checkpoints(checkpoint_callback)

    def _store_checkpoints(self, checkpoint_callback: Any) -> None:
        """Store the checkpoints ModelCheckpoint keeps that are new or changed since the
        last call (by size and mtime)."""
        paths = [*getattr(checkpoint_callback, "best_k_models", {}),
                 getattr(checkpoint_callback, "last_model_path", ""),
                 getattr(checkpoint_callback, "best_model_path", "")]
        run = self.experiment
        for raw in dict.fromkeys(p for p in paths if p):
            path = Path(raw)
            try:
                stat = path.stat()
            except OSError:
                continue  # removed meanwhile (top-k), or on another node's disk
            stamp = (stat.st_mtime, stat.st_size)
            if self._stored.get(str(path)) != stamp:
                run.log_artifact(path, name=f"checkpoints/{path.name}")
                self._stored[str(path)] = stamp

    def save(self) -> None:
        """Nothing to do: the run's sender thread sends continuously."""

    def finalize(self, status: str) -> None:
        """End this rank's part of the run with Lightning's status (called on every rank,
        while the exception of a failed fit is being handled). Blocks up to 10 s."""
        run = self._run
        if run is None or run.finished:
            return
        if not self._owned:
            run.flush()
            return
        ended, error = run_status(status, sys.exc_info()[1])
        run.finish(ended, error)


class RunstreamCallback(Callback):
    """Per-rank step telemetry for Lightning (:class:`runstream.telemetry.StepTimer` on
    every rank, between ``on_train_batch_start`` and ``on_train_batch_end``), into the
    run of the trainer's :class:`RunstreamLogger` (or the active run).

    ``device_memory``: sample this rank's GPU memory too. Validation and checkpointing are
    left out of the next step's data wait. Costs two clock reads and one ``Run.log`` per
    batch.
    """

    def __init__(self, *, device_memory: bool = True) -> None:
        self.device_memory = device_memory
        self._timer: StepTimer | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_timer"] = None
        return state

    def _run_of(self, trainer: Any) -> Run | None:
        for logger in trainer.loggers:
            if isinstance(logger, RunstreamLogger):
                return logger.experiment
        return runstream.active_run()

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        run = self._run_of(trainer)
        if run is None:
            if not self._warned:
                log.warning("runstream: RunstreamCallback found no RunstreamLogger in the "
                            "trainer and no active run; no step telemetry")
                self._warned = True
            return
        self._close_timer()
        self._timer = StepTimer(run, device_memory=self.device_memory)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        if self._timer is not None:
            self._timer.start_step(trainer.global_step)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._timer is not None:
            self._timer.end_step()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._timer is not None:
            self._timer.reset()

    def on_save_checkpoint(self, trainer: Any, pl_module: Any,
                           checkpoint: dict[str, Any]) -> None:
        if self._timer is not None:
            self._timer.reset()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._close_timer()

    def _close_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.close()
