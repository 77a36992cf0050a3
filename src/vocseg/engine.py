"""One training epoch and one evaluation pass, device- and precision-agnostic."""
from __future__ import annotations

import contextlib
import math
import os
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .distributed import all_reduce_sum
from .errors import VocsegError
from .losses import weighted_ce_sums
from .metrics import ConfusionMatrix


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VocsegError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VocsegError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full fp32)."""
    if amp == "none":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    # auto: bf16 where it is native (CPU autocast, Ampere+ GPUs), else fp16 on CUDA.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
) -> float:
    """Train for one pass over ``loader``; returns the mean (class-weighted) loss over its pixels.
    A non-finite loss stops training before the optimizer step can spread it into the weights."""
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=device, dtype=torch.float64)
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", leave=False, disable=not progress, dynamic_ncols=True)
    for step, (images, masks) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        total, weight = weighted_ce_sums(logits, masks, class_weight)
        loss = total / weight.clamp(min=1e-12)
        loss_value = loss.item()  # one sync per step: cheap next to a segmentation forward/backward
        if not math.isfinite(loss_value):
            raise VocsegError(
                f"non-finite training loss ({loss_value}) at epoch {epoch + 1}, step {step + 1}; "
                "stopping without saving. Try a lower --lr or --amp none."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += total.detach().double()
        weight_sum += weight.detach().double()
        bar.set_postfix(loss=f"{loss_value:.4f}")
    all_reduce_sum(loss_sum)
    all_reduce_sum(weight_sum)
    return float(loss_sum / weight_sum.clamp(min=1e-12))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    class_names: list[str] | None,
    class_weight: torch.Tensor | None,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[dict, ConfusionMatrix]:
    """Loss and confusion-matrix metrics over the whole split (one matrix, not an average of batches).

    ``loss`` uses the training criterion (class-weighted when training is, as the paper reports it);
    ``ce_loss`` is the plain cross-entropy, comparable across experiments.
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, class_names=class_names, device=device)
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # weighted CE, weights, plain CE, pixels
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = images.to(device, non_blocking=True)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(images)
        w_total, w_sum = weighted_ce_sums(logits, masks, class_weight)
        ce_total, n = weighted_ce_sums(logits, masks, None) if class_weight is not None else (w_total, w_sum)
        sums += torch.stack([w_total, w_sum, ce_total, n]).double()
        cm.update(logits.argmax(1), masks, validate=False)  # masks were checked by the reader
    all_reduce_sum(sums)
    cm.all_reduce()
    results = cm.compute()
    results["loss"] = float(sums[0] / sums[1].clamp(min=1e-12))
    results["ce_loss"] = float(sums[2] / sums[3].clamp(min=1e-12))
    return results, cm
