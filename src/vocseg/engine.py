"""One training epoch and one evaluation pass, device- and precision-agnostic."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data.classes import IGNORE_INDEX
from .distributed import all_reduce_sum
from .errors import VocsegError
from .losses import labels_on_grid, region_loss, weighted_ce_sums
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


def _as_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


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
) -> tuple[float, int]:
    """Train for one pass over ``loader``; returns (mean class-weighted cross-entropy over its pixels,
    steps taken). A region loss (``loss_kind``) is trained on but not part of that mean.

    ``after_step`` runs after every optimizer step (a per-step LR schedule, a time budget); returning
    True ends the epoch early. A non-finite loss stops training before the optimizer step can spread
    it into the weights."""
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=device, dtype=torch.float64)
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", leave=False, disable=not progress, dynamic_ncols=True)
    steps = 0
    for step, (images, masks) in enumerate(bar):
        images = _as_input(images, device, channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            output = model(images)
        loss, total, weight = training_loss(
            output, masks, class_weight, aux_weight, loss_kind, label_smoothing, aux_stride
        )
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
        steps += 1
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if after_step is not None and after_step():
            break
    all_reduce_sum(loss_sum)
    all_reduce_sum(weight_sum)
    return float(loss_sum / weight_sum.clamp(min=1e-12)), steps


def per_image_confusion(preds: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``B x C x C`` confusion matrices ``[image, true, pred]`` from one ``bincount``; void (255) ignored."""
    b, n = preds.shape[0], num_classes
    valid = masks != IGNORE_INDEX
    image = torch.arange(b, device=preds.device).view(b, *([1] * (preds.dim() - 1)))
    index = (image * n + masks.long()) * n + preds.long().clamp(max=n - 1)
    index = torch.where(valid, index, b * n * n)  # ignored pixels land in a dropped extra bin
    return torch.bincount(index.reshape(-1), minlength=b * n * n + 1)[: b * n * n].view(b, n, n)


def counts_from_confusion(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-class ``(intersection, union)`` of ``B x C x C`` confusion matrices."""
    tp = conf.diagonal(dim1=1, dim2=2)
    return tp, conf.sum(2) + conf.sum(1) - tp


def per_image_counts(preds: torch.Tensor, masks: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-class ``(intersection, union)`` (each ``B x C``), void (255) pixels ignored."""
    return counts_from_confusion(per_image_confusion(preds, masks, num_classes))


@dataclass
class Evaluation:
    """One pass over a split: metrics, the confusion matrix, and per-image intersections/unions (N x C,
    in dataset order) for per-image IoU and paired bootstrap comparisons."""

    metrics: dict[str, Any]
    confusion: ConfusionMatrix
    intersection: torch.Tensor
    union: torch.Tensor


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    num_classes: int,
    class_names: list[str] | None,
    class_weight: torch.Tensor | None,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "eval",
    *,
    channels_last: bool = False,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    on_predictions: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> Evaluation:
    """Loss and confusion-matrix metrics over the whole split (one matrix, not an average of batches).

    ``loss`` uses the training criterion (class-weighted when training is, as the paper reports it);
    ``ce_loss`` is the plain cross-entropy, comparable across experiments. Logits come from
    :func:`vocseg.inference.predict_logits` (the function ``predict`` and the report use too), with
    test-time augmentation ``tta`` (at ``tta_scales`` for multiscale) and sliding-window inference
    ``slide=(crop, stride)`` when asked.
    ``on_predictions(indices, preds)`` sees every batch's argmax with the images' dataset indices (the
    masks ``evaluate --save-dir`` writes come from this one pass).
    """
    from .inference import predict_logits

    model.eval()
    cm = ConfusionMatrix(num_classes, class_names=class_names, device=device)
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # weighted CE, weights, plain CE, pixels
    n = len(loader.dataset)
    inter = torch.zeros(n, num_classes, dtype=torch.int64, device=device)
    union = torch.zeros(n, num_classes, dtype=torch.int64, device=device)
    order = torch.as_tensor(list(loader.sampler), dtype=torch.int64, device=device)
    seen = 0
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = _as_input(images, device, channels_last)
        masks = masks.to(device, non_blocking=True)
        logits = predict_logits(model, images, tta=tta, scales=tta_scales, slide=slide, amp_dtype=amp_dtype)
        w_total, w_sum = weighted_ce_sums(logits, masks, class_weight)
        ce_total, px = weighted_ce_sums(logits, masks, None) if class_weight is not None else (w_total, w_sum)
        sums += torch.stack([w_total, w_sum, ce_total, px]).double()
        preds = logits.argmax(1)
        conf = per_image_confusion(preds, masks, num_classes)  # one bincount for both (masks checked by the reader)
        cm.add(conf.sum(0))
        idx = order[seen : seen + len(preds)]
        inter[idx], union[idx] = counts_from_confusion(conf)
        if on_predictions is not None:
            on_predictions(idx, preds)
        seen += len(preds)
    for t in (sums, inter, union):
        all_reduce_sum(t)  # each rank filled its own images; the rest are zeros
    cm.all_reduce()
    results = cm.compute()
    results["loss"] = float(sums[0] / sums[1].clamp(min=1e-12))
    results["ce_loss"] = float(sums[2] / sums[3].clamp(min=1e-12))
    return Evaluation(results, cm, inter.cpu(), union.cpu())
