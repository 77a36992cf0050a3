"""Train/eval presets on ``torchvision.transforms.v2``, plus padding collation and denormalisation.

Every geometric step is one v2 call on ``(image, mask)`` together, so the random parameters
(scale, crop window, flips) are drawn once and applied to both: they cannot desynchronise.
Images are resampled bilinearly with antialiasing; masks always with nearest neighbour, so no
label values are ever invented.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode, query_size
from torchvision.transforms.v2 import functional as F

from vocseg.data.classes import IGNORE_INDEX
from vocseg.errors import VocsegError


class _ResizePair(v2.Transform):
    """Resize images bilinearly (antialiased) and masks with nearest neighbour to ``params['size']``."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            # NEAREST_EXACT samples at pixel centres like bilinear does; legacy NEAREST is
            # shifted by half an input pixel when downscaling, misaligning mask and image.
            return F.resize(inpt, params["size"], interpolation=InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(
            F.resize, inpt, params["size"], interpolation=InterpolationMode.BILINEAR, antialias=True
        )


class RandomScale(_ResizePair):
    """Scale both sides by one factor drawn uniformly from ``scale_range`` (aspect ratio kept)."""

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise VocsegError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        lo, hi = self.scale_range
        s = float(torch.empty(()).uniform_(lo, hi))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}


class ResizeShortSide(_ResizePair):
    """Deterministically resize so the shorter side equals ``size`` (aspect ratio kept)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 1:
            raise VocsegError(f"resize must be a positive side length, got {size}")
        self.size = size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        if h <= w:
            return {"size": [self.size, max(1, round(w * self.size / h))]}
        return {"size": [max(1, round(h * self.size / w)), self.size]}


def _as_tv(image: Any, mask: Any) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Wrap plain tensors / PIL images so v2 dispatches the image and mask kernels correctly."""
    if not isinstance(image, tv_tensors.Image):
        image = tv_tensors.Image(image)
    if not isinstance(mask, tv_tensors.Mask):
        mask = tv_tensors.Mask(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:  # PIL masks arrive as (1, H, W)
        mask = tv_tensors.wrap(mask[0], like=mask)
    if image.shape[-2:] != mask.shape[-2:]:
        raise VocsegError(f"image size {tuple(image.shape[-2:])} != mask size {tuple(mask.shape[-2:])}")
    return image, mask


def _finish(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Plain tensors out: float image (3, h, w) and int64 mask (h, w)."""
    mask = mask.as_subclass(Tensor)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    return image.as_subclass(Tensor), mask.to(torch.int64)


def _normalize_steps(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    # The dict dtype leaves the mask alone (uint8 labels must not be rescaled to [0, 1]);
    # Normalize passes masks through by design.
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


class SegmentationPresetTrain:
    """Random scale -> pad/random crop -> horizontal and vertical flips -> float + normalise.

    ``crop_size=None`` skips scale and crop entirely (flips only, native size: the paper's
    setting, with variable-size batches handled by :func:`collate_pad`). ``scale_range=None``
    keeps the crop but skips the rescale. Regions padded to reach ``crop_size`` are 0 in the
    (uint8) image and ``ignore_index`` in the mask.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_size: int | None = 256,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.5,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
    ) -> None:
        steps: list[v2.Transform] = []
        if crop_size is not None:
            if scale_range is not None:
                steps.append(RandomScale(scale_range))
            # pad_if_needed pads both sides by the shortfall, so a small image lands at a random
            # offset inside the crop rather than always top-left.
            steps.append(
                v2.RandomCrop(
                    crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
                )
            )
        if hflip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(hflip_prob))
        if vflip_prob > 0:
            steps.append(v2.RandomVerticalFlip(vflip_prob))
        self.transforms = v2.Compose(steps + _normalize_steps(mean, std))

    def __call__(self, image: Any, mask: Any) -> tuple[Tensor, Tensor]:
        return _finish(*self.transforms(*_as_tv(image, mask)))


class SegmentationPresetEval:
    """Float + normalise at native resolution, or after resizing the shorter side to ``resize``.

    Evaluation is normally at each image's native size (``resize=None``); resizing also resamples
    the ground-truth mask (nearest neighbour), so scores are then not on the original labels.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], resize: int | None = None) -> None:
        steps: list[v2.Transform] = [ResizeShortSide(resize)] if resize is not None else []
        self.transforms = v2.Compose(steps + _normalize_steps(mean, std))

    def __call__(self, image: Any, mask: Any) -> tuple[Tensor, Tensor]:
        return _finish(*self.transforms(*_as_tv(image, mask)))


def collate_pad(
    batch: Sequence[tuple[Tensor, Tensor]], ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Stack ``(image (C,H,W), mask (H,W))`` pairs of different sizes into ``(B,C,H,W)``, ``(B,H,W)``.

    Each sample is padded at the bottom/right to the largest H and W in the batch (image with 0,
    mask with ``ignore_index``), so pixel (i, j) keeps its coordinates and the padding is never scored.
    """
    if not batch:
        raise VocsegError("collate_pad got an empty batch")
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    first_img, first_mask = batch[0]
    images = first_img.new_zeros((len(batch), first_img.shape[0], h, w))
    masks = first_mask.new_full((len(batch), h, w), ignore_index)
    for i, (img, mask) in enumerate(batch):
        if img.shape[-2:] != mask.shape[-2:]:
            raise VocsegError(f"sample {i}: image size {tuple(img.shape[-2:])} != mask size {tuple(mask.shape[-2:])}")
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


def denormalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo ``Normalize`` and ``ToDtype(scale=True)``: ``(..., 3, H, W)`` float -> uint8 for display."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return ((image * std_t + mean_t) * 255).round().clamp(0, 255).to(torch.uint8)
