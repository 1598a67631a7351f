"""Hugging Face Transformers: :class:`RunstreamCallback` for ``transformers.Trainer``.

>>> from runstream.integrations.transformers import RunstreamCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=train,  # doctest: +SKIP
...                   callbacks=[RunstreamCallback("bert-finetune")])
>>> trainer.train()                                                  # doctest: +SKIP

The Trainer calls every callback on every rank. The first call joins the run: when a
``torch.distributed`` process group is up, rank 0 picks the id (``run_id`` >
``RUNSTREAM_RUN_ID`` > the launcher's job id > a fresh one) and broadcasts it, so every
rank of a torchrun or ``accelerate launch`` job joins one run, with a static rendezvous
too. Without torch the launcher's environment decides, as in :func:`runstream.init`.

What goes where:

* rank 0 (``state.is_world_process_zero``): ``TrainingArguments.to_dict()`` as params
  (flat: ``learning_rate``, ...), the model's config as ``model.*`` params; each dict the
  Trainer logs (``on_log``: loss, learning_rate, grad_norm, the eval_* metrics of
  ``evaluate``) at ``state.global_step``; each checkpoint the Trainer saves (``on_save``)
  as the artifact ``checkpoints/checkpoint-<step>``; the train and eval data sets the
  model card names (a ``datasets.Dataset``'s ``builder_name``/``config_name``, with its
  fingerprint as digest) as inputs, plus any ``inputs`` given.
* every rank: step telemetry (:class:`runstream.telemetry.StepTimer`) from
  ``on_step_begin`` to ``on_step_end`` at step ``global_step`` after the step. ``on_log``'s
  loss is already averaged over the ranks; per-rank data is this.

The run is not finished at ``on_train_end`` (it is flushed; an ``evaluate()`` after
``train()`` still logs): it ends at exit through :mod:`runstream.lifecycle` (FINISHED;
FAILED on an uncaught exception, KILLED on Ctrl-C or SIGTERM), or at :meth:`finish`. A
run the script started itself (``runstream.init``) is used and never finished here.
Importing this module imports transformers' callback API (which does not need torch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

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

#: transformers.trainer_utils.PREFIX_CHECKPOINT_DIR
CHECKPOINT_PREFIX = "checkpoint"


def dataset_input(dataset: Any) -> tuple[str, str, str | None] | None:
    """(uri, name, digest) of a Hugging Face ``datasets.Dataset`` as its model card names
    it (``builder_name``, ``config_name``; the fingerprint as digest), or None for a data
    set without a name (an in-memory one, a torch Dataset). Pure."""
    builder = getattr(dataset, "builder_name", None)
    if not isinstance(builder, str) or not builder:
        return None
    config = getattr(dataset, "config_name", None)
    name = f"{builder}/{config}" if isinstance(config, str) and config not in ("", "default") \
        else builder
    fingerprint = getattr(dataset, "_fingerprint", None)
    return (f"hf://datasets/{name}", name,
            fingerprint if isinstance(fingerprint, str) and fingerprint else None)


class RunstreamCallback(TrainerCallback):
    """Send a Trainer's params, logs, checkpoints, inputs and per-rank telemetry to one
    Runstream run per job.

    ``experiment`` names the experiment; ``run_name`` (default: ``args.run_name``),
    ``run_id`` and ``tags`` go to :func:`runstream.init`, as do other keywords (``kafka``,
    ``spool_dir``, ...). ``log_checkpoints``: store checkpoints as artifacts (blocks rank 0
    while copying). ``inputs``: name -> URI or path of data sets to record as well.
    ``telemetry``: time steps on every rank. The Trainer calls it from its loop's thread.
    """

    def __init__(self, experiment: str = "huggingface", *, run_name: str | None = None,
                 run_id: str | None = None, tags: Mapping[str, Any] | None = None,
                 log_checkpoints: bool = True, inputs: Mapping[str, str] | None = None,
                 telemetry: bool = True, **init_kwargs: Any) -> None:
        self.experiment = experiment
        self._run_name = run_name
        self._run_id = run_id
        self._tags = dict(tags or {})
        self._inputs = dict(inputs or {})
        self._init_kwargs = init_kwargs
        self.log_checkpoints = log_checkpoints
        self.telemetry = telemetry
        self.run: Run | None = None
        self._owned = False
        self._job_run_id: str | None = None
        self._timer: StepTimer | None = None
        self._described = False

    # --- joining the run ----------------------------------------------------------------

    def _join(self, args: Any, state: Any, **kwargs: Any) -> Run:
        run = self.run
        if run is not None and not run.finished:
            return run
        dist = process_group()
        rank = world_size = local_rank = None
        if dist is not None:
            rank, world_size = dist.get_rank(), dist.get_world_size()
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
            if self._job_run_id is None:
                chosen = [rank0_run_id(self._run_id, os.environ) if rank == 0 else None]
                dist.broadcast_object_list(chosen, src=0)
                self._job_run_id = chosen[0]
        zero = bool(state.is_world_process_zero)
        run, self._owned = join_run(
            self.experiment, run_id=self._job_run_id or self._run_id, rank=rank,
            world_size=world_size, local_rank=local_rank,
            name=self._run_name or getattr(args, "run_name", None) or None,
            tags=self._tags if zero else None, init_kwargs=self._init_kwargs)
        self._job_run_id = run.id
        self.run = run
        if self.telemetry:
            self._timer = StepTimer(run)
        if zero and not self._described:
            self._describe(run, args, **kwargs)
            self._described = True
        return run

    def _describe(self, run: Run, args: Any, model: Any = None, train_dataloader: Any = None,
                  eval_dataloader: Any = None, **_: Any) -> None:
        """Rank 0's params and inputs."""
        params = loggable_params(args.to_dict())
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            params.update(loggable_params(config.to_dict(), "model."))
        if params:
            run.log_params(params)
        for role, loader in (("train", train_dataloader), ("eval", eval_dataloader)):
            ref = dataset_input(getattr(loader, "dataset", None))
            if ref is not None:
                run.log_input(ref[0], name=ref[1], digest=ref[2], role=role)
        for name, uri in self._inputs.items():
            run.log_input(uri, name=name)

    def finish(self, status: str = "FINISHED", error: str = "") -> None:
        """End this rank's part of the run now (a run the script started is left alone).
        Blocks up to 10 s."""
        run = self.run
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if run is not None and self._owned and not run.finished:
            run.finish(status, error)

    # --- the Trainer's events -----------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._join(args, state, **kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._join(args, state)
        if self._timer is not None:
            self._timer.start_step(state.global_step + 1)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._timer is not None:
            self._timer.end_step()

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> None:
        run = self._join(args, state, **kwargs)
        if state.is_world_process_zero and logs:
            values = numeric_metrics(logs)
            if values:
                run.log(values, step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The metrics themselves arrive through on_log (Trainer.evaluate logs them).
        if self._timer is not None:
            self._timer.reset()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self._join(args, state)
        if self._timer is not None:
            self._timer.reset()
        if not (self.log_checkpoints and state.is_world_process_zero):
            return
        name = f"{CHECKPOINT_PREFIX}-{state.global_step}"
        folder = Path(args.output_dir) / name
        if folder.is_dir():
            run.log_artifact(folder, name=f"checkpoints/{name}")
        else:
            log.warning("runstream: no checkpoint folder %s to store", folder)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        run = self.run
        if run is not None and not run.finished:
            run.flush()
