"""The Keras callback in a real Keras 3 ``fit`` (JAX backend, CPU), two ranks of one job,
through the whole pipeline: SDK -> local spool -> `runstream serve` (consumer + embedded
ClickHouse + gRPC) -> runstream.query.Client.

Each rank is a subprocess running this file (KERAS_BACKEND must be set before keras is
imported): rank 0 sends params, batch and epoch metrics and the saved model; both ranks
send step telemetry and their status.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstream.proto.config import TELEMETRY_DATA_WAIT, TELEMETRY_STEP_TIME
from runstream.proto.errors import NotFoundError
from runstream.query.client import Client
from runstream.query.models import Run
from tests import helpers
from tests.helpers import local_store_env, wait_for

EPOCHS = 2
SAMPLES = 128
BATCH = 16
STEPS_PER_EPOCH = SAMPLES * 3 // 4 // BATCH  # validation_split=0.25


def job() -> None:
    """One rank's training script (run as ``python this_file.py``)."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras
    import numpy as np

    from runstream.integrations.keras import RunstreamCallback

    rng = np.random.default_rng(int(os.environ["RANK"]))
    x = rng.random((SAMPLES, 8), dtype=np.float32)
    y = (x.sum(axis=1) > 4).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                  loss="binary_crossentropy", metrics=["accuracy"])
    callback = RunstreamCallback("keras-it", params={"batch_size": BATCH})
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, validation_split=0.25, verbose=0,
              callbacks=[callback])
    # The run ends at exit (runstream.lifecycle), FINISHED.


@contextlib.contextmanager
def serving(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`runstream serve` over a spool dir, healthy; yields the SDK's environment pointing
    at it."""
    env = {k: v for k, v in local_store_env(
        tmp_path, RUNSTREAM_SYSTEM_METRICS_S="0",
        PYTHONPATH=str(Path(__file__).resolve().parents[2])).items()
        if not k.startswith("KERAS")}
    with helpers.serving(env):
        yield env


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(tmp_path) as env:
        yield env


def finished_run(client: Client, run_id: str, world_size: int) -> Run:
    def get() -> Run | None:
        try:
            return client.get_run(run_id)
        except NotFoundError:  # not ingested yet
            return None

    run = wait_for(get, lambda r: r is not None and len(r.ranks) == world_size
                   and all(rk.status == "FINISHED" for rk in r.ranks),
                   timeout_s=120, what=f"{world_size} ranks FINISHED")
    assert run is not None
    return run


def test_keras_fit_on_two_ranks_sends_one_run(serve_env: dict[str, str]) -> None:
    run_id = f"keras-{uuid.uuid4().hex[:8]}"
    ranks = [subprocess.Popen(
        [sys.executable, __file__],
        env={**serve_env, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
             "RUNSTREAM_RUN_ID": run_id}) for r in range(2)]
    assert [p.wait(timeout=180) for p in ranks] == [0, 0]
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        wait_for(client.healthy, timeout_s=60, what="runstream serve")
        run = finished_run(client, run_id, 2)
        params = {p.key: p.value for p in run.params}
        assert params["optimizer.name"] == "adam"
        assert params["optimizer.learning_rate"] == "0.001"
        assert params["fit.epochs"] == str(EPOCHS)
        assert params["fit.steps_per_epoch"] == str(STEPS_PER_EPOCH)
        assert params["batch_size"] == str(BATCH)
        assert not run.param_conflicts  # rank 1 sent none
        assert [a.name for a in run.artifacts] == ["model.keras"]
        assert run.artifacts[0].size_bytes > 0
        steps = list(range(EPOCHS * STEPS_PER_EPOCH))
        for key in ("loss", "accuracy"):
            history = client.metric_history(run_id, key)
            assert list(history.steps) == steps
            assert set(history.ranks) == {0}
        val = client.metric_history(run_id, "epoch/val_loss")
        assert list(val.steps) == list(range(EPOCHS)) and set(val.ranks) == {0}
        for rank in (0, 1):
            step_time = client.metric_history(run_id, TELEMETRY_STEP_TIME, ranks=[rank])
            assert list(step_time.steps) == steps
            assert all(v > 0 for v in step_time.values)
            wait = client.metric_history(run_id, TELEMETRY_DATA_WAIT, ranks=[rank])
            assert len(wait.steps) == len(steps) - EPOCHS  # none at an epoch's first step


if __name__ == "__main__":
    job()
