"""Training, top to bottom: build everything from a Config, loop over epochs, keep the best checkpoint.

    cfg -> run folder -> session (data, model, optimizer, schedule, ...) -> [train epoch, validate, save]
        -> reload best.pt -> evaluate on the test split -> metrics.json

:func:`train` is the loop; every step it takes is a named function below it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import checkpoint_metadata
from ..config import Config, config_from_dict, replace
from ..data.builder import DataBundle, build_datasets, with_dataset_classes
from ..data.device_augment import resolve_augment_ahead, training_augment
from ..data.loaders import EpochBatches, eval_loader, train_loader
from ..errors import VocsegError, require
from ..evaluation.evaluator import Evaluation, evaluate
from ..evaluation.inference import multiscale_views, predict_logits
from ..losses import class_weights
from ..models import count_parameters
from ..plots import plot_curves
from ..rundir import HISTORY_FIELDS, RunDir
from ..runtime.device import resolve_amp, resolve_device
from ..runtime.distributed import barrier, broadcast_flag, cleanup, init_distributed, is_main_process
from ..runtime.files import BackgroundWriter, atomic_write_bytes, detached_copy
from ..runtime.seeding import capture_rng_state, restore_rng_state, seed_everything
from ..runtime.wrappers import eager, unwrap, wrap_for_speed
from . import lr_schedule
from .builders import build_model, build_optimizer, resolve_channels_last, resolve_compile
from .ema import ModelEma
from .lr_schedule import LrSchedule, build_lr_schedule
from .step import train_one_epoch
from .tensorboard_log import log_epoch

__all__ = ["EarlyStopping", "HISTORY_FIELDS", "RESUMABLE_KEYS", "TrainResult", "train"]

# Config keys a resumed run may change (`vocseg train --resume RUN --epochs 40`); any other is refused.
RESUMABLE_KEYS = frozenset(
    {
        "epochs",
        "iters",
        "patience",
        "device",
        "num_workers",
        "cache",
        "tensorboard",
        "channels_last",
        "compile",
        "eval_batch_size",
        "augment_on",
        "augment_ahead",
    }
)
# Entries of last.pt that best.pt leaves out: best.pt holds weights and metadata only. With ema_decay,
# "model" is the averaged weights (what is evaluated) and "train_model" the weights being trained.
# Checkpoints written before the one LR mechanism also hold a "scheduler" entry, which resuming ignores.
TRAINING_STATE_KEYS = ("optimizer", "scaler", "rng", "step_schedule", "train_model", "ema")
CURVES_EVERY_S = 30.0  # curves.png is redrawn at most this often while training, and after the last epoch
# last.pt and history.csv are written at most this often, and after the first, the last and every improved
# epoch (best.pt with them): a kill loses at most this much training, and epochs of a few steps (a small
# dataset) do not spend their time copying and serialising the optimizer's state (docs/benchmarks.md).
CHECKPOINT_EVERY_S = 30.0


# ----------------------------------------------------------------------------- small pure pieces


# How EarlyStopping compares each config ``monitor``: "last" keeps every epoch, so best.pt is the final one.
MONITOR_MODES = {"val_loss": "min", "val_miou": "max", "last": "last"}


@dataclass
class EarlyStopping:
    """Stop after ``patience`` validations without improvement of the monitored value."""

    patience: int | None
    mode: str = "min"  # "min" for a loss, "max" for mIoU, "last" for no choice (every epoch is the best)
    best: float | None = None  # None before the first validation (and for "last" between validations)
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float | None, epoch: int) -> bool:
        """Record ``value``; return True when it is the best so far."""
        better = (
            self.mode == "last" or self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        )
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


# ----------------------------------------------------------------------------- the session


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True  # False on the other ranks of a distributed run


@dataclass
class Session:
    """Everything one training run holds while it runs."""

    cfg: Config
    run: RunDir
    device: torch.device
    rank: int
    world: int
    main: bool
    model: nn.Module
    data: DataBundle
    weight: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    steps: LrSchedule
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    stopper: EarlyStopping
    log: Callable[[str], None]
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    writer: Any = None
    stopped_early: bool = False
    ema: ModelEma | None = None  # with ema_decay: the averaged weights, which are evaluated and saved
    curves_plotted_at: float | None = None  # clock time curves.png was last drawn
    checkpointed_at: float | None = None  # clock time last.pt was last written
    unsaved_epoch: int | None = None  # an epoch trained since last.pt was written, waiting for CHECKPOINT_EVERY_S
    saver: BackgroundWriter = field(default_factory=BackgroundWriter)  # writes checkpoints off the training thread
    loader: Any = None  # the training DataLoader, kept from epoch to epoch so that its workers persist
    batches: EpochBatches | None = None  # the last epoch's batches, which start the next epoch's iterator

    def eval_model(self) -> nn.Module:
        """The model validation and the final evaluation score: the average with ``ema_decay``."""
        return self.ema.module if self.ema is not None else eager(self.model)

    def after_step(self) -> bool:
        """After every optimizer step: move the average, then let the step schedule (LR, budget) decide."""
        if self.ema is not None:
            self.ema.update(unwrap(self.model))
        return self.steps.after_step()


def train(
    cfg: Config,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    device: str | None = None,
    changes: dict[str, Any] | None = None,
    run_files: dict[str, bytes] | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train ``cfg`` into its run folder. With ``resume``, continue the run found there: its saved config
    wins, except for the keys in ``changes`` (only :data:`RESUMABLE_KEYS`; extending ``epochs`` is the
    common one) and ``device``, which may move a resumed run to another device. ``run_files`` (name ->
    bytes) are kept in a new run's folder beside config.yaml (``--recipe auto``'s plan and fingerprint).
    ``started`` (an ``lr_schedule.clock()`` time) counts the budget from earlier: ``--recipe auto``'s planning."""
    started = lr_schedule.clock() if started is None else started  # a time budget counts from here
    run = RunDir(cfg.out or f"runs/{cfg.model}")
    saved = None
    if resume:
        run.prepare(resume=True, overwrite=False)
        saved = run.load_last()
        cfg = resumed_config(run, saved, dict(changes or {}))
    if device is not None:
        cfg = replace(cfg, device=device)
    s = start_session(cfg, run, saved, overwrite, log, started, run_files or {})

    try:
        for epoch in range(s.start_epoch, s.steps.epochs):
            if s.stopped_early or s.steps.finished:
                break
            row, val = run_epoch(s, epoch, progress and s.main)
            check_finite(s, row, epoch)
            improved = judge(s, val, epoch)
            s.stopped_early = broadcast_flag(s.stopper.should_stop, s.device)
            s.history.append(row)
            if s.main:
                save_epoch(s, epoch, row, val, improved)
        if s.main and s.unsaved_epoch is not None:
            write_checkpoints(s, s.unsaved_epoch, improved=False)
    finally:
        s.saver.close()  # the last epoch's files are on disk before best.pt is read, or an error ends the run
    if s.main and s.stopped_early:
        log(
            f"early stopping: no {cfg.monitor} improvement for {cfg.patience} epochs (best epoch {s.stopper.best_epoch})"
        )

    metrics = final_evaluation(s, progress and s.main)
    if s.writer is not None:
        s.writer.close()
    cleanup()
    return TrainResult(run.path, metrics, s.history, is_main=s.main)


# ----------------------------------------------------------------------------- the steps, in order


def resumed_config(run: RunDir, saved: dict[str, Any], changes: dict[str, Any]) -> Config:
    """The saved config with the allowed ``changes``; others are refused by name. A finished run that
    is extended loses its metrics.json (it is written again at the new end)."""
    cfg = config_from_dict(saved["config"], str(run.last_path))
    changes = {k: v for k, v in changes.items() if v != getattr(cfg, k)}
    refused = sorted(set(changes) - RESUMABLE_KEYS)
    if refused:
        raise VocsegError(
            f"--resume continues {run.path} with its own config; cannot change {', '.join(refused)} "
            f"(may change: {', '.join(sorted(RESUMABLE_KEYS))}). Start a new run with --out for other settings."
        )
    if "epochs" in changes and changes["epochs"] < saved["epoch"]:
        raise VocsegError(f"--epochs {changes['epochs']} is fewer than the {saved['epoch']} epochs {run.path} has run")
    if changes and run.metrics_path.is_file():
        run.metrics_path.unlink()  # the run is being extended: it is no longer finished
    return replace(cfg, **changes)


def start_session(
    cfg: Config, run: RunDir, saved: dict[str, Any] | None, overwrite: bool, log, started: float,
    run_files: dict[str, bytes],
) -> Session:  # fmt: skip
    """Build the run's model, data, optimizer and schedule, restoring them from ``saved`` when resuming."""
    cfg = resolve_channels_last(cfg if saved is not None else with_dataset_classes(cfg))
    device = resolve_device(cfg.device)
    rank, world = init_distributed(device)
    main = is_main_process()
    if main and saved is None:
        run.prepare(resume=False, overwrite=overwrite)
        run.save_config(cfg.to_dict())
        for name, data in run_files.items():
            atomic_write_bytes(data, run.path / name)
    seed_everything(cfg.seed, cfg.deterministic)
    model = build_model(cfg, for_loading=saved is not None).to(device)
    # Pretrained encoders bring their own input statistics; a resumed run keeps the ones it started with.
    norm = getattr(model, "input_normalization", None)
    if saved is not None:
        norm = (saved["normalization"]["mean"], saved["normalization"]["std"])
    data = build_datasets(cfg, norm, log=log if main else None)
    weight = class_weights(data.stats.class_counts, cfg.class_weighting)
    optimizer = build_optimizer(cfg, model)
    amp_dtype = resolve_amp(cfg.amp, device)
    s = Session(
        cfg,
        run,
        device,
        rank,
        world,
        main,
        model,
        data,
        weight.to(device) if weight is not None else None,
        optimizer,
        build_lr_schedule(cfg, optimizer, len(data.train), len(data.val), len(data.test or data.val), world, started),
        amp_dtype,
        torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        EarlyStopping(cfg.patience, MONITOR_MODES[cfg.monitor]),
        log,
    )
    s.steps.eval_probe = lambda: eval_seconds_per_image(s)
    s.steps.tta_probe = lambda: measured_tta_seconds(s)
    if saved is not None:
        restore(s, saved)
    s.model = wrap_model(s)
    if cfg.ema_decay is not None:  # after wrap_model: the copy takes the model's memory format
        s.ema = ModelEma(unwrap(s.model), cfg.ema_decay)
        if saved is not None:
            s.ema.module.load_state_dict(saved["model"])
            s.ema.load_state_dict(saved["ema"])
    s.writer = open_tensorboard(run.tensorboard_dir) if cfg.tensorboard and main else None
    if main:
        log(
            f"{cfg.model}: {count_parameters(unwrap(s.model)):,} parameters | {len(data.train)} train, "
            f"{len(data.val)} {data.ids.val_name} images | device {device} | amp {amp_dtype or 'off'} | {run.path}"
        )
    return s


def restore(s: Session, saved: dict[str, Any]) -> None:
    """Put a resumed run back exactly where last.pt left it (weights, optimizer, schedule, RNGs, history;
    the weight average is restored by :func:`start_session`, once the model has its memory format)."""
    s.model.load_state_dict(saved.get("train_model", saved["model"]))
    s.optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"]:  # empty when the run started without fp16; a resume may switch devices
        s.scaler.load_state_dict(saved["scaler"])
    s.stopper.load_state_dict(saved["early_stopping"])
    s.steps.load_state_dict(saved.get("step_schedule", {}))
    s.history = list(saved["history"])
    s.start_epoch = saved["epoch"]
    s.stopped_early = s.stopper.should_stop
    restore_rng_state(saved["rng"])
    s.log(f"resuming {s.run.path} after epoch {s.start_epoch}")


def wrap_model(s: Session) -> nn.Module:
    """channels-last, SyncBatchNorm, DDP and torch.compile, as the config asks (compile: null decides by the
    model's measured gain and the run's length: resolve_compile)."""
    c = s.cfg
    log = s.log if s.main else None
    compile, why = resolve_compile(c, s.device, s.steps.total_steps, s.world)
    if log is not None and c.compile is None and s.device.type == "cuda":
        log(why)
    return wrap_for_speed(
        s.model, s.device, channels_last=c.channels_last, sync_bn=c.sync_bn, compile=compile, world=s.world, log=log
    )


def run_epoch(s: Session, epoch: int, progress: bool) -> tuple[dict[str, Any], Evaluation | None]:
    """One training pass and, when due (:func:`validation_due`), a validation pass; returns the history row
    (its val_* values None without a validation) and the validation."""
    t0 = lr_schedule.clock()
    s.steps.begin_epoch(epoch)
    lr = s.optimizer.param_groups[0]["lr"]
    s.loader = train_loader(s.data, s.cfg, epoch, s.device, s.rank, s.world, reuse=s.loader)
    s.batches = EpochBatches(s.loader, epoch, next_epoch(s, epoch), previous=s.batches)
    train_loss, _ = train_one_epoch(
        s.model,
        s.batches,
        s.optimizer,
        s.weight,
        s.device,
        s.amp_dtype,
        s.scaler,
        epoch,
        progress,
        aux_weight=s.cfg.aux_weight,
        loss_kind=s.cfg.loss,
        label_smoothing=s.cfg.label_smoothing,
        aux_stride=getattr(unwrap(s.model), "aux_stride", 1),
        channels_last=s.cfg.channels_last,
        after_step=s.after_step,
        prepare=training_augment(s.cfg.augment_on, s.data.mean, s.data.std, s.device),
        prepare_ahead=resolve_augment_ahead(s.cfg.augment_ahead, s.cfg.augment_on, s.device),
    )
    t_train = lr_schedule.clock()
    val = score(s, s.data.val, progress, f"epoch {epoch + 1} val") if validation_due(s, epoch) else None
    seconds = lr_schedule.clock() - t0
    s.steps.end_epoch(seconds - (t_train - t0) if val is not None else None)
    if val is None and s.steps.finished:  # a budget's re-plan just made this epoch the last: it validates too
        val = score(s, s.data.val, progress, f"epoch {epoch + 1} val")
        seconds = lr_schedule.clock() - t0
    m = val.metrics if val is not None else {}
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_loss": m.get("loss"),
        "val_miou": m.get("mean_iou"),
        "val_pixel_accuracy": m.get("pixel_accuracy"),
        "lr": lr,
        "seconds": seconds,
    }
    return row, val


def next_epoch(s: Session, epoch: int) -> int | None:
    """The epoch after ``epoch`` when the schedule, as planned now, runs one (its first batches are then
    prepared while this epoch's last steps run: EpochBatches)."""
    steps_left = s.steps.total_steps - s.steps.step
    last = epoch + 1 >= s.steps.epochs or (s.steps.per_step and steps_left <= len(s.loader))
    return None if last else epoch + 1


def validation_due(s: Session, epoch: int) -> bool:
    """Validate every ``val_every`` epochs and after the last one (the schedule is complete, or the
    epochs are); the epochs between skip the pass, and with it its time."""
    last = s.steps.finished or epoch + 1 >= s.steps.epochs
    return last or (epoch + 1) % s.cfg.val_every == 0


@torch.inference_mode()
def score(s: Session, dataset, progress: bool, desc: str, tta: str = "none") -> Evaluation:
    """The run's model scored on ``dataset`` with the training criterion (validation and final evaluation).
    Test-time augmentation flips and rescales each image on its own, so it evaluates one image at a time."""
    return evaluate(
        s.eval_model(),
        eval_loader(dataset, s.cfg, s.device, s.rank, s.world, batch_size=1 if tta != "none" else None),
        s.cfg.num_classes,
        s.data.class_names,
        s.weight,
        s.device,
        s.amp_dtype,
        progress,
        desc,
        channels_last=s.cfg.channels_last,
        tta=tta,
        tta_scales=s.cfg.tta_scales,
    )


def eval_seconds_per_image(s: Session, images: int = 3, tta: str = "none") -> float:
    """Seconds one validation image takes (forward at native size, with ``tta``), timed on the first few:
    the time budget's first plan needs it before any validation pass has run."""
    model = unwrap(s.model)
    was_training = model.training
    model.eval()
    n = min(images, len(s.data.val))
    scales = s.cfg.tta_scales if tta == "multiscale" else None
    t0 = lr_schedule.clock()
    for i in range(n):
        x, _ = s.data.val[i]
        predict_logits(model, x[None].to(s.device), tta=tta, scales=scales, amp_dtype=s.amp_dtype)
    model.train(was_training)
    return (lr_schedule.clock() - t0) / max(n, 1)


def measured_tta_seconds(s: Session, images: int = 2) -> float | None:
    """Seconds the config's test-time augmentation adds to one image's plain forward, timed on the first few
    validation images (None when the clock cannot tell)."""
    plain = eval_seconds_per_image(s, images)
    augmented = eval_seconds_per_image(s, images, tta=s.cfg.tta)
    return augmented - plain if augmented > plain > 0 else None


def monitored_value(cfg: Config, metrics: dict[str, Any]) -> float:
    """The value best.pt follows (recorded, not compared, with ``monitor: last``)."""
    return (metrics["mean_iou"] or 0.0) if cfg.monitor == "val_miou" else metrics["loss"]


def judge(s: Session, val: Evaluation | None, epoch: int) -> bool:
    """Whether this epoch's weights become best.pt: every epoch with ``monitor: last``; otherwise a validated
    epoch that improves the monitored value (an epoch without validation cannot)."""
    if val is None:
        return s.stopper.step(None, epoch + 1) if s.cfg.monitor == "last" else False
    return s.stopper.step(monitored_value(s.cfg, val.metrics), epoch + 1)


def check_finite(s: Session, row: dict[str, Any], epoch: int) -> None:
    """A finite loss can still leave NaN/inf weights (a bad last step); never save those over a good last.pt.
    The loss checked is the validation's, or the training loss in an epoch without validation."""
    weights_finite = (
        torch.stack([torch.isfinite(t).all() for t in unwrap(s.model).state_dict().values() if t.is_floating_point()])
        .all()
        .item()
    )  # one host sync for the whole model
    loss = row["val_loss"] if row["val_loss"] is not None else row["train_loss"]
    if not math.isfinite(loss) or not weights_finite:
        raise VocsegError(
            f"non-finite weights or loss ({loss}) after epoch {epoch + 1}; stopping without "
            f"saving, so {s.run.last_path} keeps the last good epoch. Try a lower --lr or --amp none."
        )


def save_epoch(s: Session, epoch: int, row: dict[str, Any], val: Evaluation | None, improved: bool) -> None:
    """Checkpoints (best.pt when improved, then last.pt) and history.csv when due (checkpoint_due), then
    curves.png when due (curves_due): written on the background thread from snapshots while the next epoch
    trains, so the GPU does not wait for them; TensorBoard and the log line."""
    jobs = []
    if improved or checkpoint_due(s, epoch):
        jobs.append(checkpoint_job(s, epoch, improved))
    else:
        s.unsaved_epoch = epoch
    if curves_due(s, epoch):
        jobs.append(functools.partial(draw_curves, s.run, detached_copy(s.history), s.cfg.model))
        s.curves_plotted_at = lr_schedule.clock()
    if jobs:
        s.saver.submit(run_in_order, jobs)
    if s.writer is not None:
        metrics = val.metrics if val is not None else None
        log_epoch(s.writer, row, metrics, unwrap(s.model), s.data.val, s.device, s.amp_dtype, epoch + 1)
    s.log(
        f"epoch {epoch + 1}/{s.steps.epochs_label()}  train {row['train_loss']:.4f}  {_val_note(row)}  "
        f"lr {row['lr']:.2e}  {row['seconds']:.1f}s" + _memory_note(s.device) + ("  *" if improved else "")
    )


def write_checkpoints(s: Session, epoch: int, improved: bool) -> None:
    """Snapshot the run's state after ``epoch`` and write it (write_epoch_files) on the background thread."""
    s.saver.submit(checkpoint_job(s, epoch, improved))


def checkpoint_job(s: Session, epoch: int, improved: bool) -> Callable[[], None]:
    """The run's state after ``epoch``, snapshot now, and the job that writes it (write_epoch_files)."""
    state = {
        **checkpoint_metadata(s.cfg, s.data.class_names, s.data.mean, s.data.std, s.weight),
        "model": unwrap(s.eval_model()).state_dict(),
        "epoch": epoch + 1,
        "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict(),
        "step_schedule": s.steps.state_dict(),
        "early_stopping": s.stopper.state_dict(),
        "history": s.history,
        "rng": capture_rng_state(),
    }
    if s.ema is not None:
        state.update(train_model=unwrap(s.model).state_dict(), ema=s.ema.state_dict())
    s.checkpointed_at, s.unsaved_epoch = lr_schedule.clock(), None
    return functools.partial(write_epoch_files, s.run, detached_copy(state), improved)


def draw_curves(run: RunDir, history: list[dict[str, Any]], title: str) -> None:
    with run.writing(run.curves_path):
        plot_curves(history, run.curves_path, title=title)


def run_in_order(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()


def write_epoch_files(run: RunDir, state: dict[str, Any], improved: bool) -> None:
    """best.pt, last.pt, then history.csv: history.csv never lists an epoch last.pt does not hold."""
    run.save_epoch(state, improved, TRAINING_STATE_KEYS)
    run.write_history(state["history"])


def is_last_epoch(s: Session, epoch: int) -> bool:
    return s.stopped_early or s.steps.finished or epoch + 1 >= s.steps.epochs


def interval_due(last: bool, done_at: float | None, now: float, every_s: float) -> bool:
    """After the last epoch, the first time, and otherwise once ``every_s`` seconds have passed since ``done_at``."""
    return last or done_at is None or now - done_at >= every_s


def _due(s: Session, epoch: int, done_at: float | None, every_s: float) -> bool:
    return interval_due(is_last_epoch(s, epoch), done_at, lr_schedule.clock(), every_s)


def curves_due(s: Session, epoch: int) -> bool:
    """Redraw curves.png at most every CURVES_EVERY_S seconds: short epochs should spend their time on steps
    (docs/benchmarks.md, "Where a 15-minute budget goes")."""
    return _due(s, epoch, s.curves_plotted_at, CURVES_EVERY_S)


def checkpoint_due(s: Session, epoch: int) -> bool:
    """Write last.pt at most every CHECKPOINT_EVERY_S seconds (docs/benchmarks.md, "Checkpoints on short
    epochs")."""
    return _due(s, epoch, s.checkpointed_at, CHECKPOINT_EVERY_S)


def _val_note(row: dict[str, Any]) -> str:
    if row["val_loss"] is None:
        return "(no validation this epoch: val_every)"
    return f"val {row['val_loss']:.4f}  mIoU {row['val_miou'] or 0:.4f}  acc {row['val_pixel_accuracy'] or 0:.4f}"


def _memory_note(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f"  peak mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"


def final_evaluation(s: Session, progress: bool) -> dict[str, Any]:
    """Reload best.pt and score it on the test split (val when there is none), with the config's test-time
    augmentation; write metrics.json."""
    barrier()  # every rank waits until rank 0 has written the last best.pt
    unwrap(s.eval_model()).load_state_dict(s.run.load_best(map_location=s.device)["model"])
    final_set = s.data.test if s.data.test is not None else s.data.val
    ev = score(s, final_set, progress, "final eval", tta=s.cfg.tta)
    history = s.history
    metrics = {
        **ev.metrics,
        "split": s.data.ids.test_name or s.data.ids.val_name,
        "num_images": len(final_set),
        "tta": s.cfg.tta,
        "tta_scales": multiscale_views(s.cfg.tta, s.cfg.tta_scales),
        "best_epoch": s.stopper.best_epoch,
        "epochs_run": len(history),
        "stopped_early": s.stopped_early,
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])) if history else None,
        "parameters": count_parameters(unwrap(s.model)),
        "confusion_matrix": ev.confusion.matrix.cpu().tolist(),
        **s.steps.summary(),
    }
    if s.main:
        s.run.write_per_image(list(final_set.ids), ev.intersection.numpy(), ev.union.numpy(), final_set.mask_digests())
        s.run.write_metrics(metrics)  # last: its presence marks the run finished
    return metrics


def open_tensorboard(log_dir: Path):
    """A TensorBoard writer (the optional ``tensorboard`` extra)."""
    require("tensorboard", "tensorboard", "tensorboard: true")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))
