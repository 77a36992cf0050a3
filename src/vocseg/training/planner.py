"""``vocseg plan``: fingerprint the training split, time candidate steps on the device, apply the rules
(training/plan_rules.py) and write a complete config whose every planned key carries its reason.

    data root -> classes and config -> fingerprint (cached) -> machine -> rules (timing steps as asked) -> plan.yaml
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torchvision import tv_tensors

from ..config import Config, config_from_dict, parse_duration, replace
from ..data.builder import resolve_data_root, with_dataset_classes
from ..data.classes import class_names
from ..data.copy_paste import CopyPasteCollate
from ..data.fingerprint import Fingerprint, dataset_fingerprint
from ..data.photometric import PhotometricDistortion
from ..data.transforms import SegmentationPresetTrain
from ..data.voc import VOCSegmentation
from ..models import create_model, get_model_entry
from ..models.transfer import weights_cache_dir, weights_file_name
from ..rundir import RunDir
from ..runtime.device import autocast, resolve_amp, resolve_device
from ..runtime.files import atomic_write_bytes, output_file
from ..runtime.workers import resolve_workers
from .plan_rules import COPY_PASTE, LARGE, SMALL, Machine, Recipe, colour_defines, plan_recipe, scale_range_for
from .step import training_loss

PLAN_FILE, FINGERPRINT_FILE = RunDir.PLAN, RunDir.FINGERPRINT  # the same names beside a plan and in a run
TIMING_SECONDS = 2.0  # each candidate is timed for about this long, after one untimed step
AUX_WEIGHT = Config().aux_weight  # the candidates have auxiliary heads, trained at the default weight
LOADER_SECONDS = 1.0  # the loader's batches at a crop are timed for about this long
LOADER_SAMPLE = 16  # decoded training images the loader's batches are made from
ORDER_SLACK = 0.2  # a smaller crop timed this much slower than a larger one is timed again (StepTimer)


@dataclass
class Plan:
    config: Config
    recipe: Recipe
    fingerprint: Fingerprint
    step_times: dict[tuple[str, str, int, int], float]  # what was timed, seconds per step

    def yaml_text(self) -> str:
        """The complete config, one key a line, each planned key followed by its reason."""
        lines = [
            "# Planned by `vocseg plan` from the training split's fingerprint, this machine and the budget.",
            "# Each planned key's reason follows it; the rules and their evidence: docs/planning.md.",
        ]
        for key, value in self.config.to_dict().items():
            text = yaml.safe_dump({key: value}, default_flow_style=True, width=10_000).strip()[1:-1]
            reason = self.recipe.reasons.get(key)
            lines.append(f"{text}  # {reason}" if reason else text)
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        fp = self.fingerprint
        head = f"plan for {fp.num_images} training images ({fp.num_classes} classes):"
        rows = [f"  {k}: {self.recipe.values[k]}  -- {self.recipe.reasons[k]}" for k in self.recipe.values]
        timed = ", ".join(f"{e}@{c}x{b}: {s:.2f}s" for (_, e, c, b), s in self.step_times.items())
        return "\n".join([head, *rows, f"  step times: {timed}"])


def make_plan(
    data_root: str | Path | None, budget: str | float, device: str = "auto", base: Config | None = None, log=print
) -> Plan:
    """Plan a run on ``data_root`` (a VOC tree or image/mask folders; None: the built-in data) that must end
    within ``budget``; ``base`` supplies the keys the rules do not decide (split names, seed, out, ...)."""
    budget_s = parse_duration(budget)
    cfg = with_dataset_classes(replace(base or Config(), data_root=None if data_root is None else str(data_root)))
    names = class_names(cfg.num_classes, cfg.class_names)
    layout = resolve_data_root(cfg.data_root)
    train = VOCSegmentation(layout, cfg.train_split, num_classes=cfg.num_classes)
    train.check()
    t0 = time.perf_counter()
    fp = dataset_fingerprint(train)
    log(f"fingerprint of {layout.root} {cfg.train_split} ({fp.num_images} images): {time.perf_counter() - t0:.1f} s")
    dev = resolve_device(device)
    loader = LoaderTimer(train, fp, cfg.hflip, cfg.vflip, resolve_workers(cfg.num_workers, dev))
    timer = StepTimer(dev, cfg.num_classes, log, loader)
    eval_images = len(layout.read_split(cfg.val_split))
    machine = Machine(dev.type, available_weights())
    recipe = plan_recipe(fp, names, machine, budget_s, timer, eval_images)
    if timer.retimed:  # the rules read a time that was then taken again: plan once more (from what is timed)
        recipe = plan_recipe(fp, names, machine, budget_s, timer, eval_images)
    fixed = {"budget": budget if isinstance(budget, str) else f"{budget_s:g}s", "iters": None, "device": device}
    planned = config_from_dict({**cfg.to_dict(), **recipe.values, **fixed}, "the plan")
    return Plan(planned, recipe, fp, dict(timer.times))


def available_weights() -> frozenset[str]:
    """The candidate encoders whose ImageNet weights torch.hub has cached here (nothing is downloaded)."""
    encoders = (SMALL[1]["encoder"], LARGE[1]["encoder"])
    return frozenset(e for e in encoders if os.path.isfile(os.path.join(weights_cache_dir(), weights_file_name(e))))


def write_plan(plan: Plan, out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """plan.yaml at ``out`` and fingerprint.json beside it; existing files are kept unless ``overwrite``."""
    target = output_file(out, overwrite, what="plan file")
    fingerprint = output_file(target.with_name(FINGERPRINT_FILE), overwrite, what="fingerprint file")
    atomic_write_bytes(plan.yaml_text().encode(), target)
    atomic_write_bytes(fingerprint_json(plan).encode(), fingerprint)
    return target, fingerprint


def fingerprint_json(plan: Plan) -> str:
    return json.dumps(plan.fingerprint.to_dict(), indent=1) + "\n"


class StepTimer:
    """Seconds per training step of a candidate: the model's step on the device (random data, the run's
    precision and memory format) and the loader's batch (``loader``; none: the model's step alone), timed on
    first use and remembered.

    In the main process (0 workers, a CPU's default) the loader's batch adds to the step; with workers it
    runs beside the step, and the slower of the step and a worker's share of the batch bounds the pace."""

    def __init__(
        self,
        device: torch.device,
        num_classes: int,
        log: Callable[[str], None] = print,
        loader: LoaderTimer | None = None,
    ) -> None:
        self.device, self.num_classes, self.log, self.loader = device, num_classes, log, loader
        self.times: dict[tuple[str, str, int, int], float] = {}
        self.retimed: set[tuple[str, str, int, int]] = set()  # timed twice: see _check_order

    def __call__(self, model: str, encoder: str, crop: int, batch: int) -> float:
        key = (model, encoder, crop, batch)
        if key not in self.times:
            self.times[key] = self._measure(key)
            self._check_order(key)
        return self.times[key]

    def _measure(self, key: tuple[str, str, int, int]) -> float:
        """The step's seconds with the loader's batch: added in the main process, beside it with workers."""
        step = self._time(*key)
        crop, batch = key[2:]
        data = self.loader(crop, batch) if self.loader else 0.0
        workers = self.loader.workers if self.loader else 0
        seconds = step + data if workers == 0 else max(step, data / workers)
        where = "in the main process" if workers == 0 else f"over {workers} workers"
        self.log(f"  timed {key[1]} at {crop} px, batch {batch}: {step:.3f} s a step, loader {data:.3f} s a "
                 f"batch {where}: {seconds:.3f} s")  # fmt: skip
        return seconds

    def _check_order(self, key: tuple[str, str, int, int]) -> None:
        """More pixels never make a step faster. A smaller crop of the same candidate timed slower than a larger
        one (by more than ORDER_SLACK) was timed while something else ran: time it again, once. Load can only
        slow a timing, so the smaller crop's is the one to doubt (a plan made beside a static checker once
        took 192 px crops because 96 px timed 2.4x slower than 128 px: docs/planning.md)."""
        for other in [k for k in self.times if k != key and k[:2] == key[:2] and k[3] == key[3]]:
            small, large = sorted((key, other), key=lambda k: k[2])
            if small in self.retimed or self.times[small] <= self.times[large] * (1 + ORDER_SLACK):
                continue
            self.log(f"  {small[1]} at {small[2]} px timed slower ({self.times[small]:.3f} s) than at {large[2]} px "
                     f"({self.times[large]:.3f} s): the machine was busy; timing it again")  # fmt: skip
            self.retimed.add(small)
            if self.loader is not None:
                self.loader.times.pop(small[2:], None)
            self.times[small] = self._measure(small)

    def _time(self, name: str, encoder: str, crop: int, batch: int) -> float:
        kwargs: dict[str, Any] = dict(LARGE[1] if encoder == LARGE[1]["encoder"] else SMALL[1], pretrained=False)
        model = create_model(name, self.num_classes, **kwargs).to(self.device).train()
        memory = torch.channels_last if get_model_entry(name).channels_last else torch.contiguous_format
        model = model.to(memory_format=memory)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randn(batch, 3, crop, crop, device=self.device).to(memory_format=memory)
        y = torch.randint(0, self.num_classes, (batch, crop, crop), device=self.device)
        amp = resolve_amp("auto", self.device)
        stride = getattr(model, "aux_stride", 1)
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - started < TIMING_SECONDS and len(times) < 20):
            t = time.perf_counter()
            with autocast(self.device, amp):
                out = model(x)
            loss = training_loss(out, y, None, AUX_WEIGHT, aux_stride=stride)[0]  # the aux head's backward too
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:])  # the first pays for allocation and autotuning


class LoaderTimer:
    """Seconds for the loader to make one training batch at a crop: the training preset with the most
    augmentation the rules may choose at that crop (scale range, photometric distortion, copy-paste), applied
    to decoded images as the run's RAM cache serves them, and collated."""

    def __init__(self, train: VOCSegmentation, fp: Fingerprint, hflip: float, vflip: float, workers: int) -> None:
        self.fp, self.hflip, self.vflip, self.workers = fp, hflip, vflip, workers
        self.items = [train.decode(i) for i in range(min(len(train), LOADER_SAMPLE))]
        self.times: dict[tuple[int, int], float] = {}

    def __call__(self, crop: int, batch: int) -> float:
        if (crop, batch) not in self.times:
            self.times[crop, batch] = self._time(crop, batch)
        return self.times[crop, batch]

    def _time(self, crop: int, batch: int) -> float:
        scale = tuple(scale_range_for(self.fp, crop)[0])
        # Whether the rules augment depends on the steps this timing decides: time the most they may choose.
        photometric = None if colour_defines(self.fp) else PhotometricDistortion()
        preset = SegmentationPresetTrain((0.5,) * 3, (0.25,) * 3, crop, self.hflip, self.vflip, scale, photometric)
        collate = CopyPasteCollate(COPY_PASTE)
        times: list[float] = []
        started, k = time.perf_counter(), 0
        while len(times) < 2 or (time.perf_counter() - started < LOADER_SECONDS and len(times) < 10):
            t = time.perf_counter()
            items = []
            for _ in range(batch):
                image, mask = self.items[k % len(self.items)]
                items.append(preset(tv_tensors.Image(image), tv_tensors.Mask(mask)))
                k += 1
            collate(items)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
