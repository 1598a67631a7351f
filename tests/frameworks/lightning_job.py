"""A Lightning training script for tests/frameworks:
``python lightning_job.py OUT STRATEGY [FAIL_AT]`` (or under torchrun).

Two CPU ranks (gloo) started by Lightning's own launcher (``ddp``: this script is run
again for rank 1; ``ddp_spawn``: two spawned workers), a tiny model on data made here,
RunstreamLogger + RunstreamCallback, a checkpoint per epoch. With FAIL_AT, every rank's
training_step raises at that step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from runstream.integrations.lightning import RunstreamCallback, RunstreamLogger

EXPERIMENT = "lightning-frameworks"
SAMPLES = 64
BATCH = 8
EPOCHS = 2
DEVICES = 2
STEPS_PER_EPOCH = SAMPLES // DEVICES // BATCH


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.05, hidden: int = 8, fail_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["fail_at"])
        self.fail_at = fail_at
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, 1))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.fail_at:
            raise RuntimeError(f"failing at step {self.fail_at} as asked")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, sync_dist=True)
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main(out: Path, strategy: str, fail_at: int = -1) -> None:
    torch.manual_seed(0)
    train = TensorDataset(torch.randn(SAMPLES, 4), torch.randn(SAMPLES, 1))
    val = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    trainer = L.Trainer(
        strategy=strategy, devices=DEVICES, accelerator="cpu", max_epochs=EPOCHS,
        logger=RunstreamLogger(EXPERIMENT, run_name=f"tiny-{strategy}"),
        callbacks=[RunstreamCallback(),
                   ModelCheckpoint(dirpath=out / "checkpoints", save_top_k=-1)],
        log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=out,
    )
    trainer.fit(Tiny(fail_at=fail_at), DataLoader(train, batch_size=BATCH),
                DataLoader(val, batch_size=8))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], *(int(a) for a in sys.argv[3:]))
