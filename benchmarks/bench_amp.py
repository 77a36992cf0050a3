"""Training-step throughput, fp32 vs bf16 autocast, per model, side by side in one run.

    python benchmarks/bench_amp.py [--size 128] [--batch 8] [--steps 5] [--models fcn unpool ...]

Prints images/second for each precision and the bf16/fp32 ratio. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from vocseg.losses import weighted_ce_sums
from vocseg.models import create_model, list_models
from vocseg.runtime.device import autocast


def step_time(name: str, dtype, size: int, batch: int, steps: int, kwargs: dict) -> float:
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 21, (batch, size, size))
    dev = torch.device("cpu")
    for i in range(steps + 1):  # first step is warm-up
        if i == 1:
            t0 = time.perf_counter()
        with autocast(dev, dtype):
            logits = model(x)
        total, n = weighted_ce_sums(logits, y, None)
        opt.zero_grad()
        (total / n).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--models", nargs="+", default=list_models())
    args = p.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch {args.batch} x {args.size}x{args.size}, {args.steps} timed steps\n")
    print(f"{'model':<10} {'fp32 img/s':>11} {'bf16 img/s':>11} {'bf16/fp32':>10}")
    for name in args.models:
        kwargs = {"pretrained": False} if name == "transfer" else {}
        fp32 = step_time(name, None, args.size, args.batch, args.steps, kwargs)
        bf16 = step_time(name, torch.bfloat16, args.size, args.batch, args.steps, kwargs)
        print(f"{name:<10} {args.batch / fp32:11.1f} {args.batch / bf16:11.1f} {fp32 / bf16:10.2f}x")


if __name__ == "__main__":
    main()
