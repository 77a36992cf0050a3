"""Training, top to bottom: build everything from a Config, loop over epochs, keep the best checkpoint.

    cfg -> run folder -> data -> model -> optimizer/scheduler/loss -> [train epoch, validate, save] * epochs
        -> reload best.pt -> evaluate on the test split -> metrics.json
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from . import __version__
from .checkpoint import atomic_write_bytes, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .config import Config, config_from_dict, replace, save_config
from .data.builder import DataBundle, build_datasets
from .data.transforms import collate_pad
from .distributed import barrier, broadcast_flag, cleanup, init_distributed, is_main_process
from .engine import evaluate, resolve_amp, resolve_device, train_one_epoch
from .errors import VocsegError
from .losses import class_weights
from .system import resolve_workers
from .models import count_parameters, create_model

RUN_FILES = ("config.yaml", "history.csv", "last.pt", "best.pt", "metrics.json", "curves.png")
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "lr", "seconds")


# ----------------------------------------------------------------------------- small pure pieces


def cosine_lr(epoch: int, base_lr: float, min_lr: float, t_max: int) -> float:
    """The paper's eq. (1): the LR CosineAnnealingLR gives at ``epoch`` (for reading and tests)."""
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * epoch / t_max))


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of the monitored value."""

    patience: int | None
    mode: str = "min"  # "min" for a loss, "max" for mIoU
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record ``value``; return True when it is the best so far."""
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# ----------------------------------------------------------------------------- builders (one place)


def build_model(cfg: Config, for_loading: bool = False) -> nn.Module:
    """The model the config names. ``for_loading`` skips pretrained downloads: the weights come from a checkpoint."""
    return create_model(cfg.model, num_classes=cfg.num_classes, offline=for_loading, **cfg.model_kwargs)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    if cfg.scheduler == "cosine":  # stepped once per epoch, T_max = epochs, as the paper sets it
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def _workers(cfg: Config, device: torch.device) -> int:
    return resolve_workers(cfg.num_workers, device)


class _Strided(Sampler):
    """Indices rank, rank + world, ...: each rank evaluates a disjoint part, with no padding duplicates."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(data: DataBundle, cfg: Config, epoch: int, device: torch.device, rank: int, world: int) -> DataLoader:
    """A fresh loader per epoch whose order and augmentation depend only on (seed, epoch): resuming at an
    epoch boundary replays exactly the batches an uninterrupted run would have seen."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(data.train, world, rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(data.train, generator=g)
    return DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=_workers(cfg, device),
        collate_fn=collate_pad,
        pin_memory=device.type == "cuda",
        drop_last=len(data.train) // world > cfg.batch_size,  # BN needs >1 sample; keep tiny sets usable
        generator=g,
    )


def eval_loader(dataset, cfg: Config, device: torch.device, rank: int = 0, world: int = 1) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=cfg.eval_batch_size,
        sampler=_Strided(len(dataset), rank, world),
        num_workers=_workers(cfg, device),
        collate_fn=collate_pad,
        pin_memory=device.type == "cuda",
    )


# ----------------------------------------------------------------------------- run folder


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run is continued (--resume) or replaced (--overwrite), never clobbered."""
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if resume:
        if not (out / "last.pt").is_file():
            raise VocsegError(f"cannot resume: {out / 'last.pt'} not found")
        return
    if existing:
        if not overwrite:
            raise VocsegError(
                f"{out} already holds a run ({', '.join(existing)}); use --resume to continue it, "
                "--overwrite to replace it, or --out to choose another folder"
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tensorboard", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_history(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def open_tensorboard(log_dir: Path):
    """A TensorBoard writer (the optional ``tensorboard`` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VocsegError("tensorboard: true needs the tensorboard package: pip install 'vocseg[tensorboard]'") from None
    return SummaryWriter(str(log_dir))


# ----------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # False on the other ranks of a distributed run


def train(
    cfg: Config, resume: bool = False, overwrite: bool = False, progress: bool = True, log=print,
    device: str | None = None,
) -> TrainResult:
    """Train ``cfg`` into its run folder; with ``resume``, continue the run found there (its saved config
    wins, except ``device``, which may move a resumed run to another device)."""
    run_dir = Path(cfg.out or f"runs/{cfg.model}")
    if resume:
        prepare_run_dir(run_dir, resume=True, overwrite=False)
        state = load_checkpoint(run_dir / "last.pt")
        cfg = config_from_dict(state["config"], str(run_dir / "last.pt"))
    if device is not None:
        cfg = replace(cfg, device=device)
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    main = is_main_process()
    if main and not resume:
        prepare_run_dir(run_dir, resume=False, overwrite=overwrite)
    seed_everything(cfg.seed, cfg.deterministic)

    model = build_model(cfg, for_loading=resume).to(device)
    # Pretrained encoders bring their own input statistics; a resumed run keeps the ones it started with.
    norm = getattr(model, "input_normalization", None)
    if resume:
        norm = (state["normalization"]["mean"], state["normalization"]["std"])
    data = build_datasets(cfg, norm)
    weight = class_weights(data.stats.class_counts, cfg.class_weighting)
    weight = weight.to(device) if weight is not None else None
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stopper = EarlyStopping(cfg.patience, "min" if cfg.monitor == "val_loss" else "max")
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the run started without fp16; a resume may switch devices
            scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        history = list(state["history"])
        start_epoch = state["epoch"]
        restore_rng_state(state["rng"])
        log(f"resuming {run_dir} after epoch {start_epoch}")
    if main and not resume:
        save_config(cfg, run_dir / "config.yaml")
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    checkpoint_meta = {
        "model_name": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "num_classes": cfg.num_classes,
        "class_names": data.class_names,
        "normalization": {"mean": list(data.mean), "std": list(data.std)},
        "class_weight": weight.cpu() if weight is not None else None,
        "config": cfg.to_dict(),
        "vocseg_version": __version__,
    }
    if main:
        log(
            f"{cfg.model}: {count_parameters(unwrap(model)):,} parameters | {len(data.train)} train, "
            f"{len(data.val)} {data.ids.val_name} images | device {device} | amp {amp_dtype or 'off'} | {run_dir}"
        )

    writer = open_tensorboard(run_dir / "tensorboard") if cfg.tensorboard and main else None
    stopped_early = stopper.should_stop
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loader = train_loader(data, cfg, epoch, device, rank, world)
        train_loss = train_one_epoch(model, loader, optimizer, weight, device, amp_dtype, scaler, epoch, progress and main)
        scheduler.step()
        val, _ = evaluate(
            model, eval_loader(data.val, cfg, device, rank, world), cfg.num_classes, data.class_names, weight,
            device, amp_dtype, progress and main, f"epoch {epoch + 1} val",
        )
        # A finite loss can still leave NaN/inf weights (a bad last step); never save those over a good last.pt.
        weights_finite = torch.stack(
            [torch.isfinite(t).all() for t in unwrap(model).state_dict().values() if t.is_floating_point()]
        ).all().item()  # one host sync for the whole model
        if not math.isfinite(val["loss"]) or not weights_finite:
            raise VocsegError(
                f"non-finite weights or validation loss ({val['loss']}) after epoch {epoch + 1}; stopping without "
                f"saving, so {run_dir / 'last.pt'} keeps the last good epoch. Try a lower --lr or --amp none."
            )
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_miou": val["mean_iou"],
            "val_pixel_accuracy": val["pixel_accuracy"],
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        monitored = val["loss"] if cfg.monitor == "val_loss" else (val["mean_iou"] or 0.0)
        improved = stopper.step(monitored, epoch + 1)
        stopped_early = broadcast_flag(stopper.should_stop, device)
        if main:
            state = {
                **checkpoint_meta,
                "model": unwrap(model).state_dict(),
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "early_stopping": stopper.state_dict(),
                "history": history,
                "rng": capture_rng_state(),
            }
            # best.pt first: if we die between the two writes, last.pt still points at the previous epoch
            # and a resume redoes this one.
            if improved:
                save_checkpoint({k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "scaler", "rng")}, run_dir / "best.pt")
            save_checkpoint(state, run_dir / "last.pt")
            write_history(history, run_dir / "history.csv")
            from .viz import plot_curves

            plot_curves(history, run_dir / "curves.png", title=cfg.model)
            if writer is not None:
                for key in HISTORY_FIELDS[1:]:
                    writer.add_scalar(key, row[key] if row[key] is not None else float("nan"), epoch + 1)
                writer.flush()
            log(
                f"epoch {epoch + 1}/{cfg.epochs}  train {train_loss:.4f}  val {val['loss']:.4f}  "
                f"mIoU {val['mean_iou'] or 0:.4f}  acc {val['pixel_accuracy'] or 0:.4f}  "
                f"lr {lr:.2e}  {row['seconds']:.1f}s" + ("  *" if improved else "")
            )
    if main and stopped_early:
        log(f"early stopping: no {cfg.monitor} improvement for {cfg.patience} epochs (best epoch {stopper.best_epoch})")

    # Final numbers come from the best checkpoint, on the test split when there is one.
    barrier()  # every rank waits until rank 0 has written the last best.pt
    best = load_checkpoint(run_dir / "best.pt", map_location=device)
    unwrap(model).load_state_dict(best["model"])
    final_set = data.test if data.test is not None else data.val
    final, cm = evaluate(
        model, eval_loader(final_set, cfg, device, rank, world), cfg.num_classes, data.class_names, weight,
        device, amp_dtype, progress and main, "final eval",
    )
    metrics = {
        **final,
        "split": data.ids.test_name or data.ids.val_name,
        "num_images": len(final_set),
        "best_epoch": stopper.best_epoch,
        "epochs_run": len(history),
        "stopped_early": stopped_early,
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])) if history else None,
        "parameters": count_parameters(unwrap(model)),
        "confusion_matrix": cm.matrix.cpu().tolist(),
    }
    if main:
        # metrics.json marks a finished run (reproduce skips it), so it must never exist half-written.
        atomic_write_bytes(json.dumps(metrics, indent=2).encode(), run_dir / "metrics.json")
    if writer is not None:
        writer.close()
    result = TrainResult(run_dir, metrics, history, is_main=main)
    cleanup()
    return result
