"""Test-time augmentation, flips against scales: every family's planned run scored again under each mode.

Reads the ``auto`` runs bench_auto.py wrote (``OUT/BUDGET/FAMILY/seedS/auto/best.pt``) and evaluates each
on its family's val split with no augmentation, flips only, and multi-scale + flips at two scale sets: the
plan's usual one (0.5/0.75/1.0, the training scales nearest 1.0 when training rescales 0.5-1.0) and one
centred on 1.0 (0.75/1.0/1.25). The model is the same in every column, so the ratios over ``none`` are
what each mode adds and nothing else; the seconds (wall time of the pass, in this process, one mode after
another) are what it costs. What the plan chose is in each run's plan.yaml (``tta``, ``tta_scales``).

    python benchmarks/bench_auto.py --budget 5m --which auto
    python benchmarks/bench_tta.py --budget 5m
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from vocseg.evaluation.evaluate import evaluate_checkpoint

MODES = {
    "none": ("none", None),
    "flip": ("flip", None),
    "ms0.5-1": ("multiscale", [0.5, 0.75, 1.0]),
    "ms0.75-1.25": ("multiscale", [0.75, 1.0, 1.25]),
}


def score(checkpoint: Path) -> dict[str, tuple[float, float]]:
    """{mode: (mIoU, seconds)} of one checkpoint on its own data's val split."""
    out = {}
    for mode, (tta, scales) in MODES.items():
        started = time.perf_counter()
        m = evaluate_checkpoint(checkpoint, device="cpu", progress=False, tta=tta, tta_scales=scales)
        out[mode] = (m["mean_iou"], time.perf_counter() - started)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="5m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-auto", help="bench_auto.py's --out")
    p.add_argument("--families", nargs="+", default=None, help="default: every family with an auto run")
    args = p.parse_args()
    runs = sorted(Path(args.out, args.budget).glob(f"*/seed{args.seed}/auto/best.pt"))
    runs = [r for r in runs if args.families is None or r.parents[2].name in args.families]
    if not runs:
        raise SystemExit(
            f"no auto runs under {Path(args.out, args.budget)}: run bench_auto.py --budget {args.budget} first"
        )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'family':<18}{'planned':>32}" + "".join(f"{m:>20}" for m in MODES) + "   (mIoU, ratio over none, s)")
    for ckpt in runs:
        plan = yaml.safe_load((ckpt.parent / "plan.yaml").read_text())
        planned = f"{plan['tta']} {plan.get('tta_scales') or ''}".strip()
        res = score(ckpt)
        base = res["none"][0]
        cells = "".join(f"{f'{m:.4f} {m / base:.2f}x {s:.0f}s':>20}" for m, s in res.values())
        print(f"{ckpt.parents[2].name:<18}{planned:>32}{cells}", flush=True)


if __name__ == "__main__":
    main()
