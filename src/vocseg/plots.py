"""Every figure vocseg draws: loss curves (the paper's Figures 2-8), colour masks and overlays, the
every-model comparison (Figures 9-11), confusion matrices, per-class IoU bars and error panels.

All figures are written to files (matplotlib's Agg backend; no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .data.classes import IGNORE_INDEX, voc_colormap  # noqa: E402

__all__ = [
    "colorize",
    "comparison_figure",
    "confusion_figure",
    "curves_figure",
    "error_map",
    "error_panel_figure",
    "overlay",
    "per_class_iou_figure",
    "plot_curves",
]

_CMAP = np.array(voc_colormap(256), dtype=np.uint8)
ERROR_RGB = (230, 30, 30)  # wrong pixels in error maps
VOID_RGB = (150, 150, 150)  # void pixels in error maps (never scored)


# ----------------------------------------------------------------------------- masks


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class indices (H, W) -> VOC colours (H, W, 3) uint8; background is black, void is cream."""
    return _CMAP[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image where a class other than background is predicted."""
    colors = colorize(mask).astype(np.float32)
    out = image.astype(np.float32).copy()
    fg = (mask > 0) & (mask != IGNORE_INDEX)
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    return out.clip(0, 255).astype(np.uint8)


def error_map(image: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The image greyed and dimmed, wrong pixels red, void pixels (not scored) mid-grey."""
    grey = image.astype(np.float32).mean(-1, keepdims=True)
    out = np.repeat(0.4 * grey + 60.0, 3, axis=-1)  # dimmed so the red errors stand out on any image
    void = mask == IGNORE_INDEX
    out[(pred != mask) & ~void] = ERROR_RGB
    out[void] = VOID_RGB
    return out.clip(0, 255).astype(np.uint8)


def _legend_handles(classes: Sequence[int], names: Sequence[str]) -> list[Patch]:
    cmap = _CMAP / 255.0
    handles = [
        Patch(facecolor=cmap[c], edgecolor="0.5", label=names[c] if c < len(names) else str(c)) for c in sorted(classes)
    ]
    handles.append(Patch(facecolor=cmap[IGNORE_INDEX], edgecolor="0.5", label="void (not scored)"))
    return handles


def _shown_classes(*masks: np.ndarray) -> set[int]:
    return {int(c) for m in masks for c in np.unique(m) if c != IGNORE_INDEX}


def _no_ticks(axes: Any) -> None:
    for ax in np.asarray(axes).flat:
        ax.set_xticks([])
        ax.set_yticks([])


# ----------------------------------------------------------------------------- figures


def curves_figure(history: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Train and val loss by epoch (left axis) and val mIoU (right axis); val points only at the epochs
    that were validated (``val_every``). Built without pyplot's global state, so training can draw it on its
    background writer thread."""
    epochs = [r["epoch"] for r in history]
    validated = [r for r in history if r["val_loss"] is not None]
    val_epochs = [r["epoch"] for r in validated]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax.plot(val_epochs, [r["val_loss"] for r in validated], "s-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax2 = ax.twinx()
    ax2.plot(val_epochs, [r["val_miou"] or 0.0 for r in validated], "^--", color="tab:green", label="val mIoU")
    ax2.set_ylabel("val mIoU")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """:func:`curves_figure` written to ``path``."""
    curves_figure(history, title).savefig(path)


def comparison_figure(
    image: np.ndarray,
    mask: np.ndarray,
    preds: Mapping[str, np.ndarray],
    names: Sequence[str],
    path: str | Path,
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Figures 9-11 in one: the image above the ground truth, then per model its overlay above its mask."""
    labels = labels or {}
    cols = 1 + len(preds)
    h, w = mask.shape
    panel_w = 2.4 * min(max(w / h, 0.75), 1.5)
    fig_w = max(panel_w * cols, 6.0)
    shown = _shown_classes(mask, *preds.values())
    n_items = len(shown) + 1
    ncol = max(2, min(n_items, int(fig_w / 1.35)))
    legend_h = 0.25 * math.ceil(n_items / ncol) + 0.2
    panel_h = panel_w * h / w
    fig_h = 2 * panel_h + 0.6 + 0.45 + legend_h + (0.35 if title else 0.0)
    fig, axes = plt.subplots(2, cols, figsize=(fig_w, fig_h), dpi=90, squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=9)
    axes[1, 0].imshow(colorize(mask))
    axes[1, 0].set_title("ground truth", fontsize=9)
    for j, (name, pred) in enumerate(preds.items(), start=1):
        axes[0, j].imshow(overlay(image, pred))
        axes[0, j].set_title(f"{labels.get(name, name)}\noverlay", fontsize=8)
        axes[1, j].imshow(colorize(pred))
        axes[1, j].set_title("mask", fontsize=8)
    _no_ticks(axes)
    fig.legend(handles=_legend_handles(shown, names), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    top = 1 - (0.35 + 0.45) / fig_h if title else 1 - 0.45 / fig_h
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=legend_h / fig_h + 0.01, top=top, wspace=0.05, hspace=0.6 / panel_h
    )
    fig.savefig(path)
    plt.close(fig)


def error_panel_figure(
    image: np.ndarray,
    mask: np.ndarray,
    pred: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> None:
    """One row: image | ground truth | prediction | errors (wrong pixels red on the dimmed image,
    void grey). ``image`` is (H, W, 3) uint8, ``mask`` and ``pred`` (H, W) class indices."""
    names = list(class_names) if class_names is not None else []
    h, w = mask.shape
    panel_w = 2.6 * min(max(w / h, 0.75), 1.5)
    panel_h = panel_w * h / w
    shown = _shown_classes(mask, pred)
    ncol = max(2, min(len(shown) + 1, 6))
    legend_h = 0.25 * math.ceil((len(shown) + 1) / ncol) + 0.2
    fig_h = panel_h + 0.45 + legend_h + (0.35 if title else 0.0)
    fig, axes = plt.subplots(1, 4, figsize=(4 * panel_w, fig_h), dpi=90, squeeze=False)
    valid = mask != IGNORE_INDEX
    wrong = float(((pred != mask) & valid).sum()) / max(int(valid.sum()), 1)
    panels = [
        (image, "image"),
        (colorize(mask), "ground truth"),
        (colorize(pred), "prediction"),
        (error_map(image, mask, pred), f"errors ({wrong:.1%} of scored pixels)"),
    ]
    for ax, (picture, caption) in zip(axes[0], panels):
        ax.imshow(picture)
        ax.set_title(caption, fontsize=9)
    _no_ticks(axes)
    fig.legend(handles=_legend_handles(shown, names), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    top = 1 - (0.35 + 0.45) / fig_h if title else 1 - 0.45 / fig_h
    fig.subplots_adjust(left=0.01, right=0.99, bottom=legend_h / fig_h + 0.01, top=top, wspace=0.05)
    fig.savefig(path)
    plt.close(fig)


def confusion_figure(
    matrix: Sequence[Sequence[float]] | np.ndarray, names: Sequence[str], path: str | Path, title: str
) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.38 * n + 2.5, 0.38 * n + 1.8), dpi=90)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.1:
                label = f"{norm[i, j]:.2f}"
                label = "1" if label == "1.00" else label.lstrip("0")
                ax.text(
                    j, i, label, ha="center", va="center", fontsize=6, color="white" if norm[i, j] > 0.6 else "black"
                )
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def per_class_iou_figure(
    per_class: Mapping[str, Mapping[str, float | None]], path: str | Path, title: str = ""
) -> None:
    """Grouped horizontal bars: one group per class, one bar per model (``{model: {class: IoU}}``);
    a class without a value (absent from truth and prediction) draws no bar."""
    models = list(per_class)
    classes = list(dict.fromkeys(c for values in per_class.values() for c in values))
    n, k = len(classes), max(len(models), 1)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, 0.22 * n * min(k, 4) + 1.6), dpi=90)
    y = np.arange(n)
    for j, model in enumerate(models):
        values = [per_class[model].get(c) for c in classes]
        ax.barh(y + (j - (k - 1) / 2) * height, [v if v is not None else 0.0 for v in values], height, label=model)
    ax.set_yticks(y)
    ax.set_yticklabels(classes, fontsize=8)
    ax.invert_yaxis()  # first class on top, as in the tables
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=1 + (k > 6))
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
