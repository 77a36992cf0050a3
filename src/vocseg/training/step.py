"""One training epoch: the loss of a batch, and a pass over the loader with an optimizer step per batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import closing
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import VocsegError
from ..losses import labels_on_grid, region_loss, weighted_ce_sums
from ..runtime.device import autocast, to_device_input
from ..runtime.distributed import all_reduce_sum
from ..runtime.prefetch import finished_batches


def training_loss(
    output: torch.Tensor | dict[str, torch.Tensor],
    masks: torch.Tensor,
    class_weight: torch.Tensor | None,
    aux_weight: float,
    loss_kind: str = "ce",
    label_smoothing: float = 0.0,
    aux_stride: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, weighted CE sum, weight sum)`` of one batch. Models with an auxiliary head return
    ``{"out", "aux"}`` in training mode; the aux loss adds ``aux_weight`` times its mean CE, against the
    labels at the centres of its grid's cells when that grid has ``aux_stride`` > 1 pixels per cell.
    ``loss_kind`` ``ce+dice`` or ``ce+lovasz`` adds that region loss of the main output, weight 1.
    ``label_smoothing`` smooths every cross-entropy term (the sums returned are of the smoothed CE)."""
    aux = None
    if isinstance(output, dict):
        output, aux = output["out"], output.get("aux")
    total, weight = weighted_ce_sums(output, masks, class_weight, label_smoothing)
    loss = total / weight.clamp(min=1e-12)
    if loss_kind != "ce":
        loss = loss + region_loss(loss_kind.removeprefix("ce+"), output, masks)
    if aux is not None and aux_weight > 0:
        aux_masks = labels_on_grid(masks, aux_stride, aux.shape[-2:])
        aux_total, aux_w = weighted_ce_sums(aux, aux_masks, class_weight, label_smoothing)
        loss = loss + aux_weight * aux_total / aux_w.clamp(min=1e-12)
    return loss, total, weight


def check_finite(loss_value: float, epoch: int, step: int) -> None:
    """Stop before a non-finite loss's optimizer step can spread it into the weights."""
    if not math.isfinite(loss_value):
        raise VocsegError(
            f"non-finite training loss ({loss_value}) at epoch {epoch + 1}, step {step + 1}; "
            "stopping without saving. Try a lower --lr or --amp none."
        )


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    class_weight: torch.Tensor | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    epoch: int,
    progress: bool = True,
    *,
    aux_weight: float = 0.0,
    loss_kind: str = "ce",
    label_smoothing: float = 0.0,
    aux_stride: int = 1,
    channels_last: bool = False,
    after_step: Callable[[], bool] | None = None,
    prepare: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
    prepare_ahead: bool = False,
) -> tuple[float, int]:
    """Train for one pass over ``loader``; returns (mean class-weighted cross-entropy over its pixels,
    steps taken). A region loss (``loss_kind``) is trained on but not part of that mean.

    ``after_step`` runs after every optimizer step (a per-step LR schedule, a time budget); returning
    True ends the epoch early. A non-finite loss stops training before the optimizer step can spread
    it into the weights. ``prepare`` makes ``(images, masks)`` on the device from each of the loader's batches
    (vocseg.data.device_augment.DeviceAugment, when augmentation runs there); without it the loader's batches
    are ``(images, masks)`` already; ``prepare_ahead`` runs it on a thread of its own, ahead of the steps
    (runtime.prefetch)."""
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=device, dtype=torch.float64)
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    steps = 0
    with closing(finished_batches(loader, prepare, device, prepare_ahead)) as batches:
        desc = f"epoch {epoch + 1} train"
        bar = tqdm(batches, desc, n_batches, leave=False, disable=not progress, dynamic_ncols=True)
        for step, (images, masks) in enumerate(bar):
            images = to_device_input(images, device, channels_last)
            masks = masks.to(device, non_blocking=True)
            with autocast(device, amp_dtype):
                output = model(images)
            loss, total, weight = training_loss(
                output, masks, class_weight, aux_weight, loss_kind, label_smoothing, aux_stride
            )
            loss_value = loss.item()  # one sync per step: cheap next to a segmentation forward/backward
            check_finite(loss_value, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += total.detach().double()
            weight_sum += weight.detach().double()
            steps += 1
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if after_step is not None and after_step():
                break
    all_reduce_sum(loss_sum)
    all_reduce_sum(weight_sum)
    return float(loss_sum / weight_sum.clamp(min=1e-12)), steps
