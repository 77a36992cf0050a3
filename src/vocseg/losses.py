"""Class weights for the cross-entropy loss and the loss itself."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data.classes import IGNORE_INDEX


def class_weights(counts: list[int] | np.ndarray, scheme: str) -> torch.Tensor | None:
    """Per-class loss weights from training-split pixel counts.

    - ``paper``: eq. (2), w_c = 1 - n_c / sum(n). On VOC this is ~0.3 for background and ~0.97-0.99 for
      every other class: it only down-weights background.
    - ``median_frequency``: w_c = median(f) / f_c (Eigen & Fergus), f over classes that occur.
    - ``inverse_sqrt``: w_c proportional to 1 / sqrt(f_c), scaled to mean 1 over classes that occur.
    Classes absent from the split never appear as a target, so their weight never counts: ``paper`` gives them
    1 (as eq. (2) does), the other two schemes 0.
    """
    if scheme == "none":
        return None
    n = np.asarray(counts, dtype=np.float64)
    freq = n / max(n.sum(), 1.0)
    present = n > 0
    w = np.zeros_like(freq)
    if scheme == "paper":
        w = 1.0 - freq
    elif scheme == "median_frequency":
        w[present] = np.median(freq[present]) / freq[present]
    elif scheme == "inverse_sqrt":
        w[present] = 1.0 / np.sqrt(freq[present])
        w[present] /= w[present].mean()
    else:
        raise ValueError(f"unknown class weighting {scheme!r}")
    return torch.tensor(w, dtype=torch.float32)


def weighted_ce_sums(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of w_t * CE, sum of w_t)`` over non-void pixels, so a split's loss is the ratio of totals:
    exactly what ``F.cross_entropy(weight=..., reduction='mean')`` gives on the whole split at once."""
    ce = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = target != IGNORE_INDEX
    if weight is None:
        w = valid.float()
    else:
        w = weight[target.clamp(max=weight.numel() - 1)] * valid
    return (ce * w).sum(), w.sum()
