"""Evaluation with metrics against forward passes alone (goal: metrics cost <= 5%).

    python benchmarks/bench_eval.py [--model fcn] [--images 64] [--repeats 5]

Both run the same model over the same validation images at native size, batch 1, bf16 autocast, in
inference mode: "forward" calls the model and takes the argmax; "vocseg evaluate" is engine.evaluate
(losses, the confusion matrix, per-image counts). Median of interleaved repeats; ratio printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from vocseg.config import Config
from vocseg.data.builder import resolve_data_root
from vocseg.data.loaders import eval_loader
from vocseg.data.stats import dataset_stats
from vocseg.data.transforms import SegmentationPresetEval
from vocseg.data.voc import VOCSegmentation
from vocseg.evaluation.evaluator import evaluate
from vocseg.models import create_model
from vocseg.runtime.device import autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fcn")
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    root = resolve_data_root(None)
    stats = dataset_stats(VOCSegmentation(root, "train"))
    ids = VOCSegmentation(root, "val").ids[: args.images]
    ds = VOCSegmentation(root, "val", SegmentationPresetEval(stats.mean, stats.std), ids=ids)
    cpu = torch.device("cpu")
    cfg = Config(num_workers=0)
    model = create_model(args.model, offline=True).eval()
    samples = [ds[i] for i in range(len(ds))]  # decoded once: both sides measure compute, not decoding

    def forward_only() -> None:
        with torch.inference_mode():
            for x, _ in samples:
                with autocast(cpu, torch.bfloat16):
                    model(x[None]).argmax(1)

    class Pre(torch.utils.data.Dataset):
        def __len__(self):
            return len(samples)

        def __getitem__(self, i):
            return samples[i]

    def with_metrics() -> None:
        evaluate(model, eval_loader(Pre(), cfg, cpu), 21, None, None, cpu, torch.bfloat16)

    times: dict[str, list[float]] = {"forward": [], "evaluate": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", forward_only), ("evaluate", with_metrics)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    f, e = statistics.median(times["forward"]), statistics.median(times["evaluate"])
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.model}, {len(samples)} val images at native size, bf16, median of {args.repeats}")
    print(f"forward only     {1000 * f / len(samples):7.2f} ms/img")
    print(f"vocseg evaluate  {1000 * e / len(samples):7.2f} ms/img")
    print(f"evaluate/forward {e / f:7.3f}x  (goal <= 1.05)")


if __name__ == "__main__":
    main()
