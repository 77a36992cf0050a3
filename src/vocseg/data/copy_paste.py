"""Copy-paste augmentation between the crops of a training batch, after Ghiasi et al., "Simple Copy-Paste
is a Strong Data Augmentation Method for Instance Segmentation" (CVPR 2021), with semantic labels: a crop
receives the object pixels of another crop of its batch, image and labels together, so a small training
set shows its objects on more backgrounds and next to more others. strong_cpu.yaml uses it as its
regulariser (``copy_paste: 0.5``); what it gave there, and at which learning rate it did not pay, is in
docs/results.md, "15-minute budgets on 2 CPU cores".

Only object pixels move (labels 1 .. 254). Background stays, and so does void (255): a crop's padding and
VOC's boundary band are not pasted, so nothing is drawn over the receiving crop that its labels would not
describe. It runs in the loader's collate step, after each sample's own transforms, and draws from torch's
generator like they do, so a seeded run (and a resumed one) sees the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import VocsegError
from .classes import IGNORE_INDEX
from .transforms import collate_pad


def copy_paste(images: Tensor, masks: Tensor, prob: float) -> tuple[Tensor, Tensor]:
    """Paste, with probability ``prob`` per crop, the objects of another crop of the batch (picked at
    random) onto it. ``images (B,C,H,W)`` and ``masks (B,H,W)`` of equal-size crops; returns new tensors."""
    b = images.shape[0]
    if b < 2 or prob <= 0:
        return images, masks
    receives = torch.rand(b) < prob
    donors = (torch.arange(b) + torch.randint(1, b, (b,))) % b  # any crop but itself
    out_images, out_masks = images.clone(), masks.clone()  # donors are read from the batch as it came
    for i in torch.nonzero(receives).flatten().tolist():
        donor = int(donors[i])
        objects = (masks[donor] != 0) & (masks[donor] != IGNORE_INDEX)
        out_masks[i][objects] = masks[donor][objects]
        out_images[i][:, objects] = images[donor][:, objects]
    return out_images, out_masks


class CopyPasteCollate:
    """:func:`collate_pad` followed by :func:`copy_paste` (a class, so loader workers can pickle it)."""

    def __init__(self, prob: float) -> None:
        if not 0.0 <= prob <= 1.0:
            raise VocsegError(f"copy_paste is a probability in [0, 1], got {prob!r}")
        self.prob = prob

    def __call__(self, batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        if len({img.shape for img, _ in batch}) > 1:
            raise VocsegError(
                "copy_paste needs training crops of one size (set image_size); this batch has sizes "
                f"{sorted({tuple(img.shape[-2:]) for img, _ in batch})}"
            )
        images, masks = collate_pad(batch)
        return copy_paste(images, masks, self.prob)
