"""Training throughput fed by vocseg's DataLoader vs a bare loop on in-memory batches, side by side in one run.

    python benchmarks/bench_loader.py [--repeats 3] [--workers 0 1 2] [--model fcn]

The step is the baseline's: ``create_model("fcn")``, batch 8, 128x128 random-scale crops with flips
(``SegmentationPresetTrain``), bf16 autocast, cross-entropy, AdamW. Each timed unit is one epoch of
the built-in synthetic training split (480 images, 60 steps), loader start-up included, as
``vocseg train`` creates a loader per epoch. Configurations: num_workers 0/1/2, each without and
with the RAM cache (``apply_cache``), and the bare loop (the same step on batches already in memory:
the ceiling). Repeats interleave the configurations; medians are printed, with each configuration's
share of the bare loop's img/s. Also printed: the loader alone (no training), img/s.
Not a test: numbers depend on the machine (and on what else runs on it).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable, Iterable

import torch
from torch.utils.data import DataLoader, RandomSampler

from vocseg.data.cache import apply_cache
from vocseg.data.synthetic import default_dataset_root
from vocseg.data.transforms import SegmentationPresetTrain, collate_pad
from vocseg.data.voc import VOCSegmentation
from vocseg.engine import autocast
from vocseg.losses import weighted_ce_sums
from vocseg.models import create_model
from vocseg.system import cpu_count

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH, CROP = 8, 128


class Trainer:
    """One model and optimizer, stepped on whatever batches it is given (state carries over: the
    per-step cost does not depend on it)."""

    def __init__(self, model: str) -> None:
        torch.manual_seed(0)
        self.model = create_model(model).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.device = torch.device("cpu")

    def step(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        with autocast(self.device, torch.bfloat16):
            logits = self.model(images)
        total, n = weighted_ce_sums(logits, masks, None)
        self.opt.zero_grad(set_to_none=True)
        (total / n).backward()
        self.opt.step()

    def run(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
        images_seen = 0
        for images, masks in batches:
            self.step(images, masks)
            images_seen += images.shape[0]
        return images_seen


def make_loader(ds: VOCSegmentation, workers: int, seed: int) -> DataLoader:
    """As vocseg.train builds its training loader on a CPU."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=BATCH, sampler=RandomSampler(ds, generator=g), num_workers=workers,
                      collate_fn=collate_pad, drop_last=True, generator=g)


def timed(fn: Callable[[], int]) -> float:
    """img/s of ``fn`` (which returns the number of images it processed)."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def build_configs(trainer: Trainer, workers: list[int]) -> tuple[dict[str, Callable[[int], int]], dict[str, Callable[[int], int]]]:
    """Name -> epoch function, for training and for the loader alone."""
    root = default_dataset_root()
    plain = VOCSegmentation(root, "train", SegmentationPresetTrain(MEAN, STD, crop_size=CROP))
    cached = apply_cache(VOCSegmentation(root, "train", SegmentationPresetTrain(MEAN, STD, crop_size=CROP)), "ram", print)
    torch.manual_seed(0)
    in_memory = list(make_loader(plain, 0, 0))  # the bare loop's batches: same data, already collated
    train: dict[str, Callable[[int], int]] = {"bare loop (batches in memory)": lambda seed: trainer.run(in_memory)}
    alone: dict[str, Callable[[int], int]] = {}
    for w in workers:
        for label, ds in (("disk", plain), ("RAM cache", cached)):
            name = f"workers={w}, {label}"
            train[name] = lambda seed, ds=ds, w=w: trainer.run(make_loader(ds, w, seed))
            alone[name] = lambda seed, ds=ds, w=w: sum(x.shape[0] for x, _ in make_loader(ds, w, seed))
    return train, alone


def report(title: str, results: dict[str, list[float]], base: float | None) -> None:
    print(f"\n{title}")
    print(f"{'configuration':<32} {'img/s':>7} {'vs bare':>8}   (repeats)")
    for name, values in results.items():
        med = statistics.median(values)
        share = f"{med / base:7.2f}x" if base else "       -"
        print(f"{name:<32} {med:7.1f} {share}   ({', '.join(f'{v:.0f}' for v in values)})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="fcn")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the main process (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {cpu_count()} cores, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}; {args.model}, batch {BATCH}, {CROP}px crops, bf16 autocast, AdamW")
    trainer = Trainer(args.model)
    train, alone = build_configs(trainer, args.workers)
    trainer.run(list(make_loader(train and VOCSegmentation(default_dataset_root(), "train",
                                                           SegmentationPresetTrain(MEAN, STD, crop_size=CROP)), 0, 99))[:5])  # warm-up
    got_train: dict[str, list[float]] = {k: [] for k in train}
    got_alone: dict[str, list[float]] = {k: [] for k in alone}
    for r in range(args.repeats):
        names = list(train) if r % 2 == 0 else list(reversed(train))  # interleave, alternating order
        for name in names:
            got_train[name].append(timed(lambda: train[name](r)))
        for name in alone:
            got_alone[name].append(timed(lambda: alone[name](r)))
    bare = statistics.median(got_train["bare loop (batches in memory)"])
    report(f"training, one epoch of 480 images per repeat, median of {args.repeats}", got_train, bare)
    report("loader alone (no training), img/s", got_alone, None)


if __name__ == "__main__":
    main()
