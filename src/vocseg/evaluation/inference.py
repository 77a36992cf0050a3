"""Images in, per-pixel class scores out: a plain forward, flip or multi-scale test-time augmentation
(TTA), and sliding-window inference for images larger than the training crop.

Every path returns float32 scores of shape ``(B, C, H, W)`` at the input's own size, whose argmax is the
prediction and whose softmax is the predicted class distribution:

* ``tta="none"``: the model's logits (averaged over windows with ``slide``), unchanged.
* ``tta="flip"`` / ``"multiscale"``: ``log`` of the mean of the views' softmax probabilities. Averaging
  probabilities rather than logits follows mmsegmentation's ``SegTTAModel``: each view votes with a
  distribution, so one over-confident view cannot dominate by the size of its logits. Returning their
  log keeps the result a valid logit tensor: softmax gives the averaged probabilities back exactly, and
  cross-entropy on it is the ensemble's negative log-likelihood.

Sliding windows follow mmsegmentation's ``slide_inference``: windows of ``crop x crop`` every
``stride`` pixels, the last one shifted back to end at the border, logits summed and divided by the
number of windows covering each pixel. An image smaller than the crop (in a direction) is covered by
one window of its own size in that direction rather than padded: every vocseg model accepts any size,
and padding would change the logits near the border, so a crop bigger than the image is exactly a plain
forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import CHOICES
from ..errors import VocsegError
from ..runtime.device import autocast

# mmsegmentation's standard multi-scale test ratios (its configs' ``img_ratios``).
MULTISCALE_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

Model = Callable[[Tensor], Tensor]


def check_tta(tta: str) -> None:
    """``tta`` must be one of the config field's choices."""
    if tta not in CHOICES["tta"]:
        raise VocsegError(f"unknown tta {tta!r}; valid choices: {', '.join(CHOICES['tta'])}")


def check_tta_scales(tta: str, tta_scales: Sequence[float] | None) -> None:
    """Explicit ``tta_scales`` only mean something to ``tta="multiscale"``: refuse them with any other."""
    if tta_scales is not None and tta != "multiscale":
        raise VocsegError(f"tta_scales {list(tta_scales)} need tta 'multiscale', got tta {tta!r}")


def multiscale_views(tta: str, scales: Sequence[float] | None) -> list[float] | None:
    """The scales ``tta`` runs at: ``scales`` (None: :data:`MULTISCALE_SCALES`) for multiscale, else None
    (what metrics and results record)."""
    if tta != "multiscale":
        return None
    return [float(s) for s in (MULTISCALE_SCALES if scales is None else scales)]


def tta_cost(tta: str, scales: Sequence[float] | None = None) -> float:
    """Pixels ``tta`` pushes through the model, relative to one plain forward: what a time budget reserves
    for a final evaluation with it (``flip``: 2; ``multiscale``: both flips at every scale, ``2 * sum(s^2)``;
    ``scales`` None: :data:`MULTISCALE_SCALES`)."""
    check_tta(tta)
    if tta == "none":
        return 1.0
    return 2.0 * sum(s**2 for s in multiscale_views(tta, scales) or [1.0])


def predict_logits(
    model: Model,
    images: Tensor,
    *,
    tta: str = "none",
    scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Tensor:
    """Scores ``(B, C, H, W)`` (float32) for normalised images ``(B, 3, H, W)``, under ``inference_mode``.

    ``tta``: ``"none"``, ``"flip"`` (the image and its horizontal mirror) or ``"multiscale"`` (every
    scale in ``scales``, each with its mirror; None: :data:`MULTISCALE_SCALES`). ``slide=(crop, stride)``
    runs each view in windows.
    ``amp_dtype`` runs the model under autocast (scores are still returned as float32). ``model`` is any
    callable mapping images to logits of the same size (an ``nn.Module`` must be in eval mode).
    See the module docstring for how views and windows are averaged."""
    scales = multiscale_views("multiscale", scales)
    _check_args(model, images, tta, scales, slide)
    with torch.inference_mode():
        if tta == "none":
            return _forward(model, images, slide, amp_dtype)
        views = [(1.0, flip) for flip in (False, True)]
        if tta == "multiscale":
            views = [(float(s), flip) for s in scales for flip in (False, True)]
        probs = None
        for scale, flip in views:
            p = _view_logits(model, images, scale, flip, slide, amp_dtype).softmax(dim=1)
            probs = p if probs is None else probs.add_(p)
        probs = probs.div_(len(views))
        # A probability that underflowed to 0 would give -inf: clamp so the loss stays finite.
        return probs.clamp_min_(torch.finfo(probs.dtype).tiny).log_()


def _check_args(model: Model, images: Tensor, tta: str, scales: Sequence[float], slide: tuple[int, int] | None) -> None:
    check_tta(tta)
    if images.ndim != 4 or not images.is_floating_point():
        raise VocsegError(
            f"images must be a float tensor (B, 3, H, W); got {images.dtype} of shape {tuple(images.shape)}"
        )
    if isinstance(model, nn.Module) and model.training:
        # Train-mode BatchNorm would normalise with the batch's own statistics: wrong, batch-dependent masks.
        raise VocsegError("the model is in training mode; call model.eval() before inference")
    if tta == "multiscale" and (len(scales) == 0 or any(not float(s) > 0 for s in scales)):
        raise VocsegError(f"multiscale scales must be a non-empty list of positive numbers, got {list(scales)}")
    if slide is not None:
        check_slide(slide)


def check_slide(slide: Sequence[int]) -> tuple[int, int]:
    """``(crop, stride)`` as ints, with ``1 <= stride <= crop`` (a larger stride would leave pixels unseen)."""
    if len(slide) != 2:
        raise VocsegError(f"slide must be (crop, stride), got {tuple(slide)}")
    crop, stride = (int(v) for v in slide)
    if crop < 1 or not 1 <= stride <= crop:
        raise VocsegError(
            f"slide=(crop={crop}, stride={stride}) is invalid: need crop >= 1 and 1 <= stride <= crop "
            f"(a stride above the crop would leave pixels no window covers)"
        )
    return crop, stride


def _forward(model: Model, images: Tensor, slide: tuple[int, int] | None, amp_dtype: torch.dtype | None) -> Tensor:
    """One view: the whole image at once, or windows when ``slide`` is set; float32 logits."""
    if slide is not None:
        return _slide_forward(model, images, *check_slide(slide), amp_dtype)
    with autocast(images.device, amp_dtype):
        logits = model(images)
    return logits.float()


def _view_logits(
    model: Model,
    images: Tensor,
    scale: float,
    flip: bool,
    slide: tuple[int, int] | None,
    amp_dtype: torch.dtype | None,
) -> Tensor:
    """Logits of one TTA view, mapped back to the input's size and orientation."""
    h, w = images.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = images
    if size != (h, w):
        # Antialias when shrinking, like the training-time RandomScale (torchvision's antialiased resize).
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h)
    if flip:
        x = x.flip(-1)
    logits = _forward(model, x, slide, amp_dtype)
    if flip:
        logits = logits.flip(-1)
    if size != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one side: every ``stride``, the last shifted back to end at
    ``size`` (mmsegmentation's grid); a single start 0 when the side is not longer than ``crop``."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [min(i * stride, max(size - crop, 0)) for i in range(count)]


def _slide_forward(model: Model, images: Tensor, crop: int, stride: int, amp_dtype: torch.dtype | None) -> Tensor:
    """Sum of window logits divided by how many windows cover each pixel."""
    b, _, h, w = images.shape
    total: Tensor | None = None
    count = torch.zeros((1, 1, h, w), dtype=torch.float32, device=images.device)
    for top in window_starts(h, crop, stride):
        for left in window_starts(w, crop, stride):
            window = images[..., top : top + crop, left : left + crop]
            with autocast(images.device, amp_dtype):
                logits = model(window).float()
            if total is None:
                total = torch.zeros((b, logits.shape[1], h, w), dtype=torch.float32, device=images.device)
            total[..., top : top + crop, left : left + crop] += logits
            count[..., top : top + crop, left : left + crop] += 1
    return total / count
