"""Pieces shared by the architectures: Xavier init, padding to a multiple, cropping back."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv and transposed conv (the paper's eq. for W)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom and right of ``x`` so H and W are multiples of ``multiple``.

    The pad sits after the image, so output pixel (i, j) stays aligned with input pixel (i, j)
    and cropping ``[..., :H, :W]`` afterwards restores the input's size.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple))


def crop_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x[..., :h, :w]`` written as a negative pad, which ``torch.export`` traces without shape guards."""
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
