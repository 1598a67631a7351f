"""A Hugging Face Trainer script for tests/frameworks, started by torchrun:
``torchrun --nproc-per-node 2 hf_job.py OUT``.

A tiny BERT classifier built from its config (nothing downloaded), data made here, two
CPU ranks (gloo), RunstreamCallback, a checkpoint every SAVE_STEPS, an evaluate() after
train(). The run ends at exit.
"""

from __future__ import annotations

import sys

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from runstream.integrations.transformers import RunstreamCallback

EXPERIMENT = "hf-frameworks"
MAX_STEPS = 6
SAVE_STEPS = 3
BATCH = 4


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 99, (n, 8), generator=g)
        self.labels = (self.ids.sum(dim=1) % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


def main(out: str) -> None:
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=2))
    args = TrainingArguments(
        output_dir=out, max_steps=MAX_STEPS, per_device_train_batch_size=BATCH,
        learning_rate=5e-4, logging_steps=1, save_steps=SAVE_STEPS, eval_strategy="steps",
        eval_steps=SAVE_STEPS, use_cpu=True, report_to="none", run_name="tiny-bert",
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Toy(64, 1),
                      eval_dataset=Toy(16, 2),
                      callbacks=[RunstreamCallback(EXPERIMENT, inputs={"toy": "memory://toy"})])
    trainer.train()
    trainer.evaluate()


if __name__ == "__main__":
    main(sys.argv[1])
