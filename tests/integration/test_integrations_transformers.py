"""The Hugging Face callback driven through transformers' own callback machinery
(``CallbackHandler``, ``TrainerState``, ``TrainerControl``, ``TrainingArguments``; none of
them needs torch) the way ``Trainer`` drives it, for rank 1 and rank 0 of one job, through
the whole pipeline: SDK -> local spool -> `runstream serve` -> runstream.query.Client.
The Trainer itself, with torch, on two ranks under torchrun, is tests/frameworks/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import BertConfig, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import CallbackHandler

from runstream.integrations.transformers import RunstreamCallback
from runstream.proto.config import TELEMETRY_DATA_WAIT, TELEMETRY_STEP_TIME
from runstream.query.client import Client
from tests.integration.test_integrations_keras import finished_run, serving

STEPS = 6
SAVE_AT = 3


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with serving(tmp_path) as env:
        yield env


def train(callback: RunstreamCallback, output_dir: Path, zero: bool) -> None:
    """What Trainer.train() calls, in its order, for one rank of a 6-step job."""
    args = TrainingArguments(output_dir=str(output_dir), learning_rate=3e-4,
                             per_device_train_batch_size=4, logging_steps=1, save_steps=SAVE_AT,
                             report_to="none", run_name="tiny-bert")
    model = SimpleNamespace(config=BertConfig(vocab_size=99, hidden_size=32,
                                              num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=37))
    handler = CallbackHandler([callback], model, None, None, None)
    # What a datasets.Dataset loaded from the hub says about itself (the model card's names).
    handler.train_dataloader = SimpleNamespace(dataset=SimpleNamespace(
        builder_name="imdb", config_name="plain_text", _fingerprint="f1a2b3c4d5e6"))
    state = TrainerState(is_world_process_zero=zero, is_local_process_zero=zero,
                         max_steps=STEPS)
    control = TrainerControl()
    handler.on_init_end(args, state, control)
    handler.on_train_begin(args, state, control)
    for step in range(1, STEPS + 1):
        handler.on_step_begin(args, state, control)
        state.global_step = step
        state.epoch = step / STEPS
        handler.on_step_end(args, state, control)
        # on_log's loss is the mean over all ranks already: the same on every rank.
        handler.on_log(args, state, control, {"loss": 1.0 / step, "grad_norm": 0.5,
                                              "learning_rate": 3e-4, "epoch": state.epoch})
        if step == SAVE_AT:
            folder = output_dir / f"checkpoint-{step}"
            folder.mkdir(parents=True)  # Trainer writes it on rank 0 before on_save
            (folder / "model.safetensors").write_bytes(b"weights" * 100)
            (folder / "trainer_state.json").write_text("{}")
            handler.on_save(args, state, control)
    metrics = {"eval_loss": 0.25, "eval_runtime": 0.1, "epoch": 1.0}
    handler.on_log(args, state, control, metrics)  # Trainer.evaluate logs, then
    handler.on_evaluate(args, state, control, metrics)
    handler.on_log(args, state, control, {"train_runtime": 1.5, "train_loss": 0.4,
                                          "total_flos": 10.0, "epoch": 1.0})
    handler.on_train_end(args, state, control)


def test_the_callback_sends_rank0s_run_data_and_every_ranks_telemetry(
    serve_env: dict[str, str], tmp_path: Path
) -> None:
    run_id = f"hf-{uuid.uuid4().hex[:8]}"
    for rank in (1, 0):  # one process at a time: one active run per process
        environ = {**serve_env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                   "RUNSTREAM_RUN_ID": run_id}
        callback = RunstreamCallback("hf-it", environ=environ)
        train(callback, tmp_path / f"out{rank}", zero=rank == 0)
        assert callback.run is not None and callback.run.rank == rank
        callback.finish()
        assert callback.run.finished
    with Client(serve_env["RUNSTREAM_QUERY_ADDR"]) as client:
        run = finished_run(client, run_id, 2)
        assert run.info.name == "tiny-bert"
        params = {p.key: p.value for p in run.params}
        assert params["learning_rate"] == "0.0003"
        assert params["per_device_train_batch_size"] == "4"
        assert params["model.hidden_size"] == "32"
        assert not run.param_conflicts
        assert [(a.name, a.size_bytes) for a in run.artifacts] == [
            ("checkpoints/checkpoint-3", 700 + 2)]
        assert [(i.name, i.uri, i.digest, i.role) for i in run.inputs] == [
            ("imdb/plain_text", "hf://datasets/imdb/plain_text", "f1a2b3c4d5e6", "train")]
        loss = client.metric_history(run_id, "loss")
        assert list(loss.steps) == list(range(1, STEPS + 1)) and set(loss.ranks) == {0}
        assert list(loss.values) == [1.0 / s for s in range(1, STEPS + 1)]
        assert list(client.metric_history(run_id, "eval_loss").steps) == [STEPS]
        assert list(client.metric_history(run_id, "train_runtime").values) == [1.5]
        for rank in (0, 1):
            step_time = client.metric_history(run_id, TELEMETRY_STEP_TIME, ranks=[rank])
            assert list(step_time.steps) == list(range(1, STEPS + 1))
            # No data wait for the first step, nor for the one after the checkpoint.
            wait = client.metric_history(run_id, TELEMETRY_DATA_WAIT, ranks=[rank])
            assert list(wait.steps) == [s for s in range(2, STEPS + 1) if s != SAVE_AT + 1]
