"""vocseg.data.fingerprint: mask-derived figures against hand-computed values, the separability figures on
pictures made to have (or lack) colour and texture cues, sampling, and the on-disk cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from vocseg.data import fingerprint as fp
from vocseg.data.cache import apply_cache
from vocseg.data.classes import voc_palette
from vocseg.data.fingerprint import Fingerprint, compute_fingerprint, dataset_fingerprint, sample_order
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError

V = 255  # void
SCALE_INDEX = {factor: j for j, factor in enumerate(fp.SCALE_FACTORS)}


def hand_made_masks() -> dict[str, np.ndarray]:
    """Four masks, classes 0..3 (3 never drawn). Objects: a: one 8x8 of class 1; b: two 2x2 of class 1 and a
    void row; c: a 4x4 of class 2 and two diagonal class-2 pixels (one 8-connected object); d: a 2x2 of class 1."""
    a = np.zeros((8, 16), np.uint8)
    a[:, 8:] = 1
    b = np.zeros((8, 16), np.uint8)
    b[1:3, 1:3] = 1
    b[5:7, 10:12] = 1
    b[7, :] = V
    c = np.zeros((16, 8), np.uint8)
    c[0:4, 0:4] = 2
    c[10, 1] = c[11, 2] = 2
    d = np.zeros((24, 32), np.uint8)
    d[22:, 30:] = 1
    return {"a": a, "b": b, "c": c, "d": d}


@pytest.fixture
def hand_made(make_voc):
    rng = np.random.default_rng(0)
    samples = {k: (rng.integers(0, 256, (*m.shape, 3), dtype=np.uint8), m) for k, m in hand_made_masks().items()}
    return VOCSegmentation(make_voc(samples), "train", num_classes=4)


def test_mask_figures_match_hand_computed_values(hand_made):
    f = compute_fingerprint(hand_made, max_images=None)
    assert (f.num_images, f.mask_images, f.sampled_images, f.num_classes) == (4, 4, 4, 4)
    # heights 8 8 16 24, widths 16 16 8 32, long sides 16 16 16 32; linear percentiles at positions 0.3, 1.5, 2.7
    assert f.height == pytest.approx(dict(min=8, p10=8, median=12, p90=16 + 0.7 * 8, max=24))
    assert f.width == pytest.approx(dict(min=8, p10=8 + 0.3 * 8, median=16, p90=16 + 0.7 * 16, max=32))
    assert f.long_side == pytest.approx(dict(min=16, p10=16, median=16, p90=16 + 0.7 * 16, max=32))
    assert f.most_common_size == [8, 16] and f.share_other_size == pytest.approx(0.5)
    # class 0: 64 + 104 + 110 + 764, class 1: 64 + 8 + 4, class 2: 16 + 2; 16 void of 1152 pixels
    assert f.class_pixel_share == pytest.approx([1042 / 1136, 76 / 1136, 18 / 1136, 0.0])
    assert f.class_image_share == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert f.void_share == pytest.approx(16 / 1152)
    assert f.missing_classes == [3]  # reported, not raised
    assert f.imbalance == pytest.approx(76 / 18)


def test_objects_match_hand_computed_values(hand_made):
    f = compute_fingerprint(hand_made, max_images=None)
    assert f.object_count == [0, 4, 2, 0]  # the diagonal pair is one object (8-connected); background not counted
    assert f.objects_per_image == pytest.approx(dict(mean=1.5, median=1.5, max=2))
    # class 1: 64, 4, 4 (of 128 px images) and 4 (of 768); class 2: 16 and 2 (of 128)
    assert f.object_pixels_median == [None, 4.0, 9.0, None]
    assert f.object_pixels_p10 == pytest.approx([None, 4.0, 2 + 0.1 * 14, None])
    shares1 = sorted([0.5, 4 / 128, 4 / 128, 4 / 768])
    assert f.object_share_median[1] == pytest.approx(4 / 128)
    assert f.object_share_p10[1] == pytest.approx(shares1[0] + 0.3 * (shares1[1] - shares1[0]))
    assert f.object_share_median[2] == pytest.approx(9 / 128)
    # every object: 2 4 4 4 16 64
    assert f.all_objects["pixels_median"] == 4.0 and f.all_objects["pixels_p10"] == pytest.approx(3.0)


def two_class_split(make_voc, draw, n: int = 6) -> VOCSegmentation:
    """``n`` 64x64 images from ``draw(i) -> (image, mask)``, classes 0..2."""
    return VOCSegmentation(make_voc({f"im{i}": draw(i) for i in range(n)}), "train", num_classes=3)


def striped_halves(period: int):
    """Class 1: vertical grey stripes (64/192, ``period`` px) on one half; class 2: flat 128, the mean of the
    stripes, on the other; the halves swap from image to image. The classes differ by texture only."""

    def draw(i):
        row = np.where(np.arange(64) % period < period // 2, 64, 192).astype(np.uint8)
        image = np.full((64, 64, 3), 128, np.uint8)
        mask = np.full((64, 64), 2, np.uint8)
        half = np.s_[:, :32] if i % 2 else np.s_[:, 32:]
        image[half] = np.broadcast_to(row[None, :, None], (64, 64, 3))[half]
        mask[half] = 1
        return image, mask

    return draw


def flat_objects(i):
    """A red and a blue 24x48 rectangle on dark grey: large flat objects with distinct colours."""
    image = np.full((64, 64, 3), 40, np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    image[8:56, 4:28], mask[8:56, 4:28] = (200, 30, 30), 1
    image[8:56, 36:60], mask[8:56, 36:60] = (30, 30, 200), 2
    return image, mask


def test_finest_scale_is_fine_for_fine_texture_and_coarse_for_flat_objects(make_voc, tmp_path):
    # 2 px stripes average to the flat class's grey at 1/2 (blocks of 2); 8 px stripes survive to 1/4.
    for period, finest in ((2, 1.0), (8, 0.25)):
        f = compute_fingerprint(two_class_split(make_voc, striped_halves(period), n=4))
        assert f.scale_separability[0] > 0.9 and f.finest_scale == finest, (period, f.scale_separability)
        assert f.scale_separability[SCALE_INDEX[finest] + 1] < 0.1
    f = compute_fingerprint(two_class_split(lambda *a: make_voc(*a, root=tmp_path / "flat"), flat_objects))
    assert f.scale_separability[0] > 0.9 and f.finest_scale == 0.125
    assert f.colour_separability > 0.95


def test_colour_separability_is_near_zero_without_colour_cues(make_voc, tmp_path):
    def random_pixels(i):  # colours and labels drawn independently
        rng = np.random.default_rng(i)
        return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), rng.integers(0, 3, (64, 64)).astype(np.uint8)

    def one_colour(i):  # every class the same (per-image) colour
        mask = np.zeros((64, 64), np.uint8)
        mask[:, 20:40], mask[40:, :16] = 1, 2
        return np.full((64, 64, 3), np.random.default_rng(i).integers(0, 256, 3), np.uint8), mask

    for name, draw in (("random", random_pixels), ("same", one_colour)):
        f = compute_fingerprint(two_class_split(lambda *a, n=name: make_voc(*a, root=tmp_path / n), draw))
        assert f.colour_separability < 0.1, (name, f.colour_separability)
        assert f.finest_scale is None  # nothing local separates the classes, so resolution cannot be judged


def test_separability_and_finest_scale_by_hand():
    """Two classes, one feature: 0 0 0 1 | 1 1 -> means 0.25 and 1; recalls 3/4 and 1 -> balanced 7/8,
    rescaled (7/8 - 1/2) / (1/2) = 3/4. Scored on a copy where class 1 looks like class 0: recall 3/4 and 0."""
    x = np.array([[0.0], [0], [0], [1], [1], [1]])
    y = np.array([0, 0, 0, 0, 1, 1])
    assert fp.separability(x, y) == pytest.approx(0.75)
    assert fp.separability(x, y, np.array([[0.0], [0], [0], [1], [0], [0]])) == 0.0  # (3/8 - 1/2) clipped
    assert fp.separability(x, np.zeros(6, dtype=np.int64)) is None
    assert fp.finest_scale([0.8, 0.75, 0.73, 0.2]) == 0.25  # keep 90% of 0.8: at least 0.72
    assert fp.finest_scale([0.8, 0.75, 0.71, 0.8]) == 0.5  # every scale from 1 down to f must keep it
    assert fp.finest_scale([0.8, 0.8, 0.8, 0.8]) == 0.125
    assert fp.finest_scale([0.01, 0.01, 0.01, 0.01]) is None


def test_sampling_is_deterministic_and_independent_of_id_order(make_voc):
    rng = np.random.default_rng(1)
    samples = {f"x{i:02d}": flat_objects(i) for i in range(12)}
    samples["x05"] = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.full((64, 64), 1, np.uint8))
    root = make_voc(samples)
    ds = VOCSegmentation(root, "train", num_classes=3)
    shuffled = VOCSegmentation(root, "train", ids=sorted(ds.ids, reverse=True), num_classes=3)
    picked = [ds.ids[i] for i in sample_order(ds)]
    assert picked == [shuffled.ids[i] for i in sample_order(shuffled)]
    a, b = compute_fingerprint(ds, max_images=5), compute_fingerprint(ds, max_images=5)
    assert a == b and a.sampled_images == 5 and a.mask_images == 12
    c = compute_fingerprint(shuffled, max_images=5)
    assert c.object_count == a.object_count and c.mean == pytest.approx(a.mean)
    assert c.scale_separability == pytest.approx(a.scale_separability)
    assert set(a.sampled_figures) <= set(a.to_dict())
    with pytest.raises(VocsegError, match="max_images must be at least 1"):
        compute_fingerprint(ds, max_images=0)


def test_separability_pixels_are_capped(hand_made, monkeypatch):
    monkeypatch.setattr(fp, "MAX_PIXELS", 10)  # 4 images: 2 draws each
    f = compute_fingerprint(hand_made, max_images=None)
    assert f.pixels_per_image == 2 and f.class_pixel_share == compute_fingerprint(hand_made).class_pixel_share


def test_ram_cache_gives_the_same_fingerprint(hand_made):
    disk = compute_fingerprint(hand_made, max_images=None)
    assert compute_fingerprint(apply_cache(hand_made, "ram"), max_images=None) == disk


def test_dict_round_trip_and_bad_dicts(hand_made):
    f = compute_fingerprint(hand_made, max_images=2)
    assert Fingerprint.from_dict(json.loads(json.dumps(f.to_dict(), allow_nan=False))) == f
    d = f.to_dict()
    del d["finest_scale"]
    with pytest.raises(VocsegError, match="missing keys: finest_scale"):
        Fingerprint.from_dict(d)
    with pytest.raises(VocsegError, match="version 0"):
        Fingerprint.from_dict({**f.to_dict(), "version": 0})


def test_cache_hit_and_invalidation(hand_made, vocseg_cache, monkeypatch):
    first = dataset_fingerprint(hand_made)
    assert len(list((vocseg_cache / "fingerprint").glob("*.json"))) == 1
    real = fp.compute_fingerprint
    monkeypatch.setattr(fp, "compute_fingerprint", lambda *a: pytest.fail("cache not used"))
    assert dataset_fingerprint(hand_made) == first
    # A mask rewritten (class 3 drawn in it): its size or time changes, so the entry no longer matches.
    path = hand_made.mask_path(hand_made.ids.index("d"))
    mask = hand_made_masks()["d"]
    mask[:4, :4] = 3
    image = Image.fromarray(mask)
    image.putpalette(voc_palette())
    image.save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    monkeypatch.setattr(fp, "compute_fingerprint", real)
    second = dataset_fingerprint(hand_made)
    assert first.missing_classes == [3] and second.missing_classes == []
    assert len(list((vocseg_cache / "fingerprint").glob("*.json"))) == 2
