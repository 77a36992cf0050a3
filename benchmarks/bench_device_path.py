"""Training augmentation in the loader (``augment_on: workers``) against on the device (``augment_on: device``),
images/s side by side in one run.

    python benchmarks/bench_device_path.py [--device cpu|cuda] [--repeats 3] [--threads N]
        [--recipes default strong_cpu ...] [--data-root DATA]

Each recipe is a config's data settings on the built-in synthetic data (480 training images, long side
<= 192 px; or ``--data-root``'s train split), decoded in RAM as ``cache: auto`` does. The model never runs:
this is the batches' cost alone.

- default: the Config defaults: 160 px crops of a 0.5-2.0 rescale, hflip and vflip 0.5, batch 8;
- strong_cpu: configs/strong_cpu.yaml: 128 px crops at 0.5-1.0, hflip 0.5, copy_paste 0.5, batch 8;
- strong_cpu+photometric: the same with photometric: true (the distortion's batched form);
- strong: configs/strong.yaml: 512 px crops at 0.5-2.0, hflip, photometric, batch 16 (the GPU recipe).

Two sides per recipe, both ``loaders.train_loader`` as ``vocseg train`` builds it, with the device's default
``num_workers``: (a) workers: finished batches, moved to the device; (b) device: raw windows, moved and
finished by DeviceAugment. One timed unit is one epoch of a loader kept from epoch to epoch as ``vocseg train``
keeps it (its workers persist; the first, untimed epoch starts them), synchronised on CUDA before the clock
stops. Repeats interleave the sides in alternating order; the medians and the ratio device / workers are
printed. Not a test: numbers depend on the machine and its load (on a busy machine, --threads 1 keeps
other jobs' load from swamping the per-crop ops of both sides).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from vocseg.config import Config, load_config, replace
from vocseg.data.builder import build_datasets
from vocseg.data.device_augment import DeviceAugment
from vocseg.data.loaders import train_loader
from vocseg.runtime.workers import cpu_count, resolve_workers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATA_KEYS = ("image_size", "scale_range", "hflip", "vflip", "rotate", "photometric", "copy_paste", "batch_size")


def recipe(name: str, data_root: str | None = None) -> Config:
    """The data settings of ``name`` (the rest of the config does not touch the loader), on ``data_root``
    (None: the built-in data)."""
    base = {"default": Config(), "strong_cpu": load_config(CONFIGS / "strong_cpu.yaml")}
    if name == "strong":
        base["strong"] = load_config(CONFIGS / "strong.yaml")
    source = base[name.removesuffix("+photometric")]
    settings = {k: getattr(source, k) for k in DATA_KEYS}
    if name.endswith("+photometric"):
        settings["photometric"] = True
    return replace(Config(), **settings, data_root=data_root, cache="auto", val_holdout=0.0)


class Side:
    """One side of a recipe: its training loader, kept from epoch to epoch as vocseg train keeps it."""

    def __init__(self, data, cfg: Config, device: torch.device) -> None:
        self.data, self.cfg, self.device, self.loader = data, cfg, device, None
        self.augment = DeviceAugment(data.mean, data.std, device) if cfg.augment_on == "device" else None

    def epoch(self, epoch: int) -> int:
        """One epoch of batches on the device; the number of images."""
        self.loader = train_loader(self.data, self.cfg, epoch, self.device, 0, 1, reuse=self.loader)
        n = 0
        for batch in self.loader:
            if self.augment is not None:
                images, masks = self.augment(batch)
            else:
                images, masks = (t.to(self.device, non_blocking=True) for t in batch)
            n += images.shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return n


def measure(
    names: list[str], device: torch.device, repeats: int, data_root: str | None
) -> dict[str, dict[str, list[float]]]:
    """img/s per recipe and side, per repeat."""
    results: dict[str, dict[str, list[float]]] = {}
    for name in names:
        cfg = recipe(name, data_root)
        data = build_datasets(cfg, log=print)
        sides = {side: Side(data, replace(cfg, augment_on=side), device) for side in ("workers", "device")}
        for side in sides.values():
            side.epoch(0)  # warm-up, untimed: worker start-up, allocator, kernels
        got: dict[str, list[float]] = {side: [] for side in sides}
        for r in range(repeats):
            for side in sides if r % 2 == 0 else reversed(list(sides)):
                t0 = time.perf_counter()
                n = sides[side].epoch(r + 1)
                got[side].append(n / (time.perf_counter() - t0))
            print(
                f"  {name} repeat {r + 1}: " + ", ".join(f"{s} {v[-1]:.0f} img/s" for s, v in got.items()), flush=True
            )
        results[name] = got
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--recipes", nargs="+", default=["default", "strong_cpu", "strong_cpu+photometric"])
    p.add_argument("--data-root", default=None, help="a VOC-format folder (default: the built-in data)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the main process (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workers = resolve_workers("auto", device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(
        f"{platform.processor() or platform.machine()}, {cpu_count()} cores, {torch.get_num_threads()} torch threads"
        f"{gpu}, torch {torch.__version__}; device {device}, num_workers auto = {workers}"
    )
    results = measure(args.recipes, device, args.repeats, args.data_root)
    print(f"\nimages/s, median of {args.repeats} epochs")
    print(f"{'recipe':<26} {'workers':>9} {'device':>9} {'device/workers':>15}")
    for name, got in results.items():
        w, d = statistics.median(got["workers"]), statistics.median(got["device"])
        print(f"{name:<26} {w:9.0f} {d:9.0f} {d / w:14.2f}x")


if __name__ == "__main__":
    main()
