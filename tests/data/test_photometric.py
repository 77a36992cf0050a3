"""PhotometricDistortion (vocseg.data.photometric): mmsegmentation's ranges, the image only, reproducible."""

from __future__ import annotations

import colorsys

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from vocseg.data.photometric import (
    PhotometricDistortion,
    PhotometricParams,
    hsv_to_rgb,
    photometric_distort,
    rgb_to_hsv,
)
from vocseg.errors import VocsegError

SEEDS = range(60)  # with p = 1 every draw is used; 60 draws cover both ends of each range
NEUTRAL = {"brightness_delta": 0.0, "contrast_range": (1.0, 1.0), "saturation_range": (1.0, 1.0), "hue_delta": 0.0}


def _only(**kwargs) -> PhotometricDistortion:
    """The transform with every step neutral except those given, each applied (p = 1)."""
    return PhotometricDistortion(**{**NEUTRAL, **kwargs}, p=1.0)


def _flat(value: int, h: int = 5, w: int = 7) -> tv_tensors.Image:
    return tv_tensors.Image(torch.full((3, h, w), value, dtype=torch.uint8))


def _colour(rgb: tuple[int, int, int], h: int = 4, w: int = 6) -> tv_tensors.Image:
    return tv_tensors.Image(torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).clone())


def _random_image(seed: int, h: int = 13, w: int = 17) -> tv_tensors.Image:
    g = torch.Generator().manual_seed(seed)
    return tv_tensors.Image(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))


def _hsv_of(image: torch.Tensor) -> tuple[float, float, float]:
    r, g, b = (image[:, 0, 0].double() / 255).tolist()
    return colorsys.rgb_to_hsv(r, g, b)


# ----------------------------------------------------------------------------- ranges of each step


def test_brightness_shift_stays_within_32_levels_and_both_signs_occur() -> None:
    t = _only(brightness_delta=32.0)
    shifts = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        out = t(_flat(128))
        assert out.dtype == torch.uint8 and (out == out[0, 0, 0]).all()  # one shift for every pixel
        shifts.append(int(out[0, 0, 0]) - 128)
    assert all(-32 <= s <= 32 for s in shifts)
    assert min(shifts) < -16 and max(shifts) > 16


def test_brightness_on_float_images_uses_the_same_shift_on_a_0_1_scale() -> None:
    t = _only(brightness_delta=32.0)
    image = tv_tensors.Image(torch.full((3, 4, 4), 0.5))
    for seed in SEEDS:
        torch.manual_seed(seed)
        out = t(image)
        assert out.dtype == torch.float32
        assert abs(float(out[0, 0, 0]) - 0.5) <= 32 / 255 + 1e-6


def test_contrast_factor_within_bounds() -> None:
    t = _only(contrast_range=(0.5, 1.5))
    factors = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        factors.append(float(t(_flat(100))[0, 0, 0]) / 100)
    assert all(0.5 - 0.005 <= f <= 1.5 + 0.005 for f in factors)
    assert min(factors) < 0.7 and max(factors) > 1.3


def test_contrast_multiplies_and_clips_like_mmsegmentation() -> None:
    image = torch.tensor([10, 100, 200], dtype=torch.uint8).view(3, 1, 1)
    out = photometric_distort(image, PhotometricParams(contrast=1.5))
    assert out.flatten().tolist() == [15, 150, 255]  # x * a, not a blend toward the mean; clipped at 255


def test_saturation_scales_hsv_saturation_within_bounds_and_keeps_hue_and_value() -> None:
    t = _only(saturation_range=(0.5, 1.5))
    h0, s0, v0 = _hsv_of(_colour((200, 140, 100)))  # s0 = 0.5
    for seed in SEEDS:
        torch.manual_seed(seed)
        h, s, v = _hsv_of(t(_colour((200, 140, 100))))
        assert 0.5 * s0 - 0.01 <= s <= 1.5 * s0 + 0.01
        assert abs(h - h0) < 0.01 and abs(v - v0) < 0.01


def test_hue_shift_within_18_opencv_units() -> None:
    t = _only(hue_delta=18.0)
    h0, s0, v0 = _hsv_of(_colour((200, 60, 60)))  # hue 0 (red): shifts wrap around 1.0
    shifts = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        h, s, v = _hsv_of(t(_colour((200, 60, 60))))
        shifts.append((h - h0 + 0.5) % 1.0 - 0.5)  # signed circular difference, in turns
        assert abs(s - s0) < 0.02 and abs(v - v0) < 0.01
    assert all(abs(d) <= 18 / 180 + 0.01 for d in shifts)
    assert min(shifts) < -0.05 and max(shifts) > 0.05


def test_contrast_goes_before_or_after_saturation_and_hue_as_drawn() -> None:
    image = torch.full((3, 1, 1), 100, dtype=torch.uint8)
    first = photometric_distort(image, PhotometricParams(brightness=20, contrast=1.5, contrast_first=True))
    last = photometric_distort(image, PhotometricParams(brightness=20, contrast=1.5, contrast_first=False))
    assert int(first[0, 0, 0]) == int(last[0, 0, 0]) == 180  # brightness always first
    # Contrast clips; a hue rotation of 1/6 turn does not commute with that clipping, so the order shows.
    pixel = torch.tensor([0.8, 0.4, 0.2]).view(3, 1, 1)
    contrast, hue = PhotometricParams(contrast=1.5), PhotometricParams(hue=1 / 6)
    a = photometric_distort(pixel, PhotometricParams(contrast=1.5, hue=1 / 6, contrast_first=True))
    b = photometric_distort(pixel, PhotometricParams(contrast=1.5, hue=1 / 6, contrast_first=False))
    assert torch.allclose(a, photometric_distort(photometric_distort(pixel, contrast), hue), atol=1e-6)
    assert torch.allclose(b, photometric_distort(photometric_distort(pixel, hue), contrast), atol=1e-6)
    assert not torch.allclose(a, b, atol=1e-3)
    orders = set()
    t = PhotometricDistortion(p=1.0)
    for seed in SEEDS:
        torch.manual_seed(seed)
        orders.add(t.make_params([])["params"].contrast_first)
    assert orders == {True, False}


# ----------------------------------------------------------------------------- image only, probability, seeding


def test_mask_passes_through_unchanged() -> None:
    mask = tv_tensors.Mask(torch.randint(0, 21, (13, 17), dtype=torch.uint8))
    mask[0, :5] = 255
    before = mask.clone()
    torch.manual_seed(0)
    image, out_mask = PhotometricDistortion(p=1.0)(_random_image(0), mask)
    assert out_mask is mask and isinstance(out_mask, tv_tensors.Mask)
    assert torch.equal(out_mask, before)
    assert isinstance(image, tv_tensors.Image) and not torch.equal(image, _random_image(0))


def test_probability_zero_is_the_identity() -> None:
    t = PhotometricDistortion(p=0.0)
    for seed in range(10):
        image = _random_image(seed)
        torch.manual_seed(seed)
        assert torch.equal(t(image), image)
    floats = torch.rand(3, 5, 5)
    assert torch.equal(t(floats), floats)


def test_each_step_is_applied_about_half_the_time() -> None:
    t = PhotometricDistortion()
    torch.manual_seed(0)
    draws = [t.make_params([])["params"] for _ in range(2000)]
    for applied in (
        [d.brightness != 0 for d in draws],
        [d.contrast != 1 for d in draws],
        [d.saturation != 1 for d in draws],
        [d.hue != 0 for d in draws],
    ):
        assert 0.45 < np.mean(applied) < 0.55


def test_deterministic_under_a_seed() -> None:
    t = PhotometricDistortion()
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append([t(_random_image(i)) for i in range(8)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    torch.manual_seed(124)
    other = [t(_random_image(i)) for i in range(8)]
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_works_inside_v2_compose_with_geometry_and_on_pil_images() -> None:
    pipeline = v2.Compose([v2.RandomHorizontalFlip(1.0), PhotometricDistortion(p=1.0)])
    mask = tv_tensors.Mask(torch.arange(13 * 17, dtype=torch.int64).view(13, 17) % 21)
    torch.manual_seed(0)
    image, out_mask = pipeline(_random_image(1), mask)
    assert image.shape == (3, 13, 17) and torch.equal(out_mask, mask.flip(-1))
    pil = PIL.Image.fromarray(np.full((6, 8, 3), 90, np.uint8))
    out = _only(brightness_delta=32.0)(pil)
    assert isinstance(out, PIL.Image.Image) and out.size == (8, 6)
    with pytest.raises(VocsegError, match="RGB"):
        PhotometricDistortion(p=1.0)(PIL.Image.new("L", (4, 4)))


def test_bad_settings_and_inputs_are_errors() -> None:
    with pytest.raises(VocsegError, match="contrast_range"):
        PhotometricDistortion(contrast_range=(1.5, 0.5))
    with pytest.raises(VocsegError, match="probability"):
        PhotometricDistortion(p=1.5)
    with pytest.raises(VocsegError, match="RGB"):
        photometric_distort(torch.zeros(1, 4, 4, dtype=torch.uint8), PhotometricParams(brightness=3))


# ----------------------------------------------------------------------------- colour conversion


def test_hsv_round_trip_and_agreement_with_colorsys() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, 9, 11, generator=g)
    rgb[:, 0, 0] = 0.4  # grey
    rgb[:, 0, 1] = 0.0  # black
    hsv = rgb_to_hsv(rgb)
    for y, x in ((0, 0), (0, 1), (3, 4), (8, 10)):
        expected = colorsys.rgb_to_hsv(*rgb[:, y, x].double().tolist())
        assert torch.allclose(hsv[:, y, x].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(hsv_to_rgb(hsv), rgb, atol=1e-5)
    batch = torch.rand(2, 3, 4, 5, generator=g)  # leading batch dimensions work too
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(batch)), batch, atol=1e-5)


def test_hsv_conversions_match_colorsys_on_every_pixel_ties_and_sector_edges() -> None:
    """Every pixel of an 8-bit image (many channels tie for the maximum), pixels whose maximum two or three
    channels share, and hues on the six sector edges and just below a full turn: both ways, per pixel,
    against Python's colorsys (hue compared on the circle)."""
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 8, (3, 12, 12), generator=g).float() * (255.0 / 7) / 255.0  # coarse levels: ties
    rgb[:, 0, :6] = torch.tensor([[0.8, 0.8, 0.2], [0.2, 0.8, 0.8], [0.8, 0.2, 0.8], [0.5] * 3, [1.0] * 3, [0.0] * 3]).T
    pixels = rgb.reshape(3, -1).T.double().tolist()
    expected = torch.tensor([colorsys.rgb_to_hsv(*p) for p in pixels], dtype=torch.float64).T.reshape(3, 12, 12)
    hsv = rgb_to_hsv(rgb).double()
    hue_gap = torch.remainder(hsv[0] - expected[0] + 0.5, 1.0) - 0.5
    assert hue_gap.abs().max() < 1e-5 and torch.allclose(hsv[1:], expected[1:], atol=1e-5)

    hues = torch.tensor([0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 0.999999, 0.25, 0.6, 1.3, -0.2])
    hsv = torch.stack((hues, torch.full_like(hues, 0.7), torch.full_like(hues, 0.9))).view(3, 1, -1)
    want = [colorsys.hsv_to_rgb(h % 1.0, 0.7, 0.9) for h in hues.double().tolist()]
    assert torch.allclose(hsv_to_rgb(hsv).view(3, -1).T.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5)
