"""What a run writes to TensorBoard each epoch (``--tensorboard``): the history row's scalars, per-class
validation IoU, and overlays of a fixed set of validation images."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.voc import VOCSegmentation
from ..evaluation.inference import predict_logits
from ..plots import overlay

SAMPLE_IMAGES = 4  # the first validation images, the same ones every epoch


def log_epoch(
    writer: Any,
    row: dict[str, Any],
    metrics: dict[str, Any] | None,
    model: nn.Module,
    val: VOCSegmentation,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    step: int,
) -> None:
    """Scalars under their history names, ``val_iou/<class>`` and ``val_samples`` overlays; an epoch without
    validation (``metrics`` None) logs its training scalars only."""
    for key, value in row.items():
        if key != "epoch" and (value is not None or metrics is not None):
            writer.add_scalar(key, float("nan") if value is None else value, step)
    if metrics is None:
        writer.flush()
        return
    for name, iou in metrics.get("per_class_iou", {}).items():
        if iou is not None:
            writer.add_scalar(f"val_iou/{name}", iou, step)
    writer.add_images("val_samples", sample_overlays(model, val, device, amp_dtype), step, dataformats="NHWC")
    writer.flush()


@torch.inference_mode()
def sample_overlays(
    model: nn.Module, ds: VOCSegmentation, device: torch.device, amp_dtype: torch.dtype | None
) -> np.ndarray:
    """``N x H x W x 3`` uint8: image | prediction overlay for the first validation images, padded to one size."""
    was_training = model.training
    model.eval()
    panels = []
    for i in range(min(SAMPLE_IMAGES, len(ds))):
        image, _ = ds.load(i)
        x, _ = ds[i]
        logits = predict_logits(model, x[None].to(device), amp_dtype=amp_dtype)
        pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        panels.append(np.concatenate([np.asarray(image), overlay(np.asarray(image), pred)], axis=1))
    model.train(was_training)
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    return np.stack([np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0))) for p in panels])
