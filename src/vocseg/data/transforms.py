"""Train/eval presets on uint8 tensors, plus padding collation and denormalisation.

The presets take ``(image, mask)`` as uint8 tensors (``tv_tensors`` or plain, the reader's output),
PIL images or float images, and return a float ``(C, h, w)`` image and an int64 ``(h, w)`` mask.
Random parameters (scale, crop window, flips) are drawn once per sample and applied to both, so
image and mask cannot desynchronise; torch's global RNG draws them in torchvision v2's order
(scale, crop top, crop left, hflip, vflip), so a seeded run is reproducible.

Speed (docs/benchmarks.md, section (b)): the train preset resamples only the part of the scaled image
that the crop keeps, straight from the uint8 source. Scaling a 500x375 image by 2 and then cropping
128x128 would resample 750k pixels to keep 16k; here the source window under the crop (plus the
filter's support) is resampled with the same scale factor, so the result is the full rescale
followed by the crop, shifted by at most half an output pixel (the crop's position is rounded to
the source grid). Images are resampled bilinearly with antialiasing, masks with nearest neighbour
(``nearest-exact``: the same pixel-centre mapping as bilinear), so no label values are invented.
Normalisation is one fused multiply-add on the float image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ..errors import VocsegError
from .classes import IGNORE_INDEX

# ATen's resampling ops take the output size and the scale factor separately; F.interpolate takes
# one or the other. The scale fixes the pixel mapping of the whole rescaled image, the size lets us
# compute only the crop's window of it.
_bilinear_aa = torch.ops.aten._upsample_bilinear2d_aa.default
_nearest_exact = torch.ops.aten._upsample_nearest_exact2d.default


def _as_tensors(image: Any, mask: Any) -> tuple[Tensor, Tensor]:
    """Plain ``(image (C, H, W), mask (H, W))`` tensors from tensors, tv_tensors or PIL images."""
    image = image.as_subclass(Tensor) if isinstance(image, Tensor) else F.pil_to_tensor(image)
    mask = mask.as_subclass(Tensor) if isinstance(mask, Tensor) else F.pil_to_tensor(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:  # PIL masks arrive as (1, H, W)
        mask = mask[0]
    if image.ndim != 3 or mask.ndim != 2:
        raise VocsegError(
            f"expected an image (C, H, W) and a mask (H, W), got {tuple(image.shape)} and {tuple(mask.shape)}"
        )
    if image.shape[-2:] != mask.shape[-2:]:
        raise VocsegError(f"image size {tuple(image.shape[-2:])} != mask size {tuple(mask.shape[-2:])}")
    return image, mask


class _Normalize:
    """``(x / 255 - mean) / std`` (uint8 input) or ``(x - mean) / std`` (float input) as one multiply-add
    on the float copy: a fifth of the time of ToDtype + Normalize."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise VocsegError(f"mean and std need one entry per channel and std > 0, got {list(mean)}, {list(std)}")
        mean_t = torch.tensor([float(m) for m in mean]).view(-1, 1, 1)
        std_t = torch.tensor([float(s) for s in std]).view(-1, 1, 1)
        self.scale_uint8, self.scale_float = 1.0 / (255.0 * std_t), 1.0 / std_t
        self.shift = -mean_t / std_t

    def __call__(self, image: Tensor) -> Tensor:
        scale = self.scale_uint8 if image.dtype == torch.uint8 else self.scale_float
        # copy=True: a float input must not be normalised in place (it may be the caller's or the cache's).
        # contiguous_format: decoded images are channel-first views of interleaved memory; the model
        # and collate_pad's stack want plain (C, H, W) layout, and this copy is made anyway.
        out = image.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        return out.mul_(scale).add_(self.shift)


def _finish(image: Tensor, mask: Tensor, normalize: _Normalize) -> tuple[Tensor, Tensor]:
    """Plain tensors out: normalised float image (C, h, w) and int64 mask (h, w)."""
    return normalize(image), mask.to(torch.int64)


def _resample_mask(mask: Tensor, size: list[int], scales: tuple[float, float]) -> Tensor:
    """Nearest-exact resampling of a (H, W) mask; non-uint8 labels go through float32 (exact below 2**24)."""
    if mask.dtype == torch.uint8:
        return _nearest_exact(mask[None, None], size, *scales)[0, 0]
    return _nearest_exact(mask[None, None].to(torch.float32), size, *scales)[0, 0].to(mask.dtype)


def _resample_image(image: Tensor, size: list[int], scales: tuple[float, float]) -> Tensor:
    """Antialiased bilinear resampling of a (C, H, W) uint8 or float image (uint8 stays uint8).

    Channels-last: decoded and cached images are interleaved (H, W, C) memory, which ATen's uint8
    kernel works on directly; a crop window of it in that layout resamples faster than a planar
    (C, H, W) copy would (docs/benchmarks.md, section (b))."""
    return _bilinear_aa(image[None].contiguous(memory_format=torch.channels_last), size, False, *scales)[0]


def _crop_range(size: int, crop: int) -> tuple[int, int, int]:
    """A random crop of length ``crop`` along an axis of length ``size``, drawn as v2's RandomCrop with
    ``pad_if_needed`` does (a short axis is padded on both sides by the shortfall, so a small image lands
    at a random offset). Returns the kept part ``[a, b)`` of the axis and where it starts in the crop."""
    pad = max(crop - size, 0)
    padded = size + 2 * pad
    start = int(torch.randint(0, padded - crop + 1, size=())) - pad if padded > crop else -pad
    a, b = max(start, 0), min(start + crop, size)
    return a, b, a - start


def _source_window(n: int, scaled: int, a: int, b: int) -> tuple[int, int, int, int]:
    """Source pixels ``[s0, s1)`` whose rescale (``scaled / n``) covers scaled pixels ``[a, b)``:
    resampling the window to ``k0 + (b - a)`` pixels with that scale gives scaled pixel ``a + k`` at
    ``k0 + k``, up to half a pixel (``k0`` rounds ``a - s0 * scale``). The window reaches one filter
    support (1/scale pixels when shrinking, 1 when enlarging) plus one pixel beyond the kept pixels,
    so they see the same neighbours as in the full rescale. Returns ``(s0, s1, k0, n_out)``."""
    scale = scaled / n
    support = max(1.0, 1.0 / scale) + 1.0
    s0 = max(0, math.floor((a + 0.5) / scale - 0.5 - support))
    k0 = round(a - s0 * scale)
    n_out = k0 + (b - a)
    s1 = min(n, math.ceil((n_out - 0.5) / scale - 0.5 + s0 + support) + 1)
    if s1 - s0 == n_out and scaled != n:
        n_out += 1  # ATen copies an axis whose in and out sizes agree, ignoring the scale: make them differ
    return s0, s1, k0, n_out


def _scale_and_crop(
    image: Tensor, mask: Tensor, scaled: tuple[int, int], crop: int, fill: int
) -> tuple[Tensor, Tensor]:
    """Rescale to ``scaled`` (H, W), then take a random ``crop`` x ``crop`` window, padding (image 0,
    mask ``fill``) where the rescaled image is smaller; only the window is ever resampled."""
    h, w = mask.shape
    (r0, r1, pr), (c0, c1, pc) = _crop_range(scaled[0], crop), _crop_range(scaled[1], crop)
    if scaled == (h, w):
        image, mask = image[:, r0:r1, c0:c1], mask[r0:r1, c0:c1]
    else:
        y0, y1, ky, ny = _source_window(h, scaled[0], r0, r1)
        x0, x1, kx, nx = _source_window(w, scaled[1], c0, c1)
        scales = (scaled[0] / h, scaled[1] / w)
        rows, cols = slice(ky, ky + r1 - r0), slice(kx, kx + c1 - c0)
        image = _resample_image(image[:, y0:y1, x0:x1], [ny, nx], scales)[:, rows, cols]
        mask = _resample_mask(mask[y0:y1, x0:x1], [ny, nx], scales)[rows, cols]
    if image.shape[-2:] == (crop, crop):
        return image, mask
    canvas = image.new_zeros((image.shape[0], crop, crop))
    canvas[:, pr : pr + image.shape[1], pc : pc + image.shape[2]] = image
    mask_canvas = mask.new_full((crop, crop), fill)
    mask_canvas[pr : pr + mask.shape[0], pc : pc + mask.shape[1]] = mask
    return canvas, mask_canvas


def rotate_pair(image: Tensor, mask: Tensor, angle: float) -> tuple[Tensor, Tensor]:
    """Rotate image (bilinear, corners 0) and mask (nearest, corners void) by ``angle`` degrees
    counter-clockwise about the centre, keeping the size: mmsegmentation's ``RandomRotate``."""
    image = F.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
    mask = F.rotate(mask[None], angle, interpolation=InterpolationMode.NEAREST, fill=IGNORE_INDEX)[0]
    return image, mask


class SegmentationPresetTrain:
    """Random scale -> pad/random crop -> horizontal and vertical flips -> float + normalise.

    ``crop_size=None`` skips scale and crop entirely (flips only, native size: the paper's
    setting, with variable-size batches handled by :func:`collate_pad`). ``scale_range=None``
    keeps the crop but skips the rescale. Regions padded to reach ``crop_size`` are 0 in the
    (uint8) image and ``ignore_index`` in the mask. ``photometric`` (e.g.
    :class:`~vocseg.data.photometric.PhotometricDistortion`) maps the uint8 image crop, after the
    flips and before normalisation, as mmsegmentation orders them; the mask is not passed to it.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_size: int | None = 256,
        hflip_prob: float = 0.5,
        vflip_prob: float = 0.5,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        photometric: Callable[[Tensor], Tensor] | None = None,
        rotate: float = 0.0,
    ) -> None:
        if crop_size is not None and crop_size < 1:
            raise VocsegError(f"crop_size must be a positive side length, got {crop_size}")
        if scale_range is not None and not 0 < scale_range[0] <= scale_range[1]:
            raise VocsegError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.crop_size = crop_size
        self.scale_range = (float(scale_range[0]), float(scale_range[1])) if scale_range is not None else None
        self.hflip_prob, self.vflip_prob = hflip_prob, vflip_prob
        self.photometric = photometric
        if not 0.0 <= rotate <= 180.0:
            raise VocsegError(f"rotate is a largest angle in degrees, in [0, 180], got {rotate}")
        self.rotate = float(rotate)
        self.normalize = _Normalize(mean, std)

    def _scaled_size(self, h: int, w: int) -> tuple[int, int]:
        if self.scale_range is None:
            return h, w
        s = float(torch.empty(()).uniform_(*self.scale_range))
        return max(1, round(h * s)), max(1, round(w * s))

    def __call__(self, image: Any, mask: Any) -> tuple[Tensor, Tensor]:
        image, mask = _as_tensors(image, mask)
        if self.crop_size is not None:
            scaled = self._scaled_size(*mask.shape)
            image, mask = _scale_and_crop(image, mask, scaled, self.crop_size, IGNORE_INDEX)
        # Flip the uint8 data: a quarter of the bytes of the float image.
        if self.hflip_prob > 0 and float(torch.rand(1)) < self.hflip_prob:
            image, mask = image.flip(-1), mask.flip(-1)
        if self.vflip_prob > 0 and float(torch.rand(1)) < self.vflip_prob:
            image, mask = image.flip(-2), mask.flip(-2)
        if self.rotate > 0:
            image, mask = rotate_pair(image, mask, float(torch.empty(()).uniform_(-self.rotate, self.rotate)))
        if self.photometric is not None:
            image = self.photometric(image)
        return _finish(image, mask, self.normalize)


class SegmentationPresetEval:
    """Float + normalise at native resolution, or after resizing the shorter side to ``resize``.

    Evaluation is normally at each image's native size (``resize=None``); resizing also resamples
    the ground-truth mask (nearest neighbour), so scores are then not on the original labels.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], resize: int | None = None) -> None:
        if resize is not None and resize < 1:
            raise VocsegError(f"resize must be a positive side length, got {resize}")
        self.resize = resize
        self.normalize = _Normalize(mean, std)

    def __call__(self, image: Any, mask: Any) -> tuple[Tensor, Tensor]:
        image, mask = _as_tensors(image, mask)
        if self.resize is not None:
            h, w = mask.shape
            r = self.resize
            size = [r, max(1, round(w * r / h))] if h <= w else [max(1, round(h * r / w)), r]
            image = F.resize_image(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            mask = F.resize_mask(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)[0]
        return _finish(image, mask, self.normalize)


def collate_pad(batch: Sequence[tuple[Tensor, Tensor]], ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Stack ``(image (C,H,W), mask (H,W))`` pairs of different sizes into ``(B,C,H,W)``, ``(B,H,W)``.

    Each sample is padded at the bottom/right to the largest H and W in the batch (image with 0,
    mask with ``ignore_index``), so pixel (i, j) keeps its coordinates and the padding is never scored.
    """
    if not batch:
        raise VocsegError("collate_pad got an empty batch")
    for i, (img, mask) in enumerate(batch):
        if img.shape[-2:] != mask.shape[-2:]:
            raise VocsegError(f"sample {i}: image size {tuple(img.shape[-2:])} != mask size {tuple(mask.shape[-2:])}")
    if all(img.shape == batch[0][0].shape for img, _ in batch):  # fixed-size crops: one copy, no padding
        return torch.stack([img for img, _ in batch]), torch.stack([mask for _, mask in batch])
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    first_img, first_mask = batch[0]
    images = first_img.new_zeros((len(batch), first_img.shape[0], h, w))
    masks = first_mask.new_full((len(batch), h, w), ignore_index)
    for i, (img, mask) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


def denormalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo the presets' normalisation: ``(..., 3, H, W)`` float -> uint8 for display."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
    return ((image * std_t + mean_t) * 255).round().clamp(0, 255).to(torch.uint8)
