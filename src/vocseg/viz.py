"""Figures: loss curves (the paper's Figures 2-8), colour masks and overlays (Figures 9-11)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .data.classes import voc_colormap  # noqa: E402

_CMAP = np.array(voc_colormap(256), dtype=np.uint8)


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Train and val loss by epoch (left axis) and val mIoU (right axis)."""
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "s-", label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_miou"] or 0.0 for r in history], "^--", color="tab:green", label="val mIoU")
    ax2.set_ylabel("val mIoU")
    ax2.set_ylim(0, 1)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class indices (H, W) -> VOC colours (H, W, 3) uint8; background is black, void is cream."""
    return _CMAP[np.asarray(mask, dtype=np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image where a class other than background is predicted."""
    colors = colorize(mask).astype(np.float32)
    out = image.astype(np.float32).copy()
    fg = (mask > 0) & (mask != 255)
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    return out.clip(0, 255).astype(np.uint8)
