"""Step-time overhead of logging 20 metrics per step to the spool while training a small
PyTorch model on a GPU (optional; never in CI). Alternates runs with and without logging
(same model, data and seed), REPEATS each, and prints median step times and the overhead.

    python deploy/bench/gpu_overhead.py [--steps 3000] [--repeats 3]

Needs torch with CUDA; exits with status 2 when no GPU is available. Values are logged
as Python floats taken from one ``.tolist()`` per step (one device sync, as a real
training loop that logs would do); the baseline does the same sync without logging.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def train(steps: int, log_dir: Path | None) -> float:
    """Mean step time in seconds over ``steps`` steps after a 100-step warm-up."""
    import torch
    from torch import nn

    import runstream

    torch.manual_seed(0)
    device = torch.device("cuda")
    model = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                          nn.Linear(2048, 10)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(256, 512, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    run = None
    if log_dir is not None:
        run = runstream.init("gpu-overhead", spool_dir=log_dir, system_metrics_s=0,
                             environ={"RUNSTREAM_HOME": str(log_dir)})
    keys = [f"train/m{i:02d}" for i in range(19)]
    warmup = 100
    start = 0.0
    try:
        for step in range(steps + warmup):
            if step == warmup:
                torch.cuda.synchronize()
                start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            stats = torch.stack([loss.detach(), out.detach().mean()]).tolist()  # one sync
            if run is not None:
                metrics = {k: stats[1] * i for i, k in enumerate(keys)}
                metrics["train/loss"] = stats[0]
                run.log(metrics, step=step)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps
    finally:
        if run is not None:
            run.finish(timeout_s=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_overhead: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_overhead: no CUDA device", file=sys.stderr)
        return 2
    base: list[float] = []
    logged: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rs-gpu-") as tmp:
        train(200, None)  # CUDA context, cuBLAS handles, allocator warm-up
        for i in range(args.repeats):
            base.append(train(args.steps, None))
            logged.append(train(args.steps, Path(tmp) / f"spool-{i}"))
    b, w = statistics.median(base), statistics.median(logged)
    print(f"GPU: {torch.cuda.get_device_name(0)}; {args.steps} steps x {args.repeats} runs each")
    print(f"{'no logging':<28} {b * 1e3:8.3f} ms/step")
    print(f"{'20 metrics/step to spool':<28} {w * 1e3:8.3f} ms/step")
    print(f"{'overhead':<28} {100 * (w - b) / b:8.2f} %   (target < 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
