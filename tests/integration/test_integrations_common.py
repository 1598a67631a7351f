"""What the integrations share, framework-free: hyperparameter objects flattened into
params, logged dicts into metrics, rank 0's choice of the job's run id, and how the
Hugging Face callback names a data set."""

from __future__ import annotations

import argparse
import dataclasses
import enum
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from runstream.integrations._common import loggable_params, numeric_metrics, rank0_run_id
from runstream.integrations.transformers import dataset_input
from runstream.proto.validation import MAX_PARAM_VALUE_LEN


class Schedule(enum.Enum):
    LINEAR = "linear"


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)


def test_hyperparameters_become_flat_params() -> None:
    params = loggable_params({
        "model": {"layers": 2, "act": None}, "optim": Optim(), "sched": Schedule.LINEAR,
        "ns": argparse.Namespace(seed=1), "path": Path("/data/x"), "obj": object,
        "flag": True, 3: "int key",
    })
    assert params == {
        "model.layers": 2, "model.act": None, "optim.lr": 0.1, "optim.betas": "[0.9, 0.99]",
        "sched": "linear", "ns.seed": 1, "path": "/data/x", "obj": str(object),
        "flag": True, "3": "int key",
    }


def test_long_values_are_cut_and_long_keys_left_out() -> None:
    params = loggable_params({"text": "x" * (MAX_PARAM_VALUE_LEN + 10), "k" * 300: 1})
    assert list(params) == ["text"]
    assert len(params["text"]) == MAX_PARAM_VALUE_LEN and params["text"].endswith("...")


def test_only_numbers_become_metrics() -> None:
    logs = {"loss": 0.5, "step": 3, "ok": True, "np": np.float32(0.25), "name": "x",
            "none": None, "vector": np.ones(3)}
    assert numeric_metrics(logs, prefix="m/") == {"m/loss": 0.5, "m/step": 3.0, "m/ok": 1.0,
                                                  "m/np": 0.25}


def test_rank0_picks_the_explicit_id_then_the_env_then_the_launchers_then_a_fresh_one() -> None:
    torchrun = {"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "job-7"}
    assert rank0_run_id("mine", {**torchrun, "RUNSTREAM_RUN_ID": "env"}) == "mine"
    assert rank0_run_id(None, {**torchrun, "RUNSTREAM_RUN_ID": "env"}) == "env"
    assert rank0_run_id(None, torchrun) == "job-7"
    static = {**torchrun, "TORCHELASTIC_RUN_ID": "none"}  # no job id: broadcast a fresh one
    fresh = rank0_run_id(None, static)
    assert len(fresh) == 32 and fresh != rank0_run_id(None, static)


def test_a_hub_dataset_is_named_as_its_model_card_names_it() -> None:
    hub = SimpleNamespace(builder_name="glue", config_name="mrpc", _fingerprint="abc")
    assert dataset_input(hub) == ("hf://datasets/glue/mrpc", "glue/mrpc", "abc")
    plain = SimpleNamespace(builder_name="imdb", config_name="default")
    assert dataset_input(plain) == ("hf://datasets/imdb", "imdb", None)
    assert dataset_input(SimpleNamespace()) is None
    assert dataset_input(None) is None
