"""What ``vocseg evaluate --save-dir DIR`` writes beside the metrics, to see where a model fails:

    DIR/masks/<id>.png          every predicted mask, a palette PNG in VOC's own format
    DIR/best/<rank>_<id>.png    image | ground truth | prediction | errors, for the best images by IoU
    DIR/worst/<rank>_<id>.png   the same for the worst images
    DIR/per_class_iou.png       per-class IoU bar chart
    DIR/confusion.png           row-normalised confusion matrix
    DIR/per_image.csv           per-image mIoU and pixel accuracy, worst first
    DIR/metrics.json            the metrics printed by the command

Per-image IoU is the mean over the classes present in the image's truth or prediction, from the same
per-image intersections and unions the evaluation accumulated (no second scoring pass).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data.classes import voc_palette
from .data.voc import VOCSegmentation
from .engine import Evaluation
from .errors import VocsegError

PANELS = 5  # best and worst images drawn


def per_image_iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean IoU of each image over its classes with a non-empty union (NaN for an image with none)."""
    present = union > 0
    iou = np.divide(intersection, union, out=np.zeros(union.shape, np.float64), where=present)
    counts = present.sum(1)
    return np.divide(iou.sum(1), counts, out=np.full(len(counts), np.nan), where=counts > 0)


def write_evaluation_artifacts(
    save_dir: Path,
    model: nn.Module,
    ds: VOCSegmentation,
    ev: Evaluation,
    ckpt: dict[str, Any],
    device: torch.device,
    *,
    tta: str = "none",
    slide: tuple[int, int] | None = None,
    amp_dtype=None,
) -> None:
    """Write everything listed in the module docstring into ``save_dir`` (created; existing files refused)."""
    from .plots import confusion_figure, per_class_iou_figure

    _prepare(save_dir)
    names = list(ckpt["class_names"])
    ious = per_image_iou(ev.intersection.numpy(), ev.union.numpy())
    order = [i for i in np.argsort(ious) if not np.isnan(ious[i])]  # worst first
    worst, best = order[:PANELS], order[::-1][:PANELS]
    preds = _write_masks(save_dir / "masks", model, ds, device, tta, slide, amp_dtype, keep={*worst, *best})
    _write_panels(save_dir / "worst", worst, ds, preds, ious, names)
    _write_panels(save_dir / "best", best, ds, preds, ious, names)
    _write_per_image_csv(save_dir / "per_image.csv", order, ds, ev, ious)
    per_class_iou_figure(
        {ckpt["model_name"]: ev.metrics["per_class_iou"]},
        save_dir / "per_class_iou.png",
        title=f"{ckpt['model_name']}: per-class IoU on {ds.split}",
    )
    confusion_figure(
        ev.confusion.matrix.cpu().numpy(),
        names,
        save_dir / "confusion.png",
        f"{ckpt['model_name']}: confusion on {ds.split}, row-normalised",
    )
    (save_dir / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))


def _prepare(save_dir: Path) -> None:
    if save_dir.exists() and any(save_dir.iterdir()):
        raise VocsegError(f"--save-dir {save_dir} is not empty; choose a new folder (nothing there is overwritten)")
    try:
        for sub in ("masks", "best", "worst"):
            (save_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VocsegError(f"cannot create {save_dir}: {e.strerror or e}") from None


@torch.inference_mode()
def _write_masks(folder: Path, model, ds, device, tta, slide, amp_dtype, keep: set) -> dict[int, np.ndarray]:
    """Predict every image again (one at a time, native size) and save its palette mask; return the
    predictions of the images in ``keep`` (the panels')."""
    from .inference import predict_logits

    palette = voc_palette()
    preds = {}
    for i in range(len(ds)):
        x, _ = ds[i]
        logits = predict_logits(model, x[None].to(device), tta=tta, slide=slide, amp_dtype=amp_dtype)
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        img = Image.fromarray(pred, mode="P")
        img.putpalette(palette)
        img.save(folder / f"{ds.ids[i]}.png")
        if i in keep:
            preds[i] = pred
    return preds


def _write_panels(folder: Path, indices, ds, preds, ious, names) -> None:
    from .plots import error_panel_figure

    for rank, i in enumerate(indices, 1):
        image, mask = ds.load(int(i))
        error_panel_figure(
            np.asarray(image),
            np.asarray(mask),
            preds[int(i)],
            folder / f"{rank}_{ds.ids[i]}.png",
            title=f"{ds.ids[i]}: mIoU {ious[i]:.3f}",
            class_names=names,
        )


def _write_per_image_csv(path: Path, order, ds, ev: Evaluation, ious) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "miou", "classes_present"])
        for i in order:
            present = int((ev.union[i] > 0).sum())
            w.writerow([ds.ids[i], f"{ious[i]:.6f}", present])
