"""Evaluate a checkpoint (or a pretrained registry model) on a split: loss and confusion-matrix metrics
at each image's native resolution, optionally with test-time augmentation and sliding windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .builders import build_model, eval_loader
from .checkpoint import load_checkpoint
from .config import Config, config_from_dict
from .data.builder import class_names_for, resolve_data_root
from .data.transforms import SegmentationPresetEval
from .data.voc import VOCSegmentation
from .engine import Evaluation, evaluate, resolve_amp, resolve_device
from .evaluation_report import MaskWriter, write_evaluation_artifacts
from .inference import check_tta_scales, multiscale_views


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns ``(model, checkpoint)``."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model = build_model(config_from_dict(ckpt["config"], str(checkpoint)), for_loading=True)
    model.load_state_dict(ckpt["model"])
    return model.eval().to(device), ckpt


def pretrained_checkpoint(model_name: str, weights: str, num_classes: int = 21) -> tuple[nn.Module, dict[str, Any]]:
    """A registry model with pretrained weights (e.g. torchvision's ``COCO_WITH_VOC_LABELS_V1``), described
    like a checkpoint (no optimizer state), so it can be evaluated or used for prediction without training."""
    from .models.torchvision_models import pretrained_model

    model = pretrained_model(model_name, weights, num_classes=num_classes)
    cfg = Config(model=model_name, num_classes=num_classes, model_kwargs={"weights": weights})
    mean, std = model.input_normalization
    meta = {
        "model_name": model_name,
        "model_kwargs": cfg.model_kwargs,
        "num_classes": num_classes,
        "class_names": class_names_for(cfg),
        "normalization": {"mean": list(mean), "std": list(std)},
        "class_weight": None,
        "config": cfg.to_dict(),
        "model": model.state_dict(),
    }
    return model.eval(), meta


def evaluate_checkpoint(
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    split: str = "val",
    device: str = "auto",
    amp: str | None = None,
    batch_size: int | None = None,
    num_workers: int | str | None = None,
    progress: bool = True,
    *,
    model_name: str | None = None,
    weights: str | None = None,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    save_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a checkpoint (or ``model_name`` with pretrained ``weights``) on ``split``; with ``save_dir``
    also write predicted masks, best/worst panels, a per-class IoU chart and the confusion matrix.
    ``tta_scales`` None: the run's own (its config's ``tta_scales``), else mmsegmentation's 0.5-1.75."""
    check_tta_scales(tta, tta_scales)
    dev = resolve_device(device)
    model, ckpt = load_model(checkpoint, dev) if checkpoint is not None else pretrained_checkpoint(model_name, weights)
    model = model.to(dev)
    cfg = config_from_dict(ckpt["config"], str(checkpoint or model_name))
    ds = _split_dataset(ckpt, cfg, data_root, split)
    # The loss is reported with the training criterion (class-weighted if training was), as during training.
    weight = ckpt.get("class_weight")
    weight = weight.to(dev) if weight is not None else None
    # Flips and rescales would move a padded batch's padding into the image: TTA runs image by image, and
    # so does --save-dir (each mask is saved at its image's native size).
    batch = 1 if tta != "none" or slide or save_dir is not None else (batch_size or cfg.eval_batch_size)
    cfg = dc_replace(cfg, eval_batch_size=batch, num_workers=cfg.num_workers if num_workers is None else num_workers)
    amp_dtype = resolve_amp(amp or cfg.amp, dev)
    scales = tta_scales if tta_scales is not None else cfg.tta_scales  # None: the default scales
    masks = MaskWriter(Path(save_dir), ds) if save_dir is not None else None
    ev = evaluate(model, eval_loader(ds, cfg, dev), cfg.num_classes, ckpt["class_names"], weight, dev, amp_dtype,
                  progress, f"eval {split}", tta=tta, tta_scales=scales, slide=slide, on_predictions=masks)  # fmt: skip
    if masks is not None:
        write_evaluation_artifacts(Path(save_dir), masks, ds, ev, ckpt)
    source = str(checkpoint or f"{model_name}:{weights}")
    return dict(ev.metrics, split=split, num_images=len(ds), checkpoint=source, model=ckpt["model_name"], tta=tta,
                tta_scales=multiscale_views(tta, scales), slide=list(slide) if slide else None)  # fmt: skip


def _split_dataset(ckpt: dict[str, Any], cfg: Config, data_root, split: str) -> VOCSegmentation:
    """``split`` of the given root (default: the run's own data) with the checkpoint's normalisation."""
    root = resolve_data_root(data_root if data_root is not None else cfg.data_root)
    norm = ckpt["normalization"]
    ds = VOCSegmentation(root, split, SegmentationPresetEval(norm["mean"], norm["std"]), num_classes=cfg.num_classes)
    ds.check()
    return ds


__all__ = ["Evaluation", "evaluate_checkpoint", "load_model", "pretrained_checkpoint"]
