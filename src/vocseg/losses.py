"""Class weights for the cross-entropy loss, the loss itself, and the region losses that can be added to it
(``loss: ce+dice`` or ``ce+lovasz``), which act on the classes' overlap rather than on each pixel."""

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
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of w_t * CE, sum of w_t)`` over non-void pixels, so a split's loss is the ratio of totals:
    exactly what ``F.cross_entropy(weight=..., reduction='mean')`` gives on the whole split at once.

    ``label_smoothing`` ``e`` makes a pixel's target ``1 - e`` on its class plus ``e / C`` on every class
    (torch's definition); the pixel keeps its own class's weight ``w_t``."""
    ce = F.cross_entropy(
        logits.float(), target, ignore_index=IGNORE_INDEX, reduction="none", label_smoothing=label_smoothing
    )
    valid = target != IGNORE_INDEX
    if weight is None:
        w = valid.float()
    else:
        w = weight[target.clamp(max=weight.numel() - 1)] * valid
    return (ce * w).sum(), w.sum()


def labels_on_grid(masks: torch.Tensor, stride: int, size: tuple[int, int]) -> torch.Tensor:
    """The labels at the centres of the cells of a ``size`` grid of ``stride`` x ``stride`` pixels that
    starts at the top-left pixel (an output computed on the input padded at the bottom/right); cells past
    the image are void. nnU-Net's nearest downsampling of deep-supervision targets."""
    if stride == 1 and tuple(masks.shape[-2:]) == tuple(size):
        return masks
    h, w = size
    pad_h, pad_w = h * stride - masks.shape[-2], w * stride - masks.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"a {h}x{w} grid of stride {stride} does not cover labels of size {tuple(masks.shape[-2:])}")
    padded = F.pad(masks, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return padded[..., stride // 2 :: stride, stride // 2 :: stride]


REGION_LOSSES = ("dice", "lovasz")


def region_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``dice`` or ``lovasz`` of a batch, averaged over the classes present in its truth; void ignored."""
    if kind == "dice":
        return soft_dice_loss(logits, target)
    if kind == "lovasz":
        return lovasz_softmax_loss(logits, target)
    raise ValueError(f"unknown region loss {kind!r}; valid: {', '.join(REGION_LOSSES)}")


def _valid_probs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N x C softmax probabilities, N labels)`` of the batch's non-void pixels."""
    c = logits.shape[1]
    probs = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    valid = labels != IGNORE_INDEX
    return probs[valid], labels[valid]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice, 2 sum(p g) / (sum p + sum g), over the classes present in the batch's truth
    (Milletari et al., V-Net, 2016, without squares). On one-hot probabilities it is 1 - mean Dice."""
    probs, labels = _valid_probs(logits, target)
    if labels.numel() == 0:
        return logits.sum() * 0.0
    onehot = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
    inter, total = (probs * onehot).sum(0), probs.sum(0) + onehot.sum(0)
    present = onehot.sum(0) > 0
    return 1.0 - (2 * inter[present] / total[present]).mean()


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018): for each class present in the
    batch's truth, the Lovasz extension of its Jaccard loss at the pixels' errors |g - p|, then the mean.
    On one-hot probabilities it equals 1 - mean IoU over those classes, the metric itself."""
    probs, labels = _valid_probs(logits, target)
    losses = []
    for c in labels.unique():
        fg = (labels == c).to(probs.dtype)
        errors, order = (fg - probs[:, c]).abs().sort(descending=True)
        losses.append(errors @ _lovasz_grad(fg[order]))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss at the errors' sort order (the paper's Alg. 1)."""
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard
