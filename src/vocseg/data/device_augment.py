"""Training augmentation on the training device, batched (config ``augment_on``).

The loader's items are not finished crops but the raw uint8 part of each image and mask a crop needs, with
the sample's random draws::

    worker / main process:  load_tensors(i) -> draw_plan (scale, crop window, flips, angle, photometric)
                            -> ship the crop's source window, uint8 (RawTrainItems; RawCollate: lists)
    training device:        DeviceAugment: move the windows, rescale and crop each one, then flip,
                            distort, normalise (and copy-paste) the whole batch at once

The draws are made where :class:`~vocseg.data.transforms.SegmentationPresetTrain` makes them, from the same
generator, in its order (scale, crop top, crop left, hflip, vflip, angle, photometric), with its own helpers
(``_scaled_size``, ``_crop_range``, ``_source_window``, ``PhotometricDistortion.make_params``); copy-paste's
draws are made in the collate step, like :class:`~vocseg.data.copy_paste.CopyPasteCollate`'s. So a seeded run
sees the same crops, flips and colours with ``augment_on: device`` as with ``workers``, and resuming replays
them the same way (loaders.train_loader seeds both paths alike).

What differs is the image resampling. The workers' path resamples uint8 with ATen's CPU kernel, which rounds
to uint8 between its horizontal and vertical passes and quantises the filter weights to int16; CUDA has no
uint8 antialiased kernel, so this path resamples the window in float32 and rounds once. The workers' result
is within 1 level of the exact rescale (two roundings of half a level; the filter's weights are non-negative
and sum to 1, so the second pass does not enlarge the first's error), this path's within half a level, so
they differ by at most 1 level (of 255) per pixel; the photometric distortion can enlarge such a difference
to a few levels. Masks are resampled with the same
nearest-exact kernel on uint8 as the workers' path, so they are exactly equal; so is everything after the
resampling, for the same input crop: flips, rotation, the distortion's arithmetic and the normalisation are
the same float32 operations, applied to a batch instead of one crop.

Resampling and rotation are per sample (each crop has its own scale, window and angle); flips, the
distortion, normalisation and copy-paste run once on the batch. The same code runs on CPU and CUDA tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..config import CHOICES
from ..errors import VocsegError
from .classes import IGNORE_INDEX
from .photometric import PhotometricDistortion, PhotometricParams, hsv_to_rgb, rgb_to_hsv
from .transforms import (
    SegmentationPresetTrain,
    _bilinear_aa,
    _crop_range,
    _Normalize,
    _resample_mask,
    _source_window,
    rotate_pair,
)


def resolve_augment_on(augment_on: str, device: torch.device) -> str:
    """Where training augmentation runs for config ``augment_on`` on ``device``: "workers" or "device".

    "auto" picks the workers on CPUs: there the device path moves the same work onto the training threads,
    and it measured slower for the default and strong_cpu.yaml's crops, no faster with photometric
    distortion (docs/benchmarks.md, "Augmentation on the device"; benchmarks/bench_device_path.py). On CUDA
    it picks the device: the loader processes then only slice windows, and the batched ops cost a GPU little
    next to a training step (on an H200, strong.yaml at 512: 1.87x the worker pool end to end; section (j))."""
    if augment_on not in CHOICES["augment_on"]:
        raise VocsegError(f"augment_on must be one of {', '.join(CHOICES['augment_on'])}, got {augment_on!r}")
    if augment_on == "auto":
        return "device" if torch.device(device).type == "cuda" else "workers"
    return augment_on


def resolve_augment_ahead(augment_ahead: bool | None, augment_on: str, device: torch.device) -> bool:
    """Whether the device path finishes batches on a thread of its own (config ``augment_ahead``). null: where
    the device path runs on CUDA; on an H100 with strong.yaml at 512 it trained 1.02x inline's images/s end to
    end at batch 16 and 32 (docs/benchmarks.md, section (j)). Elsewhere off: unmeasured on CPUs, whose cores the
    training threads already use. It has no effect where the workers augment."""
    if augment_ahead is not None:
        return augment_ahead
    return torch.device(device).type == "cuda" and resolve_augment_on(augment_on, device) == "device"


# ----------------------------------------------------------------------------- the draws (loader side)


@dataclass(frozen=True)
class CropGeometry:
    """Where a sample's crop comes from and where it goes; rows first in every pair."""

    window: tuple[int, int, int, int]  # source rows [y0, y1) and columns [x0, x1): what the loader ships
    resize: tuple[int, int] | None  # resample the window to this size; None: the window is the kept part
    scales: tuple[float, float]  # the rescale's factors, which fix its pixel mapping
    keep: tuple[int, int, int, int]  # (top, left, height, width) of the kept part in the resampled window
    paste: tuple[int, int]  # (top, left) of the kept part in the output; the rest is padding
    size: tuple[int, int]  # the output: crop x crop, or the native size without a crop


@dataclass(frozen=True)
class SamplePlan:
    """One training sample's draws: the geometry they fix, the flips, the angle and the colour change."""

    geometry: CropGeometry
    hflip: bool
    vflip: bool
    angle: float | None  # None: the preset does not rotate
    photometric: PhotometricParams | None  # None: the preset has no photometric distortion


def _native_geometry(h: int, w: int) -> CropGeometry:
    return CropGeometry((0, h, 0, w), None, (1.0, 1.0), (0, 0, h, w), (0, 0), (h, w))


def _crop_geometry(h: int, w: int, scaled: tuple[int, int], crop: int) -> CropGeometry:
    """The crop window of ``transforms._scale_and_crop``, drawn as it draws it (crop top, then left)."""
    (r0, r1, pr), (c0, c1, pc) = _crop_range(scaled[0], crop), _crop_range(scaled[1], crop)
    kept = (r1 - r0, c1 - c0)
    if scaled == (h, w):
        return CropGeometry((r0, r1, c0, c1), None, (1.0, 1.0), (0, 0, *kept), (pr, pc), (crop, crop))
    y0, y1, ky, ny = _source_window(h, scaled[0], r0, r1)
    x0, x1, kx, nx = _source_window(w, scaled[1], c0, c1)
    scales = (scaled[0] / h, scaled[1] / w)
    return CropGeometry((y0, y1, x0, x1), (ny, nx), scales, (ky, kx, *kept), (pr, pc), (crop, crop))


def check_preset(preset: Any) -> SegmentationPresetTrain:
    """``preset`` if the device path can split its draws from its work, else a VocsegError saying why."""
    if not isinstance(preset, SegmentationPresetTrain):
        raise VocsegError(
            f"augment_on: device needs the training set's transforms to be a SegmentationPresetTrain, got "
            f"{type(preset).__name__}; use augment_on: workers"
        )
    if preset.photometric is not None and not isinstance(preset.photometric, PhotometricDistortion):
        raise VocsegError(
            f"augment_on: device draws the photometric distortion's parameters itself, which it can only do for "
            f"PhotometricDistortion, got {type(preset.photometric).__name__}; use augment_on: workers"
        )
    return preset


def draw_plan(preset: SegmentationPresetTrain, h: int, w: int) -> SamplePlan:
    """The draws ``preset(image, mask)`` makes for an ``h`` x ``w`` sample, from torch's global generator in
    the preset's order, without touching a pixel: the same generator state gives the same plan as the
    preset's crop (tests/data/test_device_augment.py checks both the outputs and the generator's state)."""
    if preset.crop_size is None:
        geometry = _native_geometry(h, w)
    else:
        geometry = _crop_geometry(h, w, preset._scaled_size(h, w), preset.crop_size)
    hflip = preset.hflip_prob > 0 and float(torch.rand(1)) < preset.hflip_prob
    vflip = preset.vflip_prob > 0 and float(torch.rand(1)) < preset.vflip_prob
    angle = float(torch.empty(()).uniform_(-preset.rotate, preset.rotate)) if preset.rotate > 0 else None
    photometric = preset.photometric.make_params([])["params"] if preset.photometric is not None else None
    return SamplePlan(geometry, hflip, vflip, angle, photometric)


class RawTrainItems(Dataset):
    """A training set's items for the device path: ``(image window (h, w, 3) uint8, mask window (h, w) uint8,
    SamplePlan)``, the window being the source pixels the crop needs (``plan.geometry.window``).

    ``dataset`` is a :class:`~vocseg.data.voc.VOCSegmentation` (anything with ``load_tensors(i)`` and the
    train preset as ``transforms``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.preset = dataset, check_preset(dataset.transforms)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, SamplePlan]:
        image, mask = self.dataset.load_tensors(i)
        plan = draw_plan(self.preset, *mask.shape)
        y0, y1, x0, x1 = plan.geometry.window
        # Copies of the window alone: the decoders' and the cache's interleaved (H, W, 3) memory, packed. A view
        # of the RAM cache, sent from a worker, would move the whole cache buffer into shared memory.
        window = image.permute(1, 2, 0)[y0:y1, x0:x1].clone(memory_format=torch.contiguous_format)
        return window, mask[y0:y1, x0:x1].clone(memory_format=torch.contiguous_format), plan


class RawBatch(NamedTuple):
    """A batch as the loader yields it on the device path (a named tuple: the loader pins its tensors)."""

    images: list[Tensor]  # (h, w, 3) uint8 windows
    masks: list[Tensor]  # (h, w) uint8 windows
    plans: list[SamplePlan]
    paste: tuple[Tensor, Tensor] | None  # copy-paste's draws: which crops receive (B,) bool, from whom (B,)


class RawCollate:
    """Lists of the windows and plans, and copy-paste's draws where CopyPasteCollate makes them (a class, so
    loader workers can pickle it)."""

    def __init__(self, copy_paste: float = 0.0) -> None:
        if not 0.0 <= copy_paste <= 1.0:
            raise VocsegError(f"copy_paste is a probability in [0, 1], got {copy_paste!r}")
        self.copy_paste = copy_paste

    def __call__(self, items: Sequence[tuple[Tensor, Tensor, SamplePlan]]) -> RawBatch:
        if not items:
            raise VocsegError("RawCollate got an empty batch")
        images, masks, plans = (list(column) for column in zip(*items))
        paste = None
        if self.copy_paste > 0 and len(items) >= 2:  # copy_paste() draws nothing otherwise
            sizes = {p.geometry.size for p in plans}
            if len(sizes) > 1:
                raise VocsegError(
                    "copy_paste needs training crops of one size (set image_size); this batch has sizes "
                    f"{sorted(sizes)}"
                )
            b = len(items)
            receives = torch.rand(b) < self.copy_paste  # copy_paste()'s draws, in its order
            paste = (receives, (torch.arange(b) + torch.randint(1, b, (b,))) % b)
        return RawBatch(images, masks, plans, paste)


# ----------------------------------------------------------------------------- the work (device side)


def _crop_one(image: Tensor, mask: Tensor, g: CropGeometry) -> tuple[Tensor, Tensor]:
    """The kept part of one sample's window: ``(image (3, kh, kw), mask (kh, kw))``; the image uint8, or
    float32 holding 0..255 integers where it was resampled."""
    x = image.permute(2, 0, 1)
    if g.resize is None:
        return x, mask
    ky, kx, kh, kw = g.keep
    x = _bilinear_aa(x[None].to(torch.float32), list(g.resize), False, *g.scales)[0, :, ky : ky + kh, kx : kx + kw]
    # Rounded like the workers' uint8 kernel (which rounds half up); clamped for the float filter's last bit.
    x = x.add_(0.5).floor_().clamp_(0.0, 255.0)
    return x, _resample_mask(mask, list(g.resize), g.scales)[ky : ky + kh, kx : kx + kw]


def _chosen(flags: list[bool], device: torch.device) -> Tensor | None:
    """The indices where ``flags`` is set, on ``device``; None where none is."""
    chosen = [i for i, flag in enumerate(flags) if flag]
    return torch.tensor(chosen).to(device, non_blocking=True) if chosen else None


def _flip_batch(images: Tensor, masks: Tensor, flags: list[bool], dim: int) -> None:
    """Flip, in place, the crops whose flag is set along ``dim`` (-1: horizontal, -2: vertical), in one gather
    and one scatter per tensor (torch.where over the whole batch cost 3x that on CPU)."""
    chosen = _chosen(flags, images.device)
    if chosen is not None:
        images.index_copy_(0, chosen, images.index_select(0, chosen).flip(dim))
        masks.index_copy_(0, chosen, masks.index_select(0, chosen).flip(dim))


def _photometric_table(params: list[PhotometricParams], device: torch.device) -> Tensor:
    """(B, 5, 1, 1, 1) float32 on ``device``: brightness / 255, contrast before, saturation, hue, contrast
    after. float32 of the same doubles the per-crop code passes as scalars."""
    rows = [
        [
            p.brightness / 255.0,
            p.contrast if p.contrast_first else 1.0,
            p.saturation,
            p.hue,
            1.0 if p.contrast_first else p.contrast,
        ]
        for p in params
    ]
    return torch.tensor(rows, dtype=torch.float32).to(device, non_blocking=True).view(len(params), 5, 1, 1, 1)


def photometric_batch(images: Tensor, params: list[PhotometricParams]) -> Tensor:
    """``photometric.photometric_distort`` of each crop of ``images`` (B, 3, H, W) float32 holding 0..255
    integers, with ``params[i]`` for crop i: the same float32 steps on the whole batch, a step's neutral
    value where a crop skips it (adding 0, multiplying by 1, clipping values already in range change
    nothing), and the HSV round trip only on the crops that draw it. Returns 0..255 integers."""
    t = _photometric_table(params, images.device).unbind(1)
    x = images.mul_(1.0 / 255.0)
    if any(p.brightness != 0.0 for p in params):
        x.add_(t[0]).clamp_(0.0, 1.0)
    if any(p.contrast_first and p.contrast != 1.0 for p in params):
        x.mul_(t[1]).clamp_(0.0, 1.0)
    chosen = _chosen([p.saturation != 1.0 or p.hue != 0.0 for p in params], x.device)
    if chosen is not None:
        hsv = rgb_to_hsv(x.index_select(0, chosen))
        hsv[:, 0].add_(t[3].index_select(0, chosen).view(-1, 1, 1))
        hsv[:, 1].mul_(t[2].index_select(0, chosen).view(-1, 1, 1)).clamp_(0.0, 1.0)
        x.index_copy_(0, chosen, hsv_to_rgb(hsv).clamp_(0.0, 1.0))
    if any(not p.contrast_first and p.contrast != 1.0 for p in params):
        x.mul_(t[4]).clamp_(0.0, 1.0)
    return x.mul_(255.0).round_()


def paste_batch(images: Tensor, masks: Tensor, receives: Tensor, donors: Tensor) -> tuple[Tensor, Tensor]:
    """``copy_paste.copy_paste`` with its draws given, in one op per tensor: crop i, where ``receives[i]``,
    takes the object pixels (labels other than 0 and void) of crop ``donors[i]`` as the batch came."""
    receives, donors = receives.to(masks.device, non_blocking=True), donors.to(masks.device, non_blocking=True)
    donor_masks = masks[donors]
    objects = (donor_masks != 0) & (donor_masks != IGNORE_INDEX) & receives.view(-1, 1, 1)
    masks = torch.where(objects, donor_masks, masks)
    return torch.where(objects[:, None], images[donors], images), masks


class DeviceAugment:
    """Finishes :class:`RawBatch` es on ``device``: ``(images (B, 3, H, W) float32 normalised, masks (B, H, W)
    int64)``, as ``collate_pad`` (or ``CopyPasteCollate``) of SegmentationPresetTrain's crops would be.
    ``mean`` and ``std`` are the preset's normalisation."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> None:
        self.device = torch.device(device)
        normalize = _Normalize(mean, std)  # the preset's own constants: the same float32 multiply-add
        self.scale, self.shift = normalize.scale_uint8.to(self.device), normalize.shift.to(self.device)

    def __call__(self, batch: RawBatch) -> tuple[Tensor, Tensor]:
        windows = [  # non-blocking: from pinned memory on CUDA
            (image.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True))
            for image, mask in zip(batch.images, batch.masks)
        ]
        plans = batch.plans
        same_size = len({p.geometry.size for p in plans}) == 1
        images, masks = self._crops(windows, plans) if same_size else self._padded(windows, plans)
        images = images.to(torch.float32)
        photometric = [p.photometric for p in plans]
        if photometric[0] is not None:
            images = photometric_batch(images, photometric)
        images = images.mul_(self.scale).add_(self.shift)
        if not same_size:  # collate_pad pads the normalised images with 0
            images = images.masked_fill_(masks[:, None] == _PAD, 0.0)
            masks = masks.clamp_(max=IGNORE_INDEX)
        if batch.paste is not None:
            images, masks = paste_batch(images, masks, *batch.paste)
        return images, masks.to(torch.int64)

    def _crops(self, windows: list[tuple[Tensor, Tensor]], plans: list[SamplePlan]) -> tuple[Tensor, Tensor]:
        """Crops of one size: each resampled into its place in one uint8 batch, then flipped together."""
        h, w = plans[0].geometry.size
        images = torch.zeros((len(plans), 3, h, w), dtype=torch.uint8, device=self.device)
        masks = torch.full((len(plans), h, w), IGNORE_INDEX, dtype=torch.uint8, device=self.device)
        for i, ((image, mask), plan) in enumerate(zip(windows, plans)):
            x, y = _crop_one(image, mask, plan.geometry)
            (top, left), (kh, kw) = plan.geometry.paste, x.shape[-2:]
            images[i, :, top : top + kh, left : left + kw] = x
            masks[i, top : top + kh, left : left + kw] = y
        _flip_batch(images, masks, [p.hflip for p in plans], -1)
        _flip_batch(images, masks, [p.vflip for p in plans], -2)
        for i, plan in enumerate(plans):
            if plan.angle is not None:  # after the flips, as the preset rotates
                images[i], masks[i] = rotate_pair(images[i], masks[i], plan.angle)
        return images, masks

    def _padded(self, windows: list[tuple[Tensor, Tensor]], plans: list[SamplePlan]) -> tuple[Tensor, Tensor]:
        """Native-size samples of different sizes, each flipped and rotated on its own and placed top-left, as
        collate_pad places them; the padding's mask holds _PAD (> 255) so the caller can find it after."""
        h = max(p.geometry.size[0] for p in plans)
        w = max(p.geometry.size[1] for p in plans)
        images = torch.zeros((len(plans), 3, h, w), dtype=torch.uint8, device=self.device)
        masks = torch.full((len(plans), h, w), _PAD, dtype=torch.int16, device=self.device)
        for i, ((image, mask), plan) in enumerate(zip(windows, plans)):
            x, y = _crop_one(image, mask, plan.geometry)
            x = x.to(torch.uint8)
            if plan.hflip:
                x, y = x.flip(-1), y.flip(-1)
            if plan.vflip:
                x, y = x.flip(-2), y.flip(-2)
            if plan.angle is not None:
                x, y = rotate_pair(x, y, plan.angle)
            images[i, :, : x.shape[-2], : x.shape[-1]] = x
            masks[i, : y.shape[-2], : y.shape[-1]] = y
        return images, masks


_PAD = IGNORE_INDEX + 1  # marks collate_pad's padding in an int16 mask until the images are padded with 0


def training_augment(augment_on: str, mean: Sequence[float], std: Sequence[float], device: torch.device):
    """The DeviceAugment that finishes ``loaders.train_loader``'s batches when ``augment_on`` resolves to the
    device there, else None (the loader's batches are finished already)."""
    if resolve_augment_on(augment_on, device) != "device":
        return None
    return DeviceAugment(mean, std, device)
