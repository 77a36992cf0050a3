"""Training throughput and model FLOPs utilisation (MFU): the model alone against the end-to-end loop,
eager against torch.compile, side by side in one run.

    python benchmarks/bench_mfu.py --device cuda                          # 3 models, eager, 512, batch 16
    python benchmarks/bench_mfu.py --device cuda --models configs/strong.yaml \\
        --compile none default reduce-overhead max-autotune-no-cudagraphs
    python benchmarks/bench_mfu.py --device cuda --models configs/strong.yaml --data-root /tmp/synth500 \\
        --profile $OUT/profile                                            # + end-to-end, loader, profile
    python benchmarks/bench_mfu.py --device cpu --size 64 --batch 2 --steps 2 --warmup 1   # a dry run

Each --models entry is a config YAML (its model, model_kwargs, optimizer, amp, aux_weight, channels_last)
or a registered model name, trained with --recipe's settings (default configs/strong.yaml). Models are
built without pretrained weights (speed does not depend on them). Every step is vocseg's own training
step (vocseg.training.step.train_one_epoch: autocast, the loss with its aux term, one loss.item() sync,
backward, optimizer step), fed by:
  model     the same (batch, 3, size, size) batch, already on the device: the model's own speed;
  e2e       with --data-root, the training loader over that VOC tree (fresh loader per epoch, as training
            does; the config's augmentation, crops of --size, its workers): what training gets;
  loader    the same loader alone, each batch moved to the device: the ceiling the loader sets.
Timing: --warmup steps, then the median of --repeats windows of --steps steps (synchronised at the window
edges). "one-off s" is the warm-up's time beyond that many steady steps: compilation (with --compile),
cuDNN's algorithm search, the first loader's start-up; "amortised" spreads it over --amortise-steps steps.
FLOPs per image (forward + backward, vocseg.models.flops.training_flops; convs and matmuls, a multiply-add
is 2 FLOPs, the optimizer step not counted); TFLOP/s = FLOPs/image x model img/s; MFU = that / the peak
of vocseg.runtime.peak_flops (by GPU name; --peak-tflops or $VOCSEG_PEAK_TFLOPS override it; none on
CPU). "epoch s": --epoch-images (VOC train_aug: 10,582) at the e2e rate, or at the model rate without
--data-root; with synthetic data it is an estimate for VOC's images only as far as their sizes match.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import math
import os
import platform
import shutil
import statistics
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.autograd import DeviceType

from vocseg.config import Config, load_config, replace
from vocseg.data.builder import build_datasets
from vocseg.data.device_augment import resolve_augment_ahead, training_augment
from vocseg.data.loaders import train_loader
from vocseg.errors import VocsegError
from vocseg.models import create_model, list_models
from vocseg.models.flops import training_flops
from vocseg.runtime.device import resolve_amp
from vocseg.runtime.peak_flops import peak_flops
from vocseg.runtime.prefetch import finished_batches
from vocseg.runtime.seeding import seed_everything
from vocseg.training.builders import build_optimizer, resolve_channels_last
from vocseg.training.step import train_one_epoch

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
DEFAULT_MODELS = ("configs/strong.yaml", "fcn_resnet50", "deeplabv3_resnet50")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spec_config(spec: str, args) -> Config:
    """The Config a --models entry trains with: a YAML as it is, or --recipe with the model swapped."""
    overrides = {"image_size": args.size, "batch_size": args.batch, "device": args.device}
    if args.amp:
        overrides["amp"] = args.amp
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if args.data_root:
        overrides |= {"data_root": args.data_root, "train_split": args.train_split}
    if spec.endswith((".yaml", ".yml")):
        return resolve_channels_last(load_config(spec, overrides))
    if spec not in list_models():
        raise VocsegError(f"unknown model {spec!r}; give a config .yaml or one of: {', '.join(list_models())}")
    cfg = load_config(args.recipe, overrides)
    return resolve_channels_last(replace(cfg, model=spec, model_kwargs={}, channels_last=None))


@dataclass
class StepClock:
    """``after_step`` for train_one_epoch: times windows of steps after a warm-up, then ends the epoch."""

    device: torch.device
    warmup: int
    steps: int
    repeats: int
    profiler: object = None
    done: int = 0
    marks: list[float] = field(default_factory=list)  # start, end of the warm-up window, then each window's end

    def start(self) -> None:
        _sync(self.device)
        self.marks = [time.perf_counter()]

    def __call__(self) -> bool:
        self.done += 1
        if self.profiler is not None:
            self.profiler.step()
        if self.done >= self.warmup and (self.done - self.warmup) % self.steps == 0:
            _sync(self.device)
            self.marks.append(time.perf_counter())
        return self.done >= self.total

    @property
    def total(self) -> int:
        return self.warmup + self.repeats * self.steps

    def result(self, batch: int) -> tuple[float, float]:
        """(images/s: median window, one-off seconds: the warm-up beyond as many steady steps)."""
        windows = [b - a for a, b in itertools.pairwise(self.marks[1:])]
        step_s = statistics.median(windows) / self.steps
        return batch / step_s, max(0.0, self.marks[1] - self.marks[0] - self.warmup * step_s)


def run_loop(model, batches, cfg: Config, opt, device, clock: StepClock) -> None:
    """``clock.total`` training steps of vocseg's loop over ``batches``."""
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    aux_stride = getattr(getattr(model, "_orig_mod", model), "aux_stride", 1)
    clock.start()
    train_one_epoch(
        model, batches, opt, None, device, amp_dtype, scaler, 0, False,
        aux_weight=cfg.aux_weight, loss_kind=cfg.loss, label_smoothing=cfg.label_smoothing,
        aux_stride=aux_stride, channels_last=cfg.channels_last, after_step=clock,
    )  # fmt: skip


def memory_batches(cfg: Config, device: torch.device, n: int):
    """One random batch on the device, yielded ``n`` times (in the model's memory format already)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size, cfg.image_size, cfg.image_size), generator=g).to(device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return itertools.repeat((x, y), n)


def loader_batches(data, cfg: Config, device: torch.device):
    """The training loader's batches, epoch after epoch, finished on the device when ``augment_on`` puts the
    augmentation there, on a thread of its own with ``augment_ahead`` (as training does)."""
    prepare = training_augment(cfg.augment_on, data.mean, data.std, device)
    for epoch in itertools.count():
        loader = train_loader(data, cfg, epoch, device, 0, 1)
        ahead = resolve_augment_ahead(cfg.augment_ahead, cfg.augment_on, device)
        with closing(finished_batches(loader, prepare, device, ahead)) as batches:
            yield from batches


def loader_speed(data, cfg: Config, device: torch.device, args) -> float:
    """Images/s of the loader alone, each batch moved to the device (median window, after the warm-up)."""
    clock = StepClock(device, args.warmup, args.steps, args.repeats)
    batches = loader_batches(data, cfg, device)
    clock.start()
    for images, masks in batches:
        images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        if clock():
            break
    batches.close()
    return clock.result(cfg.batch_size)[0]


def build(cfg: Config, mode: str, device: torch.device):
    """(the model as trained, its optimizer) for compile ``mode``."""
    seed_everything(cfg.seed, cfg.deterministic)
    model = create_model(cfg.model, num_classes=cfg.num_classes, offline=True, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = build_optimizer(cfg, model)
    if mode != "none":
        torch._dynamo.reset()  # each mode compiles from scratch: its one-off cost is its own
        model = torch.compile(model, mode=None if mode == "default" else mode)
    return model, opt


def profile_loop(model, batches, cfg: Config, opt, device, out: Path, tag: str) -> None:
    """torch.profiler over 3 steps (after 2 skipped and 1 warm-up): the GPU's busy share of the wall time,
    the top ops by self device time and by self CPU time (a data-loader wait shows as DataLoader.__next__)
    to ``tag``.txt, and the trace as gzipped Chrome JSON (chrome://tracing, ui.perfetto.dev)."""
    out.mkdir(parents=True, exist_ok=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    schedule = torch.profiler.schedule(wait=2, warmup=1, active=3, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule) as prof:
        clock = StepClock(device, warmup=6, steps=1, repeats=1, profiler=prof)
        run_loop(model, batches, cfg, opt, device, clock)
    events = prof.key_averages()
    wall_us = sum(e.cpu_time_total for e in events if e.key.startswith("ProfilerStep"))
    text = f"{tag}: 3 training steps, batch {cfg.batch_size} x {cfg.image_size}^2, {wall_us / 1e3:.1f} ms wall\n"
    if device.type == "cuda":
        # kernel (and memcpy) rows only, as the table's own total: op rows repeat their kernels' time.
        # Kernels on several streams may overlap, so this can overstate the busy share a little.
        kernels = [e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", 0)]
        busy_us = sum(e.self_device_time_total for e in kernels)
        text += f"GPU kernels: {busy_us / 1e3:.1f} ms = {busy_us / max(wall_us, 1):.0%} of the wall time\n"
        text += "\nby self device time:\n" + events.table(sort_by="self_device_time_total", row_limit=30)
    text += "\n\nby self CPU time:\n" + events.table(sort_by="self_cpu_time_total", row_limit=25)
    (out / f"{tag}.txt").write_text(text)
    trace = out / f"{tag}.trace.json"
    prof.export_chrome_trace(str(trace))
    with trace.open("rb") as src, gzip.open(f"{trace}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    trace.unlink()


def measure(cfg: Config, mode: str, device: torch.device, args, data, profile_tag: str | None) -> dict:
    """One (model, compile mode): model-alone images/s and one-off seconds; with ``data`` the same model
    end to end; with ``profile_tag`` a profile of the end-to-end loop (the model alone without data)."""
    model, opt = build(cfg, mode, device)
    clock = StepClock(device, args.warmup, args.steps, args.repeats)
    run_loop(model, memory_batches(cfg, device, clock.total + 1), cfg, opt, device, clock)
    row = dict(zip(("model_ips", "one_off"), clock.result(cfg.batch_size)))
    if data is not None:
        clock = StepClock(device, args.warmup, args.steps, args.repeats)
        batches = loader_batches(data, cfg, device)
        run_loop(model, batches, cfg, opt, device, clock)
        batches.close()
        row["e2e_ips"] = clock.result(cfg.batch_size)[0]
    if profile_tag is not None:
        batches = loader_batches(data, cfg, device) if data is not None else memory_batches(cfg, device, 8)
        profile_loop(model, batches, cfg, opt, device, Path(args.profile), profile_tag)
        if data is not None:
            batches.close()
    return row


def spec_data(cfg: Config, args, log):
    """(the training datasets, seconds to build them) with --data-root, else (None, 0)."""
    if not args.data_root:
        return None, 0.0
    t0 = time.perf_counter()
    with torch.device("meta"):
        norm = getattr(create_model(cfg.model, offline=True, **cfg.model_kwargs), "input_normalization", None)
    data = build_datasets(cfg, norm, log=log)
    return data, time.perf_counter() - t0


def format_row(label: str, mode: str, gflop: float, row: dict, peak: float | None, args) -> str:
    if "error" in row:
        return f"{label:<26} {mode:<27} failed: {row['error']}"
    ips, e2e = row["model_ips"], row.get("e2e_ips")
    tflops = gflop * ips / 1000
    steps = args.amortise_steps
    amortised = steps * args.batch / (row["one_off"] + steps * args.batch / ips)
    cells = [
        f"{gflop:>9.1f}",
        f"{ips:>8.1f}",
        f"{e2e:>8.1f}" if e2e else f"{'-':>8}",
        f"{e2e / ips:>6.2f}" if e2e else f"{'-':>6}",
        f"{tflops:>8.2f}",
        f"{tflops * 1e12 / peak:>6.1%}" if peak else f"{'-':>6}",
        f"{row['one_off']:>8.1f}",
        f"{amortised:>10.1f}",
        f"{args.epoch_images / (e2e or ips):>8.1f}",
    ]
    return f"{label:<26} {mode:<27} " + " ".join(cells)


HEADER = (
    f"{'model':<26} {'compile':<27} {'GFLOP/img':>9} {'model/s':>8} {'e2e/s':>8} {'ratio':>6} {'TFLOP/s':>8} "
    f"{'MFU':>6} {'one-off':>8} {'amortised':>10} {'epoch s':>8}"
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="config .yaml files or model names")
    p.add_argument("--recipe", default="configs/strong.yaml", help="the config registered names train with")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=512, help="square training crops")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--repeats", type=int, default=3, help="timed windows; their median is printed")
    p.add_argument("--warmup", type=int, default=5, help="steps before timing (compilation happens here)")
    p.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["none"], help="modes, side by side")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default=None, help="default: the config's")
    p.add_argument("--data-root", default=None, help="a VOC tree: also time the end-to-end loop on it")
    p.add_argument("--train-split", default="train")
    p.add_argument("--num-workers", type=int, default=None, help="loader workers (default: the config's)")
    p.add_argument("--profile", default=None, help="folder for a torch.profiler summary of each model's first mode")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by GPU name)")
    p.add_argument("--amortise-steps", type=int, default=None, help="default: one epoch of --epoch-images")
    p.add_argument("--epoch-images", type=int, default=10582, help="VOC train_aug")
    args = p.parse_args()
    for name in ("size", "batch", "steps", "repeats", "warmup"):
        if getattr(args, name) < 1:  # warm-up >= 1: its end is the first mark, and compilation belongs there
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.amortise_steps is None:
        args.amortise_steps = math.ceil(args.epoch_images / args.batch)
    return args


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    peak = peak_flops(device, args.peak_tflops)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; peak {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown: no MFU'}")  # fmt: skip
    print(f"batch {args.batch} x {args.size}^2; windows of {args.steps} steps after {args.warmup}, median of "
          f"{args.repeats}; amortised over {args.amortise_steps} steps; epoch = {args.epoch_images:,} images\n")  # fmt: skip
    print(HEADER, flush=True)
    for spec in args.models:
        cfg = spec_config(spec, args)
        label = Path(spec).stem if spec.endswith((".yaml", ".yml")) else spec
        flops = training_flops(cfg.model, cfg.image_size, num_classes=cfg.num_classes, **cfg.model_kwargs)
        data, setup_s = spec_data(cfg, args, log=None)
        for i, mode in enumerate(args.compile):
            tag = f"{label}_{mode}" if args.profile and i == 0 else None
            try:
                row = measure(cfg, mode, device, args, data, tag)
            except Exception as e:  # noqa: BLE001 - report the variant and go on (no compiler, out of memory)
                row = {"error": (str(e).strip().splitlines() or [type(e).__name__])[0][:120]}
            print(format_row(label, mode, flops.total / 1e9, row, peak, args), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        notes = f"  {label}: {cfg.model} {cfg.model_kwargs}, amp {cfg.amp}, channels_last {cfg.channels_last}, "
        notes += f"{cfg.optimizer}; FLOPs/img fwd {flops.forward / 1e9:.1f} + bwd {flops.backward / 1e9:.1f} G"
        if data is not None:
            notes += f"; data setup {setup_s:.1f} s, loader alone {loader_speed(data, cfg, device, args):.1f} img/s"
        print(notes, flush=True)


if __name__ == "__main__":
    main()
