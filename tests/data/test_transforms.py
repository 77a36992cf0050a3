"""Train/eval presets: image/mask alignment through every random step, padding, dtypes, collation.

The test image encodes where each pixel came from: channel 0 = source row + 1, channel 1 = source
column + 1, channel 2 = a code for the source pixel's label. Padding is 0 in every channel, so
after undoing the normalisation each output pixel says which input pixel (and label) it shows,
and the output mask must agree with it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as nnF
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from vocseg.data import transforms as T
from vocseg.data.transforms import (
    SegmentationPresetEval,
    SegmentationPresetTrain,
    collate_pad,
    denormalize,
    rotate_pair,
)
from vocseg.errors import VocsegError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
H, W = 97, 131  # odd sizes on purpose
LABELS = torch.tensor(list(range(21)) + [255])


def _code(label: torch.Tensor) -> torch.Tensor:
    """Label 0..20 -> 10..210, void 255 -> 250: far apart so rounding recovers them."""
    return torch.where(label == 255, 250, (label + 1) * 10)


def _decode(code: torch.Tensor) -> torch.Tensor:
    label = (code.float() / 10).round().long() - 1
    return torch.where(label == 24, 255, label)


def _block_mask(block: int, seed: int) -> torch.Tensor:
    """A (H, W) label map of constant ``block``-sized squares, labels drawn from 0..20 and 255."""
    g = torch.Generator().manual_seed(seed)
    grid = LABELS[torch.randint(0, len(LABELS), (H // block + 1, W // block + 1), generator=g)]
    return grid.repeat_interleave(block, 0).repeat_interleave(block, 1)[:H, :W]


def _encoded_pair(mask: torch.Tensor) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    rows = torch.arange(1, H + 1).view(H, 1).expand(H, W)
    cols = torch.arange(1, W + 1).view(1, W).expand(H, W)
    image = torch.stack([rows, cols, _code(mask)]).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask.to(torch.uint8))


def _run(preset, image, mask, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``preset`` under ``seed``; return (output image, output mask, raw uint8-valued image)."""
    torch.manual_seed(seed)
    out_img, out_mask = preset(image, mask)
    return out_img, out_mask, denormalize(out_img, MEAN, STD).long()


def _flip_state(coords: torch.Tensor, valid: torch.Tensor, dim: int) -> bool:
    """Whether source coordinates run backwards along ``dim``; asserts they are contiguous (step ±1)."""
    a, b = coords.narrow(dim, 0, coords.shape[dim] - 1), coords.narrow(dim, 1, coords.shape[dim] - 1)
    both = valid.narrow(dim, 0, valid.shape[dim] - 1) & valid.narrow(dim, 1, valid.shape[dim] - 1)
    steps = torch.unique((b - a)[both]).tolist()
    assert steps in ([1], [-1]), f"not a contiguous, flipped-or-not window: steps {steps}"
    return steps == [-1]


@pytest.mark.parametrize("crop_size", [64, 113, 160, None])
def test_train_crop_and_flips_keep_image_and_mask_aligned_exactly(crop_size: int | None) -> None:
    # 113 pads the height only, 160 pads both sides; None = native size, flips only.
    mask_in = _block_mask(1, seed=0)  # every pixel its own random label
    image, mask = _encoded_pair(mask_in)
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=crop_size, scale_range=None)
    flips = set()
    for seed in range(30):
        out_img, out_mask, raw = _run(preset, image, mask, seed)
        size = (crop_size, crop_size) if crop_size else (H, W)
        assert out_img.shape == (3, *size) and out_img.dtype == torch.float32
        assert out_mask.shape == size and out_mask.dtype == torch.int64

        pad = raw.sum(0) == 0
        assert (out_mask[pad] == 255).all()
        keep = ~pad
        src_r, src_c = raw[0] - 1, raw[1] - 1
        # Mask pixel == label of the input pixel the image pixel came from, everywhere.
        assert torch.equal(out_mask[keep], mask_in[src_r[keep], src_c[keep]].long())
        assert torch.equal(raw[2][keep], _code(mask_in)[src_r[keep], src_c[keep]])
        if crop_size is not None and crop_size >= max(H, W):
            assert keep.sum().item() == H * W  # padding never cuts the image
        flips.add((_flip_state(src_c, keep, 1), _flip_state(src_r, keep, 0)))
    # All four (hflip, vflip) combinations occur in 30 runs.
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_flips_can_be_disabled() -> None:
    image, mask = _encoded_pair(_block_mask(1, seed=1))
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=None, hflip_prob=0.0, vflip_prob=0.0)
    for seed in range(5):
        _, out_mask, raw = _run(preset, image, mask, seed)
        assert torch.equal(out_mask, mask.long())
        assert torch.equal(raw.to(torch.uint8), image.as_subclass(torch.Tensor))


@pytest.mark.parametrize("crop_size", [64, 160])
def test_train_random_scale_keeps_alignment_and_label_set(crop_size: int) -> None:
    mask_in = _block_mask(16, seed=2)
    image, mask = _encoded_pair(mask_in)
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=crop_size, scale_range=(0.5, 2.0))
    allowed = set(mask_in.unique().tolist()) | {255}
    scales = []
    for seed in range(30):
        _, out_mask, raw = _run(preset, image, mask, seed)
        assert out_mask.shape == (crop_size, crop_size) and out_mask.dtype == torch.int64
        assert set(out_mask.unique().tolist()) <= allowed  # nearest neighbour invents no labels

        pad = raw.sum(0) == 0  # resampled coordinates are >= 1, so only padding is all-zero
        assert (out_mask[pad] == 255).all()
        # Away from block edges (mask constant over a 5x5 neighbourhood) bilinear image values
        # are exact, so the label decoded from the image and the one at its source coordinates
        # must both equal the mask. The crop's 2-pixel border is left out: a block edge just
        # outside the window blurs into it unseen by the neighbourhood test.
        m = out_mask[None, None].float()
        flat = nnF.max_pool2d(m, 5, 1, 2) == -nnF.max_pool2d(-m, 5, 1, 2)
        inside = torch.zeros_like(pad)
        inside[2:-2, 2:-2] = True
        interior = flat[0, 0] & inside & ~pad
        if interior.sum() < 50:
            continue
        from_code = _decode(raw[2])
        src_r = (raw[0] - 1).clamp(0, H - 1)
        src_c = (raw[1] - 1).clamp(0, W - 1)
        from_coords = mask_in[src_r, src_c].long()
        assert (from_code[interior] == out_mask[interior]).float().mean() >= 0.99
        assert (from_coords[interior] == out_mask[interior]).float().mean() >= 0.99

        # Source columns advance by ~1/scale per output column.
        rows = (~pad).any(1).nonzero()[0]
        cols = (~pad)[rows[0]].nonzero()[:, 0]
        if len(cols) > 10:
            span = (raw[1][rows[0], cols[-1]] - raw[1][rows[0], cols[0]]).abs().item()
            scales.append((len(cols) - 1) / max(span, 1))
    assert min(scales) < 0.8 and max(scales) > 1.3  # both down- and up-scaling happened


def test_train_accepts_plain_tensors_and_matches_tv_tensors() -> None:
    image, mask = _encoded_pair(_block_mask(4, seed=3))
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=120)
    a = _run(preset, image, mask, seed=7)
    b = _run(preset, image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert type(a[0]) is torch.Tensor and type(a[1]) is torch.Tensor


def test_eval_preset_is_native_size_deterministic_and_normalises() -> None:
    g = torch.Generator().manual_seed(4)
    image = tv_tensors.Image(torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=g))
    mask = tv_tensors.Mask(_block_mask(1, seed=4).to(torch.uint8))
    preset = SegmentationPresetEval(MEAN, STD)
    out_img, out_mask = preset(image, mask)
    again_img, again_mask = preset(image, mask)
    assert torch.equal(out_img, again_img) and torch.equal(out_mask, again_mask)
    assert out_img.shape == (3, H, W) and out_mask.shape == (H, W)
    assert out_mask.dtype == torch.int64 and torch.equal(out_mask, mask.long())
    expected = (image.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out_img, expected.as_subclass(torch.Tensor), atol=1e-5, rtol=0)
    assert torch.equal(denormalize(out_img, MEAN, STD), image.as_subclass(torch.Tensor))


def test_eval_preset_resize_short_side_and_pil_input() -> None:
    mask_np = _block_mask(16, seed=5).numpy().astype(np.uint8)
    pil_mask = Image.fromarray(mask_np, mode="L").convert("P")
    pil_image = Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8))
    out_img, out_mask = SegmentationPresetEval(MEAN, STD, resize=50)(pil_image, pil_mask)
    assert out_img.shape == (3, 50, round(W * 50 / H)) and out_mask.shape == out_img.shape[1:]
    assert out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(np.unique(mask_np).tolist())


def test_mismatched_image_and_mask_sizes_raise() -> None:
    image = tv_tensors.Image(torch.zeros(3, 10, 12, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.zeros(10, 11, dtype=torch.uint8))
    with pytest.raises(VocsegError, match="size"):
        SegmentationPresetEval(MEAN, STD)(image, mask)


def test_collate_pad_shapes_and_pad_values() -> None:
    a = (torch.rand(3, 5, 7), torch.randint(0, 21, (5, 7)))
    b = (torch.rand(3, 8, 4), torch.randint(0, 21, (8, 4)))
    images, masks = collate_pad([a, b])
    assert images.shape == (2, 3, 8, 7) and masks.shape == (2, 8, 7)
    assert images.dtype == torch.float32 and masks.dtype == torch.int64
    assert torch.equal(images[0, :, :5, :7], a[0]) and torch.equal(masks[0, :5, :7], a[1])
    assert torch.equal(images[1, :, :8, :4], b[0]) and torch.equal(masks[1, :8, :4], b[1])
    assert (images[0, :, 5:] == 0).all() and (masks[0, 5:] == 255).all()
    assert (images[1, :, :, 4:] == 0).all() and (masks[1, :, 4:] == 255).all()
    _, masks = collate_pad([a, b], ignore_index=-1)
    assert (masks[1, :, 4:] == -1).all()
    with pytest.raises(VocsegError):
        collate_pad([])


def test_denormalize_handles_batches() -> None:
    raw = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    norm = (raw.float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    out = denormalize(norm, MEAN, STD)
    assert out.dtype == torch.uint8 and torch.equal(out, raw)


def test_bad_scale_range_raises() -> None:
    with pytest.raises(VocsegError):
        SegmentationPresetTrain(MEAN, STD, scale_range=(0.0, 2.0))


# ----------------------------------------------------------------------------- rescale only the crop's window


def _ramp_pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float image whose channels are the source row and column; mask of 7x5 blocks."""
    rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    mask = ((rows // 7 * 31 + cols // 5) % 200).to(torch.uint8)
    return torch.stack([rows, cols, rows + cols]), mask


def _full_rescale_then_crop(image, mask, scaled, crop, state):
    """The reference: rescale the whole image (v2 kernels), then the crop the preset draws from ``state``."""
    full = F.resize_image(image, list(scaled), antialias=True)
    full_mask = F.resize_mask(mask[None], list(scaled), interpolation=InterpolationMode.NEAREST_EXACT)[0]
    torch.set_rng_state(state)
    (r0, r1, pr), (c0, c1, pc) = T._crop_range(scaled[0], crop), T._crop_range(scaled[1], crop)
    return full[:, r0:r1, c0:c1], full_mask[r0:r1, c0:c1], (pr, pc)


@pytest.mark.parametrize("h, w, s, crop", [(40, 60, 1.7, 128), (97, 131, 0.6, 90), (50, 50, 1.03, 64)])
def test_window_rescale_is_exact_when_the_crop_holds_the_whole_image(h, w, s, crop) -> None:
    image, mask = _ramp_pair(h, w)
    scaled = (round(h * s), round(w * s))
    state = torch.get_rng_state()
    out, out_mask = T._scale_and_crop(image, mask, scaled, crop, 255)
    ref, ref_mask, (pr, pc) = _full_rescale_then_crop(image, mask, scaled, crop, state)
    got = out[:, pr : pr + ref.shape[1], pc : pc + ref.shape[2]]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    assert torch.equal(out_mask[pr : pr + ref.shape[1], pc : pc + ref.shape[2]], ref_mask)
    assert (out_mask == 255).sum() == crop * crop - ref_mask.numel()


@pytest.mark.parametrize("seed", range(12))
def test_window_rescale_matches_full_rescale_up_to_half_an_output_pixel(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(60, 300, (2,), generator=g))
    s = float(torch.empty(()).uniform_(1.0, 2.5, generator=g))  # enlarging: bilinear reproduces ramps exactly
    scaled, crop = (round(h * s), round(w * s)), int(torch.randint(32, 160, (), generator=g))
    image, mask = _ramp_pair(h, w)
    torch.manual_seed(seed)
    state = torch.get_rng_state()
    out, out_mask = T._scale_and_crop(image, mask, scaled, crop, 255)
    ref, ref_mask, (pr, pc) = _full_rescale_then_crop(image, mask, scaled, crop, state)
    got = out[:, pr : pr + ref.shape[1], pc : pc + ref.shape[2]]
    # Source coordinates differ by at most half an output pixel (the window's start is rounded) ...
    for axis, scale in ((0, scaled[0] / h), (1, scaled[1] / w)):
        assert (got[axis] - ref[axis]).abs().max() <= 0.5 / scale + 1e-3
    # ... so the mask differs from the full rescale only next to label edges.
    assert (out_mask[pr : pr + ref.shape[1], pc : pc + ref.shape[2]] != ref_mask).float().mean() < 0.2


@pytest.mark.parametrize("scale_range", [(1.03, 1.06), (0.95, 0.99)])
def test_scales_near_one_keep_image_and_mask_aligned(scale_range) -> None:
    # ATen copies an axis whose input and output sizes agree, ignoring the scale: the window must avoid that.
    mask_in = _block_mask(1, seed=6)
    image, mask = _encoded_pair(mask_in)
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=48, scale_range=scale_range, hflip_prob=0, vflip_prob=0)
    for seed in range(20):
        _, out_mask, raw = _run(preset, image, mask, seed)
        src_r, src_c = raw[0] - 1, raw[1] - 1
        # Nearest-exact picks the source pixel nearest the bilinear sample point: within half a pixel.
        exact = (raw[0] == raw[0].round()) & (raw[1] == raw[1].round())
        assert torch.equal(out_mask[exact], mask_in[src_r[exact], src_c[exact]].long())


def test_float_images_are_normalised_without_rescaling_to_0_1() -> None:
    image = torch.rand(3, H, W)
    mask = torch.zeros(H, W, dtype=torch.uint8)
    out, _ = SegmentationPresetEval(MEAN, STD)(image, mask)
    expected = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_photometric_sees_the_uint8_crop_after_flips() -> None:
    seen = []

    def photometric(image: torch.Tensor) -> torch.Tensor:
        seen.append((image.dtype, tuple(image.shape)))
        return torch.full_like(image, 200)

    image, mask = _encoded_pair(_block_mask(4, seed=7))
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=64, photometric=photometric)
    out, out_mask = preset(image, mask)
    assert seen == [(torch.uint8, (3, 64, 64))]
    assert torch.equal(denormalize(out, MEAN, STD), torch.full((3, 64, 64), 200, dtype=torch.uint8))
    assert out_mask.dtype == torch.int64


def test_outputs_are_contiguous_for_channel_first_views_of_interleaved_memory() -> None:
    hwc = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8)
    image = hwc.permute(2, 0, 1)  # how torchvision.io and the PIL fallback return decoded images
    mask = _block_mask(4, seed=8).to(torch.uint8)
    for preset in (SegmentationPresetEval(MEAN, STD), SegmentationPresetTrain(MEAN, STD, crop_size=64)):
        out, _ = preset(image, mask)
        assert out.is_contiguous()
    a, _ = SegmentationPresetEval(MEAN, STD)(image, mask)
    b, _ = SegmentationPresetEval(MEAN, STD)(image.contiguous(), mask)
    assert torch.equal(a, b)


def test_bad_shapes_and_normalisation_raise() -> None:
    with pytest.raises(VocsegError, match="expected an image"):
        SegmentationPresetEval(MEAN, STD)(torch.zeros(H, W, dtype=torch.uint8), torch.zeros(H, W, dtype=torch.uint8))
    with pytest.raises(VocsegError, match="std > 0"):
        SegmentationPresetEval(MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(VocsegError, match="crop_size"):
        SegmentationPresetTrain(MEAN, STD, crop_size=0)


def test_collate_stacks_equal_sizes_like_padding_would() -> None:
    batch = [(torch.rand(3, 6, 7), torch.randint(0, 21, (6, 7))) for _ in range(3)]
    images, masks = collate_pad(batch)
    assert torch.equal(images, torch.stack([b[0] for b in batch])) and torch.equal(
        masks, torch.stack([b[1] for b in batch])
    )
    with pytest.raises(VocsegError, match="sample 1"):
        collate_pad([batch[0], (torch.rand(3, 6, 7), torch.zeros(6, 8))])


def test_rotate_pair_by_90_degrees_is_rot90_and_leaves_no_void():
    """A quarter turn of a square maps pixels onto pixels: the image and mask must equal torch.rot90."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8)
    mask = torch.randint(0, 21, (16, 16), generator=g, dtype=torch.uint8)
    rotated, rotated_mask = rotate_pair(image, mask, 90.0)  # counter-clockwise
    assert torch.equal(rotated_mask, torch.rot90(mask, 1, dims=(0, 1)))
    assert (rotated.int() - torch.rot90(image, 1, dims=(1, 2)).int()).abs().max() <= 1


def test_rotation_keeps_labels_and_voids_the_corners():
    """Up to 30 degrees either way: labels stay labels (nearest), corners outside the image become void
    (255, ignored by the loss) in the mask and 0 in the image; without rotate the preset draws no angle."""
    image = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    mask = torch.full((40, 40), 7, dtype=torch.uint8)
    preset = SegmentationPresetTrain([0.0] * 3, [1.0] * 3, 40, 0.0, 0.0, None, None, rotate=30.0)
    voids = []
    for seed in range(8):
        torch.manual_seed(seed)
        x, y = preset(image, mask)
        assert set(y.unique().tolist()) <= {7, 255} and y[20, 20] == 7  # the centre never leaves
        voids.append(int((y == 255).sum()))
        assert (x[:, y == 255] <= 200 / 255).all()
    assert max(voids) > 0 and min(voids) < max(voids)  # angles differ from draw to draw
    still = SegmentationPresetTrain([0.0] * 3, [1.0] * 3, 40, 0.0, 0.0, None, None)
    torch.manual_seed(0)
    _, y = still(image, mask)
    assert (y == 7).all()
    with pytest.raises(VocsegError, match="rotate"):
        SegmentationPresetTrain([0.0] * 3, [1.0] * 3, 40, rotate=-5)
