"""Evaluate a checkpoint (or a pretrained registry model) on a split: loss and confusion-matrix metrics
at each image's native resolution, optionally with test-time augmentation and sliding windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

from ..checkpoint import load_model, pretrained_checkpoint
from ..config import Config, config_from_dict
from ..data.builder import resolve_data_root
from ..data.loaders import eval_loader
from ..data.transforms import SegmentationPresetEval
from ..data.voc import VOCSegmentation
from ..runtime.device import resolve_amp, resolve_device
from .artifacts import MaskWriter, prepare_save_dir, write_evaluation_artifacts
from .evaluator import evaluate
from .inference import check_tta_scales, multiscale_views


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
    if save_dir is not None:
        save_dir = prepare_save_dir(save_dir)  # before the model loads: a bad folder costs nothing
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
    masks = MaskWriter(save_dir, ds) if save_dir is not None else None
    ev = evaluate(model, eval_loader(ds, cfg, dev), cfg.num_classes, ckpt["class_names"], weight, dev, amp_dtype,
                  progress, f"eval {split}", tta=tta, tta_scales=scales, slide=slide, on_predictions=masks)  # fmt: skip
    if masks is not None:
        write_evaluation_artifacts(save_dir, masks, ds, ev, ckpt)
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


__all__ = ["evaluate_checkpoint"]
