"""The report's example test image: which one (the image with the most object classes), and every
model's prediction of it (from its best checkpoint, through :func:`vocseg.evaluation.inference.predict_logits`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ...checkpoint import load_model
from ...data.classes import IGNORE_INDEX
from ...data.transforms import SegmentationPresetEval
from ...data.voc import VOCSegmentation, load_mask
from ...evaluation.inference import predict_logits
from .data import DataInfo
from .runs import ReportRun

__all__ = ["choose_example", "predict_example"]


def choose_example(info: DataInfo) -> tuple[str | None, list[int]]:
    """The test image with the most object classes (ties: more foreground), and those classes.

    Reads every test mask once: per-image class presence is not in any cache, and this is the only
    per-image scan the report makes."""
    n = len(info.class_names)
    ds = VOCSegmentation(info.voc_root, info.test_split, ids=info.test_ids, num_classes=n)
    best_key, best_id, best_classes = None, None, []
    for i, image_id in enumerate(info.test_ids):
        mask = load_mask(ds.mask_path(i), n)
        counts = np.bincount(mask[mask != IGNORE_INDEX], minlength=n)[:n]
        objects = [int(k) for k in np.nonzero(counts)[0] if k != 0]
        key = (len(objects), float(counts[1:].sum()) / max(float(counts.sum()), 1.0))
        if best_key is None or key > best_key:
            best_key, best_id, best_classes = key, image_id, objects
    return best_id, best_classes


def predict_example(
    runs: Sequence[ReportRun],
    info: DataInfo,
    image_id: str,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The image, its ground truth, and each run's prediction keyed by label (runs without a best
    checkpoint are left out), at native resolution with each checkpoint's own normalisation."""
    n = len(info.class_names)
    image, mask = VOCSegmentation(info.voc_root, info.test_split, ids=[image_id], num_classes=n).load(0)
    preds = {}
    for run in runs:
        if not run.run.best_path.is_file():
            continue
        model, ckpt = load_model(run.run.best_path, device)
        norm = ckpt["normalization"]
        ds = VOCSegmentation(
            info.voc_root,
            info.test_split,
            SegmentationPresetEval(norm["mean"], norm["std"]),
            ids=[image_id],
            num_classes=n,
        )
        x, _ = ds[0]
        with torch.inference_mode():
            logits = predict_logits(model, x[None].to(device))
        preds[run.label] = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
    return image, mask, preds
