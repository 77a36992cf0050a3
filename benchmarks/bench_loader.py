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
import itertools
import platform
import statistics
import time
from collections.abc import Callable, Iterable

import torch
from torch.utils.data import DataLoader, RandomSampler

from vocseg.data.cache import apply_cache
from vocseg.data.synthetic import default_dataset_root
from vocseg.data.transforms import SegmentationPresetTrain, collate_pad
from vocseg.data.voc import VOCSegmentation
from vocseg.losses import weighted_ce_sums
from vocseg.models import create_model
from vocseg.runtime.device import autocast
from vocseg.runtime.workers import cpu_count

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BATCH, CROP = 8, 128
Epoch = Callable[[int], int]  # seed -> images processed


class Trainer:
    """One model and optimizer, stepped on whatever batches it is given (state carries over: the
    per-step cost does not depend on it)."""

    def __init__(self, model: str) -> None:
        torch.manual_seed(0)
        self.model = create_model(model).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.device = torch.device("cpu")
        self.waited = 0.0

    def step(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        with autocast(self.device, torch.bfloat16):
            logits = self.model(images)
        total, n = weighted_ce_sums(logits, masks, None)
        self.opt.zero_grad(set_to_none=True)
        (total / n).backward()
        self.opt.step()

    def run(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Train on every batch; return the number of images. Time spent waiting for batches (loader
        start-up included) accumulates in ``self.waited``."""
        images_seen = 0
        t0 = time.perf_counter()
        it = iter(batches)
        for images, masks in it:
            self.waited += time.perf_counter() - t0
            self.step(images, masks)
            images_seen += images.shape[0]
            t0 = time.perf_counter()
        self.waited += time.perf_counter() - t0
        return images_seen


class OneThreadItems(torch.utils.data.Dataset):
    """``dataset``'s items made with one torch thread (an alternative measured for num_workers=0: the
    per-image ops are small, and waking the training's threads for them may cost more than it saves)."""

    def __init__(self, dataset: VOCSegmentation) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.dataset[i]
        finally:
            torch.set_num_threads(threads)


def make_loader(ds: torch.utils.data.Dataset, workers: int, seed: int) -> DataLoader:
    """As vocseg.training.train builds its training loader on a CPU."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=BATCH,
        sampler=RandomSampler(ds, generator=g),
        num_workers=workers,
        collate_fn=collate_pad,
        drop_last=True,
        generator=g,
    )


def timed(fn: Epoch, seed: int, trainer: Trainer) -> tuple[float, float]:
    """img/s of ``fn(seed)`` (which returns the number of images it processed) and the share of its
    time the trainer spent waiting for batches."""
    trainer.waited = 0.0
    t0 = time.perf_counter()
    n = fn(seed)
    elapsed = time.perf_counter() - t0
    return n / elapsed, trainer.waited / elapsed


def build_configs(trainer: Trainer, workers: list[int], steps: int | None) -> tuple[dict[str, Epoch], dict[str, Epoch]]:
    """Name -> epoch function, for training and for the loader alone."""
    root = default_dataset_root()
    plain = VOCSegmentation(root, "train", SegmentationPresetTrain(MEAN, STD, crop_size=CROP))
    cached = VOCSegmentation(root, "train", SegmentationPresetTrain(MEAN, STD, crop_size=CROP))
    apply_cache(cached, "ram", print)
    torch.manual_seed(0)
    in_memory = list(itertools.islice(make_loader(plain, 0, 0), steps))  # the bare loop's batches: same data, collated
    train: dict[str, Epoch] = {"bare loop (batches in memory)": lambda seed: trainer.run(in_memory)}
    alone: dict[str, Epoch] = {}
    for w in workers:
        for label, ds in (("disk", plain), ("RAM cache", cached)):
            name = f"workers={w}, {label}"
            train[name] = lambda seed, ds=ds, w=w: trainer.run(itertools.islice(make_loader(ds, w, seed), steps))
            alone[name] = lambda seed, ds=ds, w=w: sum(x.shape[0] for x, _ in make_loader(ds, w, seed))
    if 0 in workers and torch.get_num_threads() > 1:
        for label, ds in (("disk", plain), ("RAM cache", cached)):
            one = OneThreadItems(ds)
            train[f"workers=0, {label}, items on 1 thread"] = lambda seed, one=one: trainer.run(
                itertools.islice(make_loader(one, 0, seed), steps)
            )
    return train, alone


def report(title: str, results: dict[str, list[tuple[float, float]]], base: float | None) -> None:
    """Medians per configuration; with ``base`` (the bare loop's img/s), the ratio and the time waiting."""
    print(f"\n{title}")
    print(f"{'configuration':<40} {'img/s':>7} {'vs bare':>8} {'waiting':>8}   (img/s per repeat)")
    for name, values in results.items():
        med = statistics.median(v for v, _ in values)
        wait = statistics.median(w for _, w in values)
        share, waiting = (f"{med / base:7.3f}x", f"{wait:7.1%}") if base else ("       -", "       -")
        print(f"{name:<40} {med:7.1f} {share} {waiting}   ({', '.join(f'{v:.1f}' for v, _ in values)})")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--model", default="fcn")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the main process (default: torch's)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed unit (default: a whole epoch, 60)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, {cpu_count()} cores, {torch.get_num_threads()} torch "
        f"threads, torch {torch.__version__}; {args.model}, batch {BATCH}, {CROP}px crops, bf16 autocast, AdamW"
    )
    trainer = Trainer(args.model)
    train, alone = build_configs(trainer, args.workers, args.steps)
    train["bare loop (batches in memory)"](0)  # warm-up: allocator, autocast caches, file cache
    got_train: dict[str, list[tuple[float, float]]] = {k: [] for k in train}
    got_alone: dict[str, list[tuple[float, float]]] = {k: [] for k in alone}
    for r in range(args.repeats):
        names = list(train) if r % 2 == 0 else list(reversed(train))  # interleave, alternating order
        for name in names:
            got_train[name].append(timed(train[name], r, trainer))
            print(f"  repeat {r + 1}: {name}: {got_train[name][-1][0]:.1f} img/s", flush=True)
        for name in alone:
            got_alone[name].append(timed(alone[name], r, trainer))
    bare = statistics.median(v for v, _ in got_train["bare loop (batches in memory)"])
    unit = f"{args.steps} steps" if args.steps else "one epoch (60 steps)"
    report(f"training, {unit} per repeat, median of {args.repeats}", got_train, bare)
    report("loader alone (no training)", got_alone, None)


if __name__ == "__main__":
    main()
