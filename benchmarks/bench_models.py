"""Per-model speed: training images/s, inference ms per image, and model FLOPs utilisation (MFU).

    python benchmarks/bench_models.py                       # CPU: 128 crops for training, 512x384 inference
    python benchmarks/bench_models.py --device cuda --train-size 512 --batch 16 --peak-tflops 989

Training: random (B, 3, S, S) batches and masks, AdamW, cross-entropy, autocast in --amp (bf16 default),
optionally channels-last and torch.compile; the median of --repeats timed windows of --steps steps
after --warmup steps. Inference: batch 1 at 512x384 (H x W = 384 x 512), eval mode, inference_mode.
FLOPs of one forward come from torch's FlopCounterMode (vocseg.models.count_gflops); a training step
is counted as 3x the forward (forward + backward's two matmuls per layer). MFU = achieved / peak.
Every number printed is a median of interleaved repeats; compare ratios, not lone absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from vocseg.models import count_gflops, count_parameters, create_model, list_models


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def train_speed(name: str, args, device: torch.device) -> float:
    """Median training images/s."""
    model = create_model(name, offline=True).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(args.batch, 3, args.train_size, args.train_size, generator=g).to(device)
    y = torch.randint(0, 21, (args.batch, args.train_size, args.train_size), generator=g).to(device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()

    def step() -> None:
        with _autocast(device, args.amp):
            out = step_model(x)
        out = out["out"] if isinstance(out, dict) else out
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return args.batch * args.steps / statistics.median(times)


@torch.inference_mode()
def infer_ms(name: str, args, device: torch.device) -> float:
    """Median milliseconds per 384x512 image at batch 1."""
    model = create_model(name, offline=True).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 384, 512, device=device)
    for _ in range(2):
        with _autocast(device, args.amp):
            model(x)
    times = []
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, args.amp):
            model(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def machine(device: torch.device) -> str:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--train-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 dense peak, for MFU")
    p.add_argument("--epoch-images", type=int, default=10582, help="images per epoch for the minutes column")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"machine: {machine(device)}")
    print(
        f"train: batch {args.batch} x {args.train_size}^2, amp {args.amp}, channels_last {args.channels_last}, "
        f"compile {args.compile}; inference: 1 x 384x512\n"
    )
    header = f"{'model':<30} {'params':>12} {'GFLOPs/img':>10} {'train img/s':>11} {'min/epoch':>9} {'infer ms':>9}"
    print(header + (f" {'MFU':>6}" if args.peak_tflops else ""))
    for name in args.models or list_models():
        with torch.device("meta"):
            meta = create_model(name, offline=True)
        gflops = count_gflops(meta, args.train_size)
        ips = train_speed(name, args, device)
        ms = infer_ms(name, args, device)
        line = (
            f"{name:<30} {count_parameters(meta):>12,} {gflops:>10.1f} {ips:>11.1f} "
            f"{args.epoch_images / ips / 60:>9.1f} {ms:>9.1f}"
        )
        if args.peak_tflops:
            line += f" {3 * gflops * ips / 1000 / args.peak_tflops:>6.1%}"
        print(line, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
