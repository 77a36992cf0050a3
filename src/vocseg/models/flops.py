"""FLOPs of a model: one eval forward (``vocseg models``' GFLOPs column) and one training step per image.

Counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions, transposed convolutions and matrix
products, forward and backward; a multiply-add is 2 FLOPs; biases, norms, activations, pooling,
upsampling, the loss and the optimizer step are not counted (they are memory-bound and small next to the
convolutions). Counting runs on the ``meta`` device: shapes only, no arithmetic, so even the 386-GFLOP
U-Net at 512 x 512 counts in about a second on a CPU.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from .registry import create_model

aten = torch.ops.aten


def _conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
    **kwargs,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each gradient asked for (input, weight) costs what the
    forward convolution did; the bias gradient is a sum, not counted.

    Replaces torch's own formula (torch 2.14), whose weight gradient ignores ``groups`` and so counts a
    depthwise convolution's weight gradient ``groups`` times over (the MobileNetV3 models' backward then
    came out several times their forward; pytorch/pytorch#183405 divides by groups). Equal to torch's for
    groups=1."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` with the group-aware convolution backward formula."""
    return FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: _conv_backward_flop})


def count_gflops(model: nn.Module, image_size: int = 512) -> float:
    """GFLOPs (1e9 floating-point operations, a multiply-add counted as 2) of one (1, 3, S, S) forward.

    Eval mode under ``torch.no_grad``, so auxiliary training heads are skipped. The input lives on the
    model's device, so a model built on the ``meta`` device is counted without computing anything.
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad(), flop_counter() as counter:
        model(x)
    return counter.get_total_flops() / 1e9


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of one training image: the training-mode forward (auxiliary heads included) and the
    backward of its loss (input and weight gradients of every convolution and matrix product)."""

    forward: float
    backward: float

    @property
    def total(self) -> float:
        """Forward + backward: the numerator of model FLOPs utilisation (MFU)."""
        return self.forward + self.backward

    @property
    def backward_ratio(self) -> float:
        """Backward / forward: just under 2, since the first layer needs no gradient of the input image."""
        return self.backward / self.forward


def training_flops(
    model_or_name: nn.Module | str,
    image_size: int = 512,
    batch: int = 2,
    num_classes: int = 21,
    **model_kwargs: Any,
) -> TrainingFlops:
    """FLOPs per image of one training step on (``batch``, 3, S, S) crops: forward in training mode and
    the backward of a cross-entropy loss over every output (the main logits and any auxiliary logits).

    ``model_or_name``: a registered name (built offline with ``num_classes`` and ``model_kwargs``, on the
    ``meta`` device) or a module, which is counted on a ``meta`` copy and left untouched. ``batch`` is 2,
    not 1, because training-mode BatchNorm refuses one value per channel (the ASPP image-pooling branch);
    the count per image does not depend on it.
    """
    if isinstance(model_or_name, str):
        with torch.device("meta"):
            model = create_model(model_or_name, num_classes=num_classes, offline=True, **model_kwargs)
    else:
        model = copy.deepcopy(model_or_name).to("meta")
    model.train()
    x = torch.zeros(batch, 3, image_size, image_size, device="meta")
    with flop_counter() as counter:
        out = model(x)
    forward = counter.get_total_flops()
    outputs = list(out.values()) if isinstance(out, dict) else [out]
    loss = sum(
        F.cross_entropy(o, torch.zeros(o.shape[:1] + o.shape[2:], dtype=torch.long, device="meta")) for o in outputs
    )
    with flop_counter() as counter:
        loss.backward()
    return TrainingFlops(forward / batch, counter.get_total_flops() / batch)
