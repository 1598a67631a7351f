"""Keras 3: :class:`RunstreamCallback` for ``model.fit`` (any backend: JAX, TensorFlow,
torch).

>>> from runstream.integrations.keras import RunstreamCallback
>>> model.fit(x, y, epochs=5, batch_size=64,                        # doctest: +SKIP
...           callbacks=[RunstreamCallback("mnist", params={"batch_size": 64})])

What goes where (``on_train_begin`` joins the run as :func:`runstream.init` does: in a
multi-process job the launcher's environment, torchrun, SLURM or ``RUNSTREAM_RUN_ID``,
names the rank and the shared run):

* rank 0: params ``optimizer.*`` (``model.optimizer.get_config()``), ``fit.epochs`` and
  ``fit.steps_per_epoch`` (what ``fit`` tells callbacks), ``model.name`` and
  ``model.param_count``, plus ``params`` given here (``fit`` does not tell callbacks its
  batch size); batch metrics under Keras' names (``loss``, ``accuracy``: the running
  means Keras reports) every ``log_every_n_batches`` batches at the global batch index
  (0, 1, ... over all epochs); epoch metrics (with ``val_*``) as ``epoch/<name>`` at the
  epoch; at the end of ``fit`` the model, saved as ``model.keras`` (``log_model``).
* every rank: step telemetry (:class:`runstream.telemetry.StepTimer`) from
  ``on_train_batch_begin`` to ``on_train_batch_end``. Keras' backends dispatch
  asynchronously, and a callback with batch hooks makes Keras wait for each batch's
  logs, so the step time is the batch's real time.

The run is flushed at the end of ``fit``, not finished (an ``evaluate`` may follow): it
ends at exit through :mod:`runstream.lifecycle` (FINISHED; FAILED on an uncaught
exception; KILLED on Ctrl-C or SIGTERM) or at :meth:`finish`. A run the script started
itself is used and never finished here. Importing this module imports keras.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from runstream.integrations._common import join_run, loggable_params, numeric_metrics
from runstream.run import Run
from runstream.telemetry import StepTimer

log = logging.getLogger(__name__)


def _short_float(value: Any) -> Any:
    """A float that is exactly a float32 (Keras keeps the learning rate in a float32
    variable: 0.0010000000474974513) as the shortest text that reads back as it (0.001), so
    ``params.optimizer.learning_rate = 0.001`` finds it. Other values unchanged. Pure."""
    if type(value) is not float or float(np.float32(value)) != value:
        return value
    short = float(str(np.float32(value)))
    return short if np.float32(short) == np.float32(value) else value


class RunstreamCallback(keras.callbacks.Callback):
    """Send a Keras ``fit``'s params, batch and epoch metrics, the trained model and
    per-rank step telemetry to a Runstream run.

    ``experiment`` names the experiment; ``run_name``, ``run_id`` and ``tags`` go to
    :func:`runstream.init`, as do other keywords (``kafka``, ``spool_dir``, ...).
    ``params``: more params to record (the batch size, the data). ``log_every_n_batches``:
    0 = epoch metrics only. ``log_model``: save and store the model at the end of ``fit``
    (blocks while saving). ``telemetry``: time steps. Keras calls it from the thread
    that runs ``fit``.
    """

    def __init__(self, experiment: str = "keras", *, run_name: str | None = None,
                 run_id: str | None = None, tags: Mapping[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None, log_every_n_batches: int = 1,
                 log_model: bool = True, telemetry: bool = True, **init_kwargs: Any) -> None:
        super().__init__()
        if log_every_n_batches < 0:
            raise ValueError(f"log_every_n_batches={log_every_n_batches}: expected >= 0")
        self.experiment = experiment
        self._run_name = run_name
        self._run_id = run_id
        self._tags = dict(tags or {})
        self._extra_params = dict(params or {})
        self._init_kwargs = init_kwargs
        self.log_every_n_batches = log_every_n_batches
        self.log_model = log_model
        self.telemetry = telemetry
        self.run: Run | None = None
        self._owned = False
        self._timer: StepTimer | None = None
        self._step = 0
        self._described = False

    @property
    def _zero(self) -> bool:
        return self.run is not None and self.run.rank == 0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.finished:
            run, self._owned = join_run(self.experiment, run_id=self._run_id,
                                        name=self._run_name, tags=self._tags,
                                        init_kwargs=self._init_kwargs)
            self.run = run
        if self.telemetry and self._timer is None:
            self._timer = StepTimer(run)
        if run.rank == 0 and not self._described:
            # Once: a later fit() with other epochs would contradict immutable params.
            run.log_params(self._fit_params())
            self._described = True

    def _fit_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        model = self.model
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            config = {k: _short_float(v) for k, v in optimizer.get_config().items()}
            params.update(loggable_params(config, "optimizer."))
        fit = self.params or {}
        if "epochs" in fit:
            params["fit.epochs"] = fit["epochs"]
        if fit.get("steps") is not None:
            params["fit.steps_per_epoch"] = fit["steps"]
        params["model.name"] = model.name
        try:
            params["model.param_count"] = int(model.count_params())
        except ValueError:  # not built
            pass
        params.update(loggable_params(self._extra_params))
        return params

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._timer is not None:
            self._timer.start_step(self._step)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._timer is not None:
            self._timer.end_step()
        every = self.log_every_n_batches
        if every and logs and self._step % every == 0 and self._zero:
            values = numeric_metrics(logs)
            if values and self.run is not None:
                self.run.log(values, step=self._step)
        self._step += 1

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._timer is not None:
            self._timer.reset()  # validation ran between this epoch's last step and the next
        if logs and self._zero and self.run is not None:
            values = numeric_metrics(logs, prefix="epoch/")
            if values:
                self.run.log(values, step=epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        run = self.run
        if run is None or run.finished:
            return
        if self.log_model and run.rank == 0:
            with tempfile.TemporaryDirectory(prefix="runstream-keras-") as tmp:
                path = Path(tmp) / "model.keras"
                self.model.save(path)
                run.log_artifact(path, name="model.keras")
        run.flush()

    def finish(self, status: str = "FINISHED", error: str = "") -> None:
        """End this rank's part of the run now (a run the script started is left alone).
        Blocks up to 10 s."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        run = self.run
        if run is not None and self._owned and not run.finished:
            run.finish(status, error)
