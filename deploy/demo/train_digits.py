"""One rank of a data-parallel demo job: softmax regression on scikit-learn's digits.

Launched like torchrun launches ranks (RANK, WORLD_SIZE, LOCAL_RANK and a shared
TORCHELASTIC_RUN_ID in the environment), so every rank joins the same Runstream run.
Each rank trains on its own shard of the training set with minibatch SGD (numpy only;
there is no gradient all-reduce, so each rank's curve is its own), logs per-step
metrics, and rank 0 stores the final weights as an artifact.

    RANK=0 WORLD_SIZE=1 python deploy/demo/train_digits.py --lr 0.1
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import runstream


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--experiment", default="digits-demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    digits = load_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target
    order = np.random.default_rng(args.seed).permutation(len(x))
    n_val = len(x) // 5
    val_idx, train_idx = order[:n_val], order[n_val:]
    shard = train_idx[rank::world_size]
    x_train, y_train = x[shard], y[shard]
    x_val, y_val = x[val_idx], y[val_idx]
    data_digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()

    with runstream.init(
        experiment=args.experiment,
        name=f"softmax lr={args.lr}",
        params={
            "lr": args.lr,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "model": {"kind": "softmax-regression", "features": x.shape[1], "classes": 10},
        },
        tags={"demo": "true", "dataset": "sklearn.digits"},
    ) as run:
        run.log_input("sklearn://datasets/digits", name="digits", digest=f"sha256:{data_digest}")
        rng = np.random.default_rng(args.seed + rank)
        w = np.zeros((x.shape[1], 10))
        b = np.zeros(10)
        onehot = np.eye(10)
        # Per-rank step time and data wait, which `runstream ranks RUN` reads.
        timer = run.step_timer(device_memory=False)
        for step in range(args.steps):
            timer.start_step(step)
            batch = rng.choice(len(x_train), size=args.batch_size, replace=False)
            xb, yb = x_train[batch], y_train[batch]
            p = softmax(xb @ w + b)
            loss = float(-np.log(p[np.arange(len(yb)), yb] + 1e-12).mean())
            grad = (p - onehot[yb]) / len(yb)
            w -= args.lr * (xb.T @ grad)
            b -= args.lr * grad.sum(axis=0)
            metrics = {"train/loss": loss, "train/acc": float((p.argmax(1) == yb).mean())}
            if step % 10 == 9 or step == args.steps - 1:
                val_pred = softmax(x_val @ w + b)
                metrics["val/acc"] = float((val_pred.argmax(1) == y_val).mean())
                metrics["val/loss"] = float(
                    -np.log(val_pred[np.arange(len(y_val)), y_val] + 1e-12).mean()
                )
            run.log(metrics, step=step)
            timer.end_step()
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.npz"
                np.savez(path, w=w, b=b)
                run.log_artifact(path, name="model.npz")


if __name__ == "__main__":
    main()
