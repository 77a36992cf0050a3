"""Confusion-matrix segmentation metrics: the four of Long et al. (FCN, 2015) plus per-class values.

With ``n_ij`` the number of pixels of true class ``i`` predicted as class ``j`` and ``t_i = sum_j n_ij``:

* pixel accuracy     ``sum_i n_ii / sum_i t_i``
* mean accuracy      ``mean_i n_ii / t_i``
* mean IoU           ``mean_i n_ii / (t_i + sum_j n_ji - n_ii)``
* frequency-weighted IoU ``(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from .errors import VocsegError


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


class ConfusionMatrix:
    """Accumulates a ``(num_classes, num_classes)`` int64 matrix indexed ``[true, pred]``.

    The matrix lives on the device of the tensors passed to :meth:`update` (it follows them
    there on first use), so accumulation during GPU evaluation needs no host round trip for data.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise VocsegError(f"num_classes must be at least 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise VocsegError(f"ignore_index {ignore_index} collides with a class index (0..{num_classes - 1})")
        if class_names is None:
            class_names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise VocsegError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names: tuple[str, ...] = tuple(class_names)
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @property
    def matrix(self) -> Tensor:
        """The accumulated counts, ``matrix[true, pred]``."""
        return self._matrix

    def reset(self) -> None:
        self._matrix.zero_()

    def update(self, preds: Tensor, target: Tensor, validate: bool = True) -> None:
        """Add a batch of class-index predictions and targets of the same (any) shape.

        Pixels whose target is ``ignore_index`` are skipped, whatever their prediction.
        Raises :class:`VocsegError` for float predictions (logits not arg-maxed), mismatched
        shapes, or class indices outside ``0..num_classes-1``. ``validate=False`` skips the value
        check (and its host sync) for callers whose inputs are valid by construction: arg-maxed
        logits and masks already checked by the dataset reader.
        """
        if preds.is_floating_point() or preds.is_complex() or target.is_floating_point():
            raise VocsegError(
                f"preds and target must be integer class-index tensors, got {preds.dtype} and {target.dtype} "
                "(pass logits.argmax(1), not the logits)"
            )
        if preds.shape != target.shape:
            raise VocsegError(f"preds shape {tuple(preds.shape)} != target shape {tuple(target.shape)}")
        if preds.device != target.device:
            raise VocsegError(f"preds on {preds.device} but target on {target.device}")
        n = self.num_classes
        # int64 before any arithmetic: uint8 masks would overflow in target * n + preds.
        preds = preds.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = target != self.ignore_index
        if validate:
            bad_target = valid & ((target < 0) | (target >= n))
            bad_preds = valid & ((preds < 0) | (preds >= n))
            # One host sync for validation; the detail (which values) is only gathered on failure.
            if bool((bad_target | bad_preds).any()):
                if bool(bad_target.any()):
                    values = torch.unique(target[bad_target]).tolist()[:10]
                    raise VocsegError(
                        f"target has values {values} outside 0..{n - 1} that are not ignore_index "
                        f"({self.ignore_index}); is the mask palette-decoded and the class count right?"
                    )
                values = torch.unique(preds[bad_preds]).tolist()[:10]
                raise VocsegError(f"preds has values {values} outside 0..{n - 1}")
        if self._matrix.device != preds.device:
            self._matrix = self._matrix.to(preds.device)
        # Ignored pixels go to an extra bin that is dropped, instead of boolean-mask indexing,
        # which would need the count of valid pixels on the host.
        index = torch.where(valid, target * n + preds, n * n)
        counts = torch.bincount(index, minlength=n * n + 1)[: n * n]
        self._matrix += counts.view(n, n)

    def add(self, counts: Tensor) -> None:
        """Add an ``(num_classes, num_classes)`` matrix of counts already computed (``[true, pred]``)."""
        if self._matrix.device != counts.device:
            self._matrix = self._matrix.to(counts.device)
        self._matrix += counts

    def all_reduce(self) -> None:
        """Sum the matrix over all ``torch.distributed`` ranks; a no-op outside distributed runs."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._matrix, op=dist.ReduceOp.SUM)

    def compute(self) -> dict[str, Any]:
        """Metrics as plain Python floats (JSON-serialisable); ``None`` where undefined.

        * ``per_class_accuracy[c]`` is ``None`` when class ``c`` has no ground-truth pixels, and
          ``mean_accuracy`` averages only the classes that have some.
        * ``per_class_iou[c]`` is ``None`` when class ``c`` is absent from both prediction and
          truth (union 0), and ``mean_iou`` averages only classes with a non-empty union. A class
          that is predicted but never true therefore counts with IoU 0 (false positives are penalised).
        * ``fw_iou`` weights each IoU by the class's share of true pixels, so absent classes weigh 0.
        * With no pixels accumulated every metric is ``None``.
        """
        m = self._matrix.detach().to("cpu", torch.float64)
        tp = m.diagonal().tolist()
        true = m.sum(1).tolist()
        pred = m.sum(0).tolist()
        total = sum(true)

        per_acc = [_ratio(tp[c], true[c]) for c in range(self.num_classes)]
        per_iou = [_ratio(tp[c], true[c] + pred[c] - tp[c]) for c in range(self.num_classes)]
        fw_iou = None
        if total > 0:
            fw_iou = sum(true[c] / total * iou for c, iou in enumerate(per_iou) if iou is not None)
        return {
            "pixel_accuracy": _ratio(sum(tp), total),
            "mean_accuracy": _mean(per_acc),
            "mean_iou": _mean(per_iou),
            "fw_iou": fw_iou,
            "per_class_iou": dict(zip(self.class_names, per_iou)),
            "per_class_accuracy": dict(zip(self.class_names, per_acc)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": self._matrix.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        matrix = torch.as_tensor(state["matrix"], dtype=torch.int64)
        if state.get("num_classes", matrix.shape[0]) != self.num_classes or matrix.shape != self._matrix.shape:
            raise VocsegError(
                f"confusion matrix state has shape {tuple(matrix.shape)}, expected "
                f"({self.num_classes}, {self.num_classes})"
            )
        self._matrix = matrix.to(self._matrix.device).clone()


# ----------------------------------------------------------------------------- per image


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
