"""Evaluate a checkpoint on a split: loss and confusion-matrix metrics at each image's native resolution."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .config import Config, config_from_dict
from .data.builder import resolve_data_root
from .data.transforms import SegmentationPresetEval
from .data.voc import VOCSegmentation
from .engine import evaluate, resolve_amp, resolve_device
from .train import build_model, eval_loader


def _model_from_checkpoint(ckpt: dict[str, Any], source: str) -> tuple[nn.Module, Config]:
    cfg = config_from_dict(ckpt["config"], source)
    model = build_model(cfg, for_loading=True)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns ``(model, checkpoint)``."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model, _ = _model_from_checkpoint(ckpt, str(checkpoint))
    return model.to(device), ckpt


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    split: str = "val",
    device: str = "auto",
    amp: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model, cfg = _model_from_checkpoint(ckpt, str(checkpoint))
    model = model.to(dev)
    root = resolve_data_root(data_root if data_root is not None else cfg.data_root)
    norm = ckpt["normalization"]
    ds = VOCSegmentation(root, split, SegmentationPresetEval(norm["mean"], norm["std"]), num_classes=cfg.num_classes)
    ds.check()
    # The loss is reported with the training criterion (class-weighted if training was), as during training.
    weight = ckpt.get("class_weight")
    weight = weight.to(dev) if weight is not None else None
    if batch_size:
        cfg.eval_batch_size = batch_size
    if num_workers is not None:
        cfg.num_workers = num_workers
    results, cm = evaluate(
        model, eval_loader(ds, cfg, dev), cfg.num_classes, ckpt["class_names"], weight, dev,
        resolve_amp(amp or cfg.amp, dev), progress, f"eval {split}",
    )
    results.update(split=split, num_images=len(ds), checkpoint=str(checkpoint), model=ckpt["model_name"])
    return results
