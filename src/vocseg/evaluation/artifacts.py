"""What ``vocseg evaluate --save-dir DIR`` writes beside the metrics, to see where a model fails:

    DIR/masks/<id>.png          every predicted mask, a palette PNG in VOC's own format
    DIR/best/<rank>_<id>.png    image | ground truth | prediction | errors, for the best images by IoU
    DIR/worst/<rank>_<id>.png   the same for the worst images
    DIR/per_class_iou.png       per-class IoU bar chart
    DIR/confusion.png           row-normalised confusion matrix
    DIR/per_image.csv           per-image mIoU and pixel accuracy, worst first
    DIR/metrics.json            the metrics printed by the command

Per-image IoU is the mean over the classes present in the image's truth or prediction, from the same
per-image intersections and unions the evaluation accumulated, and the masks are that evaluation's own
predictions (one inference pass in all).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.classes import voc_palette
from ..data.voc import VOCSegmentation
from ..errors import VocsegError
from ..plots import confusion_figure, error_panel_figure, per_class_iou_figure
from ..rundir import RunDir
from ..runtime.files import output_dir
from .evaluator import Evaluation

PANELS = 5  # best and worst images drawn


def per_image_iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean IoU of each image over its classes with a non-empty union (NaN for an image with none)."""
    present = union > 0
    iou = np.divide(intersection, union, out=np.zeros(union.shape, np.float64), where=present)
    counts = present.sum(1)
    return np.divide(iou.sum(1), counts, out=np.full(len(counts), np.nan), where=counts > 0)


class MaskWriter:
    """Receives the evaluation's predictions (``evaluator.evaluate(on_predictions=...)``) and saves each as a
    palette PNG in ``save_dir/masks``: the masks come from the scoring pass itself, not a second one. The
    evaluation must run one image at a time, so that every prediction is at its image's native size."""

    def __init__(self, save_dir: Path, ds: VOCSegmentation) -> None:
        self.folder, self.ids, self.palette = save_dir / "masks", ds.ids, voc_palette()

    def __call__(self, indices: torch.Tensor, preds: torch.Tensor) -> None:
        for i, pred in zip(indices.tolist(), preds.to(torch.uint8).cpu().numpy()):
            img = Image.fromarray(pred, mode="P")
            img.putpalette(self.palette)
            img.save(self.path(i))

    def path(self, index: int) -> Path:
        return self.folder / f"{self.ids[index]}.png"

    def read(self, index: int) -> np.ndarray:
        with Image.open(self.path(index)) as img:
            return np.asarray(img)


def write_evaluation_artifacts(
    save_dir: Path, masks: MaskWriter, ds: VOCSegmentation, ev: Evaluation, ckpt: dict[str, Any]
) -> None:
    """Write everything listed in the module docstring but the masks (``masks`` wrote them during ``ev``)."""
    names = list(ckpt["class_names"])
    ious = per_image_iou(ev.intersection.numpy(), ev.union.numpy())
    order = [i for i in np.argsort(ious) if not np.isnan(ious[i])]  # worst first
    worst, best = order[:PANELS], order[::-1][:PANELS]
    preds = {int(i): masks.read(int(i)) for i in {*worst, *best}}  # PNGs are lossless: no second forward
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
    (save_dir / RunDir.METRICS).write_text(json.dumps(ev.metrics, indent=2))


def prepare_save_dir(save_dir: str | Path) -> Path:
    """Create ``save_dir`` and its sub-folders, or stop with one line naming it: it must be new or empty
    (nothing there is overwritten)."""
    save_dir = Path(save_dir).expanduser()
    if save_dir.is_dir() and any(save_dir.iterdir()):
        raise VocsegError(f"--save-dir {save_dir} is not empty; choose a new folder (nothing there is overwritten)")
    output_dir(save_dir, "--save-dir folder")
    for sub in ("masks", "best", "worst"):
        output_dir(save_dir / sub, "--save-dir folder")
    return save_dir


def _write_panels(folder: Path, indices, ds, preds, ious, names) -> None:
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
