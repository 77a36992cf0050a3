"""One evaluation pass over a split: the loss and one confusion matrix over every pixel, per-image counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..losses import weighted_ce_sums
from ..metrics import ConfusionMatrix, counts_from_confusion, per_image_confusion
from ..runtime.device import to_device_input
from ..runtime.distributed import all_reduce_sum
from .inference import predict_logits


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
    :func:`vocseg.evaluation.inference.predict_logits` (the function ``predict`` and the report use too), with
    test-time augmentation ``tta`` (at ``tta_scales`` for multiscale) and sliding-window inference
    ``slide=(crop, stride)`` when asked.
    ``on_predictions(indices, preds)`` sees every batch's argmax with the images' dataset indices (the
    masks ``evaluate --save-dir`` writes come from this one pass).
    """
    model.eval()
    cm = ConfusionMatrix(num_classes, class_names=class_names, device=device)
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # weighted CE, weights, plain CE, pixels
    n = len(loader.dataset)
    inter = torch.zeros(n, num_classes, dtype=torch.int64, device=device)
    union = torch.zeros(n, num_classes, dtype=torch.int64, device=device)
    order = torch.as_tensor([i for batch in loader.batch_sampler for i in batch], dtype=torch.int64, device=device)
    seen = 0
    for images, masks in tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True):
        images = to_device_input(images, device, channels_last)
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
