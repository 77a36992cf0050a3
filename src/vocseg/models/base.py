"""The base class every vocseg model shares: any input size in, logits of the same size out.

A subclass sets ``stride`` (the factor its encoder downsamples by) and implements
:meth:`SegmentationModel.forward_padded` for inputs whose height and width are multiples of it; the
base class pads the input at the bottom and right, calls it, and crops the logits back. Padding after
the image keeps output pixel (i, j) aligned with input pixel (i, j), so the crop is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import crop_to, pad_to_multiple


class SegmentationModel(nn.Module):
    """``(B, 3, H, W)`` float images -> ``(B, num_classes, H, W)`` logits, for any ``H`` and ``W``."""

    stride: int = 1  # H and W are padded to multiples of this before forward_padded
    # (mean, std) the model's pretrained weights expect, or None: normalise with the dataset's statistics.
    input_normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    aux_stride: int = 1  # pixels per cell of the auxiliary logits' grid (models with an aux head)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits at the input's size; a model with an auxiliary head returns ``{"out", "aux"}`` while
        training, the aux logits on a grid of ``aux_stride`` pixels of the padded input (not cropped)."""
        h, w = x.shape[-2:]
        out = self.forward_padded(self.pad_input(x))
        if isinstance(out, dict):
            return {**out, "out": crop_to(out["out"], h, w)}
        return crop_to(out, h, w)

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x`` so :meth:`forward_padded` accepts it (override for models with extra needs)."""
        return pad_to_multiple(x, self.stride)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        raise NotImplementedError
