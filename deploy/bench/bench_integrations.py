"""Integrations benchmark: what the framework callbacks cost per training step.

The same model (an MLP 32 -> 64 -> 64 -> 1) and data (4096 rows, batch 32: 128 steps an
epoch, 3 epochs) trained with and without Runstream's integration, alternately, REPEATS
times each: a Keras 3 ``fit`` (JAX backend, CPU) with and without
``runstream.integrations.keras.RunstreamCallback``, and (when torch is installed) a
Lightning ``fit`` (CPU, one device) with ``logger=False`` against ``RunstreamLogger`` +
``RunstreamCallback``. A step is the time between two consecutive batch starts, taken by
a probe callback present in both variants (compilation and epoch boundaries are left
out: the median step of a fit, then the median over fits). The integration sends to a
local spool in a temp dir (batch metrics, step telemetry; no checkpoints or model saved).
A third variant, "hooks", has empty batch hooks (and, for Lightning, a logger that drops
everything): the framework's own price of any callback. Last, the integration's hooks are
called directly in a loop: the CPU time Runstream itself adds per step, free of the
framework's noise.

    python deploy/bench/bench_integrations.py        # or: make bench BENCH=integrations
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
ROWS, FEATURES, BATCH, EPOCHS = 4096, 32, 32, 3
STEPS = ROWS // BATCH * EPOCHS


def median_step_s(starts: list[float], per_epoch: int) -> float:
    """Median gap between consecutive batch starts within an epoch."""
    gaps = [b - a for i, (a, b) in enumerate(itertools.pairwise(starts))
            if (i + 1) % per_epoch]
    return statistics.median(gaps[per_epoch // 4:])  # past the first epoch's warm-up


MODES = ("none", "hooks", "runstream")


def compare(fit: Callable[[str], list[float]]) -> dict[str, float]:
    """Median step s per mode (``MODES``), the modes alternating fit by fit."""
    steps: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_epoch = ROWS // BATCH
    fit("none")  # compile/warm caches once, unmeasured
    for _ in range(REPEATS):
        for mode in MODES:
            steps[mode].append(median_step_s(fit(mode), per_epoch))
    return {mode: statistics.median(values) for mode, values in steps.items()}


def keras_fit() -> Callable[[str], list[float]]:
    import keras
    import numpy as np

    from runstream.integrations.keras import RunstreamCallback

    rng = np.random.default_rng(0)
    x = rng.random((ROWS, FEATURES), dtype=np.float32)
    y = x.sum(axis=1, keepdims=True)

    class Probe(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.starts: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.starts.append(time.perf_counter())

    class Hooks(keras.callbacks.Callback):
        """Empty batch hooks: what any callback with them costs (Keras then waits for
        each batch's logs instead of dispatching asynchronously)."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            pass

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            pass

    def fit(mode: str) -> list[float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((FEATURES,)),
                                  keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(64, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
        probe = Probe()
        callbacks: list[Any] = [probe]
        runstream_cb = None
        if mode == "hooks":
            callbacks.append(Hooks())
        elif mode == "runstream":
            runstream_cb = RunstreamCallback("bench-integrations", log_model=False)
            callbacks.append(runstream_cb)
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=False,
                  callbacks=callbacks)
        if runstream_cb is not None:
            runstream_cb.finish()
        return probe.starts

    return fit


def lightning_fit() -> Callable[[str], list[float]]:
    import lightning as L
    import torch
    from lightning.pytorch.loggers.logger import Logger
    from torch.utils.data import DataLoader, TensorDataset

    from runstream.integrations.lightning import RunstreamCallback, RunstreamLogger

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(ROWS, FEATURES, generator=g)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                torch.nn.ReLU(), torch.nn.Linear(64, 1))

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            xb, yb = batch
            loss = torch.nn.functional.mse_loss(self.net(xb), yb)
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Probe(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any,
                                 batch_idx: int) -> None:
            self.starts.append(time.perf_counter())

    class Hooks(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            pass

        def on_train_batch_end(self, *args: Any) -> None:
            pass

    class NullLogger(Logger):
        """A logger that drops everything: Lightning's own cost of having a logger
        (metrics turned into floats every step)."""

        name = "null"
        version = "0"

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    def fit(mode: str) -> list[float]:
        torch.manual_seed(0)
        probe = Probe()
        logger: Any = False
        callbacks: list[Any] = [probe]
        if mode == "hooks":
            logger = NullLogger()
            callbacks.append(Hooks())
        elif mode == "runstream":
            logger = RunstreamLogger("bench-integrations", log_checkpoints=False)
            callbacks.append(RunstreamCallback(device_memory=False))
        trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=logger,
                            callbacks=callbacks, log_every_n_steps=1,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(MLP(), DataLoader(data, batch_size=BATCH))
        return probe.starts

    return fit


HOOK_CALLS = 20_000


def keras_hooks_s() -> float:
    """Seconds per step of the Keras callback's own batch hooks, called directly (a logs
    dict as Keras passes it: two Python floats), sending to the spool."""
    import keras

    from runstream.integrations.keras import RunstreamCallback

    callback = RunstreamCallback("bench-integrations", log_model=False)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": HOOK_CALLS, "verbose": 0})
    callback.on_train_begin()
    begin, end = callback.on_train_batch_begin, callback.on_train_batch_end
    t0 = time.perf_counter()
    for i in range(HOOK_CALLS):
        begin(i)
        end(i, {"loss": 0.5, "mae": 0.25})
    elapsed = time.perf_counter() - t0
    callback.finish()
    return elapsed / HOOK_CALLS


def lightning_hooks_s() -> float:
    """Seconds per step of RunstreamCallback's batch hooks plus one
    ``RunstreamLogger.log_metrics`` (two metrics, as Lightning passes them), called
    directly, sending to the spool."""
    from types import SimpleNamespace

    from runstream.integrations.lightning import RunstreamCallback, RunstreamLogger

    logger = RunstreamLogger("bench-integrations", log_checkpoints=False)
    callback = RunstreamCallback(device_memory=False)
    trainer = SimpleNamespace(loggers=[logger], global_step=0)
    callback.setup(trainer, None, "fit")
    start, end, log_metrics = (callback.on_train_batch_start, callback.on_train_batch_end,
                               logger.log_metrics)
    t0 = time.perf_counter()
    for i in range(HOOK_CALLS):
        trainer.global_step = i
        start(trainer, None, None, i)
        log_metrics({"loss": 0.5, "epoch": 0.0}, step=i)
        end(trainer, None, None, None, i)
    elapsed = time.perf_counter() - t0
    logger.finalize("success")
    return elapsed / HOOK_CALLS


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="runstream-bench-integrations-") as tmp:
        os.environ.update({
            "KERAS_BACKEND": "jax", "RUNSTREAM_HOME": str(Path(tmp) / "home"),
            "RUNSTREAM_SPOOL_DIR": str(Path(tmp) / "spool"),
            "RUNSTREAM_ARTIFACTS": str(Path(tmp) / "artifacts"),
            "RUNSTREAM_SYSTEM_METRICS_S": "0",
        })
        os.environ.pop("RUNSTREAM_KAFKA", None)
        for noisy in ("lightning.pytorch", "lightning.fabric"):
            __import__("logging").getLogger(noisy).setLevel("ERROR")
        rows = []
        benches: list[tuple[str, Callable[[], Callable[[str], list[float]]]]] = [
            ("Keras 3 fit (JAX, CPU)", keras_fit)]
        hooks: list[tuple[str, Callable[[], float]]] = [("Keras callback", keras_hooks_s)]
        if importlib.util.find_spec("torch") and importlib.util.find_spec("lightning"):
            benches.append(("Lightning fit (CPU, 1 device)", lightning_fit))
            hooks.append(("Lightning logger + callback", lightning_hooks_s))
        else:
            print("bench: torch/lightning not installed: Lightning row left out "
                  "(pip install -e '.[frameworks]')", file=sys.stderr)
        for label, make in benches:
            t0 = time.perf_counter()
            rows.append((label, compare(make()), time.perf_counter() - t0))
        hook_rows = [(label, statistics.median(measure() for _ in range(REPEATS)))
                     for label, measure in hooks]
    print(f"{ROWS} rows, batch {BATCH}, {EPOCHS} epochs ({STEPS} steps a fit), median step "
          f"over {REPEATS} fits per variant, alternating. 'hooks': empty batch hooks (Keras) /"
          " empty hooks + a logger that drops everything (Lightning): the framework's own "
          "cost of any callback or logger")
    head = (f"{'fit':30} {'without':>10} {'hooks':>10} {'runstream':>10} "
            f"{'overhead vs without':>21} {'vs hooks':>18}")
    print(head)
    print("-" * len(head))
    for label, step, _ in rows:
        base, hooks, ours = step["none"], step["hooks"], step["runstream"]
        print(f"{label:30} {base * 1e6:>7.1f} µs {hooks * 1e6:>7.1f} µs {ours * 1e6:>7.1f} µs "
              f"{(ours - base) * 1e6:>9.1f} µs {(ours - base) / base * 100:>6.1f}% "
              f"{(ours - hooks) * 1e6:>7.1f} µs {(ours - hooks) / base * 100:>6.1f}%")
    print(f"\nThe integration's own hooks called directly, {HOOK_CALLS:,} steps, median of "
          f"{REPEATS} (batch metrics + step telemetry through Run.log)")
    for label, per_step in hook_rows:
        print(f"{label:30} {per_step * 1e6:>7.2f} µs per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
