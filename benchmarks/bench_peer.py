"""vocseg's best recipe against a peer, at equal wall-clock time and with the same metric.

The peer is segmentation_models_pytorch's ``Unet`` on a ResNet-34 encoder trained from scratch by a
plain AdamW loop (random crops and horizontal flips, constant LR), as its users typically run it: fp32,
or under bf16 autocast. vocseg trains ``configs/strong_cpu.yaml`` (strong.yaml's recipe sized for a
small machine) with ``--budget``. All are scored by vocseg's confusion matrix at native resolution on
the same validation split, next to the all-background score.

    pip install -e ".[bench]"                     # the peer, for this benchmark only
    python benchmarks/bench_peer.py --budget 15m --which vocseg peer-fp32 peer-bf16

Each variant runs in its own process (``--which`` one of them per call runs it in this process), so
to compare on a machine with more cores, pin each to the same number of cores, e.g.
``taskset -c 0,1 python benchmarks/bench_peer.py --which peer-fp32 --threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# vocseg's recipe for a small machine and a time budget: strong.yaml's pieces sized for 2 CPU cores
# (configs/strong_cpu.yaml says what changed and why). --budget on the command line replaces its 15m.
VOCSEG_ARGS = ["--config", "configs/strong_cpu.yaml"]
PEER_CROP, PEER_BATCH, PEER_LR = 128, 8, 1e-3


def run_vocseg(out: Path, budget: str, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "vocseg",
        "train",
        *VOCSEG_ARGS,
        *extra,
        "--budget",
        budget,
        "--out",
        str(out / "vocseg"),
        "--no-progress",
        "--overwrite",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    m = json.loads((out / "vocseg" / "metrics.json").read_text())
    return {
        "name": "vocseg strong_cpu (bf16)",
        "miou": m["mean_iou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "steps": m.get("steps"),
        "seconds": time.perf_counter() - t0,
    }


def peer_data(data_root: str | None = None):
    from vocseg.data.builder import resolve_data_root
    from vocseg.data.stats import dataset_stats
    from vocseg.data.transforms import SegmentationPresetEval, SegmentationPresetTrain
    from vocseg.data.voc import VOCSegmentation

    root = resolve_data_root(data_root)
    n = len(root.class_names or []) or 21
    stats = dataset_stats(VOCSegmentation(root, "train", num_classes=n))
    preset = SegmentationPresetTrain(stats.mean, stats.std, PEER_CROP, 0.5, 0.0, None)
    train = VOCSegmentation(root, "train", preset, num_classes=n)
    val = VOCSegmentation(root, "val", SegmentationPresetEval(stats.mean, stats.std), num_classes=n)
    return train, val, n


@torch.inference_mode()
def score(model, val, num_classes: int = 21) -> dict:
    """vocseg's ConfusionMatrix over the split at native size (input padded to 32, logits cropped back)."""
    from vocseg.metrics import ConfusionMatrix

    model.eval()
    cm = ConfusionMatrix(num_classes)
    for i in range(len(val)):
        x, y = val[i]
        h, w = x.shape[-2:]
        logits = model(F.pad(x[None], (0, (-w) % 32, 0, (-h) % 32)))[..., :h, :w]
        cm.update(logits.argmax(1), y[None])
    return cm.compute()


def run_peer(budget_s: float, bf16: bool, seed: int = 0, data_root: str | None = None) -> dict:
    """The plain loop: train until the budget minus the time the final scoring took last time (measured
    once on 10 images and scaled), then score."""
    import segmentation_models_pytorch as smp
    from torch.utils.data import DataLoader

    from vocseg.data.transforms import collate_pad

    t0 = time.perf_counter()
    torch.manual_seed(seed)  # the weights' init and the loader's shuffles and crops
    train, val, n = peer_data(data_root)
    model = smp.Unet("resnet34", encoder_weights=None, classes=n)
    opt = torch.optim.AdamW(model.parameters(), lr=PEER_LR)
    t_eval = time.perf_counter()
    score(model, torch.utils.data.Subset(val, range(min(10, len(val)))), n)
    eval_s = (time.perf_counter() - t_eval) * len(val) / min(10, len(val))
    deadline = t0 + budget_s - 1.1 * eval_s
    steps = 0
    while time.perf_counter() < deadline:
        model.train()
        for x, y in DataLoader(train, PEER_BATCH, shuffle=True, drop_last=True, collate_fn=collate_pad):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
            loss = F.cross_entropy(out.float(), y, ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if time.perf_counter() >= deadline:
                break
    m = score(model, val, n)
    return {
        "name": f"smp Unet-R34 ({'bf16' if bf16 else 'fp32'})",
        "miou": m["mean_iou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }


def all_background(data_root: str | None = None) -> dict:
    import numpy as np

    from vocseg.data.builder import resolve_data_root
    from vocseg.data.stats import dataset_stats
    from vocseg.data.voc import VOCSegmentation
    from vocseg.study.report.data import all_background_metrics

    root = resolve_data_root(data_root)
    n = len(root.class_names or []) or 21
    counts = np.array(dataset_stats(VOCSegmentation(root, "val", num_classes=n)).class_counts)
    m = all_background_metrics(counts)
    return {
        "name": "all-background",
        "miou": m["mean_iou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "steps": 0,
        "seconds": 0.0,
    }


def main() -> None:
    from vocseg.config import parse_duration

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="15m")
    p.add_argument(
        "--which",
        nargs="+",
        default=["vocseg", "peer-fp32", "peer-bf16"],
        choices=["vocseg", "peer-fp32", "peer-bf16", "background"],
    )
    p.add_argument("--out", default="bench-peer")
    p.add_argument("--data-root", help="dataset (default: the built-in data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the peer loop (init, shuffles, crops)")
    p.add_argument("--vocseg-args", nargs=argparse.REMAINDER, default=[], help="extra flags for vocseg train")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget_s = parse_duration(args.budget)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; budget {budget_s:.0f} s",
        flush=True,
    )
    rows = [all_background(args.data_root)]
    for which in args.which:
        if which == "vocseg":
            extra = ["--data-root", args.data_root] if args.data_root else []
            rows.append(run_vocseg(out, args.budget, [*extra, *args.vocseg_args]))
        elif which.startswith("peer"):
            rows.append(run_peer(budget_s, bf16=which == "peer-bf16", seed=args.seed, data_root=args.data_root))
        (out / f"{which}.json").write_text(json.dumps(rows[-1]))
    base = next((r["miou"] for r in rows if r["name"].startswith("smp") and "fp32" in r["name"]), None)
    print(f"\n{'run':<24} {'mIoU':>7} {'pixel acc':>9} {'steps':>7} {'wall s':>7} {'vs peer fp32':>12}")
    for r in rows:
        ratio = f"{r['miou'] / base:.2f}x" if base else "-"
        print(
            f"{r['name']:<24} {r['miou']:>7.4f} {r['pixel_accuracy']:>9.4f} {r['steps']:>7} {r['seconds']:>7.0f} {ratio:>12}"
        )


if __name__ == "__main__":
    main()
