"""Speed switches per model: bf16 autocast, channels-last and torch.compile against fp32 eager.

    python benchmarks/bench_speed.py [--models fcn unet ...] [--size 128] [--batch 8] [--no-compile]

One training step (forward, cross-entropy, backward, AdamW) on random data; each variant is timed as
the median of --repeats windows of --steps steps, the variants interleaved window by window so machine
noise hits them alike. Printed: images/s per variant and the ratio to fp32 eager. A variant that fails
(e.g. compile without a working C++ toolchain) prints "failed".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from vocseg.models import create_model, list_models

VARIANTS = {  # name: (amp dtype, channels_last, compile)
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+cl": (torch.bfloat16, True, False),
    "bf16+compile": (torch.bfloat16, False, True),
    "bf16+cl+compile": (torch.bfloat16, True, True),
}


def make_step(name: str, variant: tuple, size: int, batch: int, device: torch.device):
    dtype, channels_last, compiled = variant
    torch.manual_seed(0)
    model = create_model(name, offline=True).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (batch, size, size), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = run(x)
        out = out["out"] if isinstance(out, dict) else out
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (and compilation)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None, help="default: all")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    chosen = args.variants or list(VARIANTS)
    variants = {k: v for k, v in VARIANTS.items() if k in chosen and not (args.no_compile and v[2])}
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, {device}")
    print(f"training step, batch {args.batch} x {args.size}^2; img/s (ratio to {next(iter(variants))})\n")
    print(f"{'model':<30}" + "".join(f"{v:>22}" for v in variants))
    for name in args.models or list_models():
        steps, times, warmup = {}, {}, {}
        for v, spec in variants.items():
            try:
                t0 = time.perf_counter()
                steps[v] = make_step(name, spec, args.size, args.batch, device)
                warmup[v] = time.perf_counter() - t0
                times[v] = []
            except Exception as e:  # noqa: BLE001 - report and go on
                steps[v] = None
                times[v] = str(e).splitlines()[0][:40] if str(e) else type(e).__name__
        for _ in range(args.repeats):
            for v, step in steps.items():
                if step is None:
                    continue
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step()
                times[v].append(time.perf_counter() - t0)
        ips = {v: args.batch * args.steps / statistics.median(t) for v, t in times.items() if isinstance(t, list)}
        base = ips.get(next(iter(variants)))
        cells = [f"{ips[v]:8.1f} ({ips[v] / base:4.2f}x)" if v in ips and base else "failed" for v in variants]
        print(f"{name:<30}" + "".join(f"{c:>22}" for c in cells), flush=True)
        print(f"{'  first step (s)':<30}" + "".join(f"{warmup.get(v, 0):>22.1f}" for v in variants), flush=True)


if __name__ == "__main__":
    main()
