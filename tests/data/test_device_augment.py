"""vocseg.data.device_augment against the workers' path (SegmentationPresetTrain + collate_pad / CopyPasteCollate):
the same draws give the same crops, the draws' statistics are the same, and what the path refuses.

Tolerances. Masks: exactly equal. Images: exactly equal where no crop is rescaled (flips, padding, rotation,
the photometric distortion and the normalisation are the same float32 operations, batched). Rescaled crops
differ by at most 1 level of 255 before the photometric distortion: the workers resample uint8 with ATen's
CPU kernel (int16 weights, rounded to uint8 between its two passes: within 1 level of the exact value), the
device path in float32, rounded once (within half a level), so they differ by at most 1. The distortion
(contrast and saturation up to 1.5x, a hue shift that moves low-saturation pixels far) enlarges such a
difference: measured at most 6 levels in 100 batches, 88% of pixels equal and 99.9% within 2 levels; the
test allows 8 levels and a mean of 0.25.
"""

from __future__ import annotations

import colorsys

import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from vocseg.config import Config
from vocseg.data.builder import build_datasets
from vocseg.data.classes import IGNORE_INDEX
from vocseg.data.copy_paste import CopyPasteCollate
from vocseg.data.device_augment import (
    DeviceAugment,
    RawBatch,
    RawCollate,
    RawTrainItems,
    check_preset,
    draw_plan,
    resolve_augment_ahead,
    resolve_augment_on,
    training_augment,
)
from vocseg.data.loaders import train_loader
from vocseg.data.photometric import PhotometricDistortion
from vocseg.data.transforms import SegmentationPresetTrain, collate_pad, denormalize
from vocseg.errors import VocsegError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CPU = torch.device("cpu")


class Items:
    """In-memory samples with the preset as ``transforms``: what RawTrainItems reads from a VOCSegmentation."""

    def __init__(self, samples: list[tuple[torch.Tensor, torch.Tensor]], preset: SegmentationPresetTrain) -> None:
        self.samples, self.transforms = samples, preset

    def __len__(self) -> int:
        return len(self.samples)

    def load_tensors(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.samples[i]

    def __getitem__(self, i: int):
        return self.transforms(*self.samples[i])


def _samples(n: int, seed: int, lo: int = 16, hi: int = 96) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Smooth random images (decoders' interleaved layout) with random labels and void, of random sizes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        h, w = torch.randint(lo, hi, (2,), generator=g).tolist()
        coarse = torch.rand(1, 3, h // 6 + 2, w // 6 + 2, generator=g) * 255
        image = F.interpolate(coarse, size=(h, w), mode="bilinear")[0].round().to(torch.uint8)
        mask = torch.randint(0, 22, (h, w), generator=g, dtype=torch.uint8)
        mask[mask == 21] = IGNORE_INDEX
        out.append((image.permute(1, 2, 0).contiguous().permute(2, 0, 1), mask))
    return out


def _both_paths(preset, samples, seed: int, copy_paste: float = 0.0):
    """Workers' batch and device batch from the same generator state, and the generator states after each."""
    items = Items(samples, preset)
    torch.manual_seed(seed)
    crops = [items[i] for i in range(len(items))]
    reference = CopyPasteCollate(copy_paste)(crops) if copy_paste else collate_pad(crops)
    state_workers = torch.get_rng_state()
    torch.manual_seed(seed)
    raw = RawTrainItems(items)
    batch = RawCollate(copy_paste)([raw[i] for i in range(len(raw))])
    state_device = torch.get_rng_state()
    return reference, DeviceAugment(MEAN, STD, CPU)(batch), (state_workers, state_device)


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two normalised images in levels of the uint8 image (0..255)."""
    return ((a - b) * torch.tensor(STD).view(1, 3, 1, 1) * 255).abs()


PRESETS = {
    "rescale-crop": (dict(crop_size=64), 1.0),
    "downscale-crop": (dict(crop_size=24, scale_range=(0.3, 0.9)), 1.0),
    "crop-without-rescale": (dict(crop_size=48, scale_range=None), 0.0),
    "photometric": (dict(crop_size=64, photometric=PhotometricDistortion()), 8.0),
    "photometric-without-rescale": (dict(crop_size=64, scale_range=None, photometric=PhotometricDistortion()), 0.0),
    "rotate": (dict(crop_size=64, rotate=30.0), 1.0),
    "native-size-padded": (dict(crop_size=None, photometric=PhotometricDistortion()), 0.0),
    "native-size-rotate": (dict(crop_size=None, rotate=20.0, vflip_prob=0.0), 0.0),
}


# Copy-paste needs crops of one size: the config refuses it without image_size.
CASES = [(name, 0.0) for name in PRESETS] + [(name, 0.7) for name in PRESETS if not name.startswith("native")]


@pytest.mark.parametrize(("name", "copy_paste"), CASES, ids=[f"{n}{'+copy-paste' * (c > 0)}" for n, c in CASES])
def test_same_draws_give_the_same_batch(name, copy_paste, torch_global_state):
    options, tolerance = PRESETS[name]
    preset = SegmentationPresetTrain(MEAN, STD, **options)
    for seed in range(3):
        (ref_images, ref_masks), (images, masks), (state_w, state_d) = _both_paths(
            preset, _samples(8, seed), seed, copy_paste
        )
        assert torch.equal(state_w, state_d)  # the same draws, no more, no fewer
        assert images.shape == ref_images.shape and images.dtype == ref_images.dtype == torch.float32
        assert masks.dtype == ref_masks.dtype == torch.int64
        assert torch.equal(masks, ref_masks)
        levels = _levels(images, ref_images)
        assert float(levels.max()) <= tolerance + 1e-3, f"seed {seed}: {float(levels.max())} levels"
        assert float(levels.mean()) <= 0.25


def test_same_crop_windows(torch_global_state):
    """Without a rescale the workers' crop is a slice: an image holding each pixel's row and column shows
    which source pixels landed where, and the plan drawn from the same state names the same window."""
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=40, scale_range=None, hflip_prob=0.0, vflip_prob=0.0)
    for seed, (h, w) in enumerate([(30, 70), (70, 30), (40, 40), (25, 25), (90, 55)]):
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        image = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)
        mask = torch.zeros(h, w, dtype=torch.uint8)
        torch.manual_seed(seed)
        crop, crop_mask = preset(image, mask)
        torch.manual_seed(seed)
        g = draw_plan(preset, h, w).geometry
        top, left = g.paste
        y0, y1, x0, x1 = g.window
        inside = (crop_mask != IGNORE_INDEX).nonzero()
        assert inside.min(0).values.tolist() == [top, left]  # where the kept part lands
        assert inside.max(0).values.tolist() == [top + y1 - y0 - 1, left + x1 - x0 - 1]
        source = denormalize(crop, MEAN, STD)
        assert (int(source[0, top, left]), int(source[1, top, left])) == (y0, x0)  # which part it is


# ----------------------------------------------------------------------------- the draws' statistics


GREYS = (60, 120)  # brightness +-32, then contrast 0.5-1.5, keep both inside 0..255: nothing is clipped
COLOUR = (120, 100, 80)  # saturation 1/3 (at most 0.68 after the distortion), hue 1/12 of a turn


def _quadrants(side: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadrants labelled 1 2 / 3 4 (a crop's labels show its flips), coloured grey 60, grey 120, COLOUR and
    blue: the greys show brightness and contrast, COLOUR saturation and hue."""
    mask = torch.ones(side, side, dtype=torch.uint8)
    half = side // 2
    mask[:half, half:], mask[half:, :half], mask[half:, half:] = 2, 3, 4
    colours = torch.tensor([[GREYS[0]] * 3, [GREYS[1]] * 3, COLOUR, (80, 100, 120)], dtype=torch.uint8)
    image = colours[mask.long() - 1].permute(2, 0, 1)
    return image, mask


def _photometric_estimates(image: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Brightness, contrast, saturation factor and hue shift, read back from the quadrants' median colours."""
    colour = [image[:, mask == label].median(dim=1).values.tolist() for label in (1, 2, 3)]
    grey1, grey2 = sum(colour[0]) / 3, sum(colour[1]) / 3
    contrast = (grey2 - grey1) / (GREYS[1] - GREYS[0])  # (g + b) c for both greys
    brightness = grey1 / contrast - GREYS[0]
    hue, saturation, _ = colorsys.rgb_to_hsv(*(v / 255 for v in colour[2]))
    hue_in, saturation_in, _ = colorsys.rgb_to_hsv(*(v / 255 for v in COLOUR))
    # Brightness and contrast keep the hue; brightness changes the saturation to (max - min) / (max + b).
    factor = saturation / (saturation_in * max(COLOUR) / (max(COLOUR) + brightness))
    return {"brightness": brightness, "contrast": contrast, "saturation": factor, "hue": (hue - hue_in + 0.5) % 1 - 0.5}


def _observed(images: torch.Tensor, masks: torch.Tensor, side: int = 40) -> dict[str, list[float]]:
    """Per crop: the rescale (from the labelled area), where the image landed, the flips (from the label in its
    top-left corner) and the photometric parameters. The crop holds the whole rescaled image."""
    out: dict[str, list[float]] = {}
    for image, mask in zip(denormalize(images, MEAN, STD), masks):
        inside = (mask != IGNORE_INDEX).nonzero()
        top, left = inside.min(0).values.tolist()
        corner = int(mask[top, left])
        seen = {"scale": len(inside) ** 0.5 / side, "top": top, "left": left}
        seen |= {"hflip": float(corner in (2, 4)), "vflip": float(corner in (3, 4))}
        for key, value in (seen | _photometric_estimates(image.float(), mask)).items():
            out.setdefault(key, []).append(value)
    return out


def _many(batches: int, make_batch) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {}
    for _ in range(batches):
        for key, values in _observed(*make_batch()).items():
            seen.setdefault(key, []).extend(values)
    return seen


def test_draw_statistics_match_the_workers_path(torch_global_state):
    """Independent seeds for the two paths, 600 crops each: the rescale, the crop position and the photometric
    parameters read back from the crops are the same distributions (two-sample Kolmogorov-Smirnov, p > 0.001)
    and the flip rates agree within 4 standard errors."""
    preset = SegmentationPresetTrain(
        MEAN, STD, crop_size=96, hflip_prob=0.5, vflip_prob=0.3, photometric=PhotometricDistortion()
    )
    items = Items([_quadrants()] * 50, preset)
    torch.manual_seed(1)
    workers = _many(12, lambda: collate_pad([items[i] for i in range(len(items))]))
    torch.manual_seed(2)
    raw, augment = RawTrainItems(items), DeviceAugment(MEAN, STD, CPU)
    device = _many(12, lambda: augment(RawCollate()([raw[i] for i in range(len(raw))])))
    n = len(workers["scale"])
    for key in ("scale", "top", "left", "brightness", "contrast", "saturation", "hue"):
        assert stats.ks_2samp(workers[key], device[key]).pvalue > 1e-3, key
    for key, p in (("hflip", 0.5), ("vflip", 0.3)):
        rate_w, rate_d = sum(workers[key]) / n, sum(device[key]) / n
        assert abs(rate_w - rate_d) < 4 * (2 * p * (1 - p) / n) ** 0.5, (key, rate_w, rate_d)
    # The read-back is right: the draws' ranges (scale 0.5-2, brightness +-32, contrast 0.5-1.5, hue +-0.1).
    assert min(device["scale"]) < 0.6 and max(device["scale"]) > 1.9
    assert min(device["brightness"]) < -28 and max(device["brightness"]) > 28
    assert 0.45 < min(device["contrast"]) < 0.6 and 1.4 < max(device["contrast"]) < 1.55
    assert min(device["hue"]) < -0.09 and max(device["hue"]) > 0.09


# ----------------------------------------------------------------------------- the loader, and what is refused


def test_resolve_augment_on():
    assert resolve_augment_on("auto", CPU) == "workers"
    assert resolve_augment_on("auto", torch.device("cuda")) == "device"  # a device object needs no GPU
    assert resolve_augment_on("device", CPU) == "device" and resolve_augment_on("workers", "cuda") == "workers"
    with pytest.raises(VocsegError, match="augment_on must be one of auto, workers, device, got 'gpu'"):
        resolve_augment_on("gpu", CPU)
    assert training_augment("auto", MEAN, STD, CPU) is None
    assert isinstance(training_augment("device", MEAN, STD, CPU), DeviceAugment)


def test_resolve_augment_ahead():
    """null is on only where the device path runs on CUDA; a set value is kept."""
    cuda = torch.device("cuda")  # a device object needs no GPU
    assert resolve_augment_ahead(None, "auto", cuda) is True and resolve_augment_ahead(None, "device", cuda) is True
    assert resolve_augment_ahead(None, "workers", cuda) is False
    assert resolve_augment_ahead(None, "auto", CPU) is False and resolve_augment_ahead(None, "device", CPU) is False
    assert resolve_augment_ahead(True, "device", CPU) is True and resolve_augment_ahead(False, "auto", cuda) is False


def test_refuses_what_it_cannot_split_with_a_reason():
    with pytest.raises(VocsegError, match="needs the training set's transforms to be a SegmentationPresetTrain"):
        check_preset(lambda image, mask: (image, mask))
    custom = SegmentationPresetTrain(MEAN, STD, photometric=lambda image: image)
    with pytest.raises(VocsegError, match="only do for PhotometricDistortion, got function; use augment_on: workers"):
        check_preset(custom)
    native = SegmentationPresetTrain(MEAN, STD, crop_size=None)
    raw = RawTrainItems(Items(_samples(2, 0), native))
    with pytest.raises(VocsegError, match="copy_paste needs training crops of one size"):
        RawCollate(0.5)([raw[0], raw[1]])


def _config(tiny_voc, **changes) -> Config:
    base = dict(data_root=str(tiny_voc), num_workers=0, image_size=32, cache="none", batch_size=4)
    return Config(**{**base, **changes}).validate()


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_match_the_workers_loader(workers, tiny_voc, vocseg_cache, torch_global_state):
    """train_loader with augment_on: device yields raw windows (pickled from a worker, too); finished on the
    device they are the workers' loader's batches, seeded alike (order and draws from the same generators)."""
    options = dict(num_workers=workers, photometric=True, copy_paste=0.5, seed=3)
    data = build_datasets(_config(tiny_voc, **options), None)
    torch.manual_seed(7)
    reference = list(train_loader(data, _config(tiny_voc, **options, augment_on="workers"), 1, CPU, 0, 1))
    torch.manual_seed(7)
    raw = list(train_loader(data, _config(tiny_voc, **options, augment_on="device"), 1, CPU, 0, 1))
    assert len(raw) == len(reference) == 3 and all(isinstance(b, RawBatch) for b in raw)
    augment = DeviceAugment(data.mean, data.std, CPU)
    for (ref_images, ref_masks), batch in zip(reference, raw):
        images, masks = augment(batch)
        assert torch.equal(masks, ref_masks)
        assert float(_levels(images, ref_images).max()) <= 8.0 + 1e-3


def test_raw_items_are_copies_of_the_window(tiny_voc, vocseg_cache, torch_global_state):
    """A worker must not send views of the RAM cache (the whole buffer would move to shared memory)."""
    data = build_datasets(_config(tiny_voc, cache="ram"), None)
    raw = RawTrainItems(data.train)
    torch.manual_seed(0)
    image, mask, plan = raw[0]
    cache_buffer = data.train.cache.buffer.untyped_storage().data_ptr()
    assert image.untyped_storage().data_ptr() != cache_buffer and mask.untyped_storage().data_ptr() != cache_buffer
    y0, y1, x0, x1 = plan.geometry.window
    assert image.shape == (y1 - y0, x1 - x0, 3) and image.is_contiguous() and mask.shape == (y1 - y0, x1 - x0)
    source, source_mask = data.train.load_tensors(0)
    assert torch.equal(image, source[:, y0:y1, x0:x1].permute(1, 2, 0))
    assert torch.equal(mask, source_mask[y0:y1, x0:x1])
