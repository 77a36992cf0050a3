"""Statistics behind `vocseg compare`: mIoU from per-image counts, mean ± std over seeds, aligning runs on
their common test images, the paired bootstrap and the sentence that states its verdict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import fake_predictions, per_image_counts
from vocseg.errors import VocsegError
from vocseg.metrics import ConfusionMatrix
from vocseg.study.significance import (
    BootstrapResult,
    PerImage,
    align,
    mean_std,
    miou,
    paired_bootstrap,
    verdict,
)


def _per_image(inter: np.ndarray, union: np.ndarray, ids: list[str] | None = None) -> PerImage:
    return PerImage(ids or [f"img{i}" for i in range(len(inter))], inter, union)


def _random_masks(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        m = rng.integers(0, 6, (24, 24)).astype(np.uint8)
        m[rng.random((24, 24)) < 0.05] = 255
        masks.append(m)
    return masks


# ----------------------------------------------------------------------------- statistics


def test_mean_std_is_the_sample_standard_deviation():
    s = mean_std([0.1, 0.3, None])
    assert (s.mean, s.n) == (pytest.approx(0.2), 2) and s.std == pytest.approx(np.sqrt(0.02))
    assert s.format() == "0.2000 ± 0.1414"
    one = mean_std([0.5])
    assert one.std is None and one.format() == "0.5000"
    assert mean_std([None]).format() == "–"


def test_full_sample_miou_equals_the_confusion_matrix_miou():
    masks = _random_masks(7)
    preds = fake_predictions(masks, 0.3, seed=3)
    cm = ConfusionMatrix(21)
    for p, m in zip(preds, masks):
        cm.update(torch.from_numpy(p.astype(np.int64)), torch.from_numpy(m.astype(np.int64)))
    inter, union = per_image_counts(preds, masks)
    assert miou(inter.sum(0), union.sum(0)) == pytest.approx(cm.compute()["mean_iou"], abs=1e-12)
    # and a bootstrap of a model against itself sees no difference at all
    result = paired_bootstrap([_per_image(inter, union)], [_per_image(inter, union)], n_boot=300)
    assert (result.diff, result.low, result.high) == (0.0, 0.0, 0.0)
    assert "not distinguishable from test-set noise" in verdict("A", "B", result)


def test_a_model_better_on_every_image_has_a_positive_interval():
    masks = _random_masks(12, seed=1)
    good = per_image_counts(fake_predictions(masks, 0.1, seed=5), masks)
    bad = per_image_counts(fake_predictions(masks, 0.4, seed=6), masks)
    per_image_good = miou(*good)
    per_image_bad = miou(*bad)
    assert (per_image_good > per_image_bad).all()  # better on every single image
    result = paired_bootstrap([_per_image(*good)], [_per_image(*bad)], n_boot=500, seed=1)
    assert 0 < result.low <= result.diff <= result.high
    assert result.diff == pytest.approx(miou(good[0].sum(0), good[1].sum(0)) - miou(bad[0].sum(0), bad[1].sum(0)))
    sentence = verdict("good", "bad", result)
    assert sentence.startswith(f"good beats bad by {result.diff:.3f} mIoU (95% CI ")
    assert sentence.endswith("distinguishable from test-set noise.")
    flipped = verdict("bad", "good", paired_bootstrap([_per_image(*bad)], [_per_image(*good)], n_boot=500, seed=1))
    assert flipped == sentence  # the sentence always names the winner first


def test_seed_resampling_widens_the_interval_of_equal_groups():
    masks = _random_masks(10, seed=2)
    seeds = [
        _per_image(*per_image_counts(fake_predictions(masks, r, seed=k), masks)) for k, r in enumerate((0.1, 0.35))
    ]
    result = paired_bootstrap(seeds, seeds, n_boot=400)
    assert result.diff == 0.0 and result.low < 0 < result.high  # same seeds on both sides: only seed noise
    assert "not distinguishable from seed and test-set noise" in verdict("A", "B", result)


def test_align_uses_the_common_images_in_one_order():
    a = _per_image(np.array([[1, 0], [2, 0], [3, 0]]), np.array([[2, 0], [2, 0], [4, 0]]), ["x", "y", "z"])
    b = _per_image(np.array([[3, 1], [1, 1]]), np.array([[3, 1], [1, 1]]), ["z", "x"])
    ids, (a2, b2) = align([a, b])
    assert ids == ["x", "z"] and a2.intersection[:, 0].tolist() == [1, 3] and b2.intersection[:, 0].tolist() == [1, 3]
    with pytest.raises(VocsegError, match="share no test image"):
        align([a, _per_image(np.ones((1, 2)), np.ones((1, 2)), ["w"])])


# ----------------------------------------------------------------------------- miou and mean_std


def test_miou_hand_computed_with_nan_when_no_class_is_present():
    inter = np.array([[1, 0, 2, 0], [0, 0, 0, 0], [0, 3, 0, 0]])
    union = np.array([[2, 0, 4, 5], [0, 0, 0, 0], [0, 3, 0, 0]])
    # image 0: classes 0, 2, 3 present: (1/2 + 2/4 + 0/5) / 3; class 1 (union 0) does not count
    # image 1: no class present: NaN; image 2: only class 1, perfect
    out = miou(inter, union)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(1 / 3) and np.isnan(out[1]) and out[2] == 1.0
    assert miou(inter[0], union[0]) == pytest.approx(1 / 3)  # one row: a scalar
    assert np.isnan(miou(np.zeros(4), np.zeros(4)))
    # any leading shape: (2, 3, C) -> (2, 3)
    assert miou(np.stack([inter, inter]), np.stack([union, union])).shape == (2, 3)


def test_mean_std_of_nothing_and_of_equal_values():
    assert mean_std([]) == mean_std([None, None]) and mean_std([]).n == 0 and mean_std([]).mean is None
    same = mean_std([0.25, 0.25, 0.25])
    assert (same.mean, same.std, same.n) == (0.25, 0.0, 3)
    s = mean_std([1, 2, 3, 4])
    assert s.std == pytest.approx(np.std([1, 2, 3, 4], ddof=1)) and s.format(2) == "2.50 ± 1.29"


# ----------------------------------------------------------------------------- PerImage and align


def test_per_image_from_arrays_reads_the_npz_dict():
    data = {
        "ids": np.array(["a", "b"]),
        "intersection": np.array([[1, 0], [2, 3]]),
        "union": np.array([[2, 1], [2, 3]]),
    }
    run = PerImage.from_arrays(data)
    assert run.ids == ["a", "b"] and all(isinstance(i, str) for i in run.ids)
    assert run.intersection.tolist() == [[1, 0], [2, 3]] and run.union.shape == (2, 2)
    assert run.digests is None
    with_digests = PerImage.from_arrays({**data, "mask_digest": np.array(["d0", "d1"])})
    assert with_digests.digests == ["d0", "d1"]


@pytest.mark.parametrize(
    "change",
    [
        {"intersection": np.zeros(2), "union": np.zeros(2)},  # one dimension
        {"union": np.zeros((2, 3))},  # union of another shape
        {"ids": np.array(["a", "b", "c"])},  # a row per id
        {"intersection": np.zeros((2, 2, 1)), "union": np.zeros((2, 2, 1))},  # three dimensions
    ],
)
def test_per_image_from_arrays_refuses_bad_shapes_naming_the_source(change):
    data = {"ids": np.array(["a", "b"]), "intersection": np.zeros((2, 2)), "union": np.zeros((2, 2)), **change}
    with pytest.raises(VocsegError, match=r"^runs/x/per_image\.npz: intersection .* must both be \(images, classes\)"):
        PerImage.from_arrays(data, "runs/x/per_image.npz")


def test_per_image_from_arrays_refuses_a_digest_count_that_is_not_the_id_count():
    data = {"ids": np.array(["a", "b"]), "intersection": np.zeros((2, 2)), "union": np.zeros((2, 2))}
    with pytest.raises(VocsegError, match="1 mask digests for 2 ids"):
        PerImage.from_arrays({**data, "mask_digest": np.array(["d0"])})


def test_align_keeps_the_first_runs_order_across_three_runs():
    a = _per_image(np.arange(4)[:, None] * [1, 0], np.full((4, 2), 9), ["p", "q", "r", "s"])
    b = _per_image(np.array([[30, 0], [10, 0], [20, 0]]), np.full((3, 2), 9), ["s", "q", "r"])
    c = _per_image(np.array([[7, 0], [8, 0], [9, 0]]), np.full((3, 2), 9), ["r", "q", "x"])
    ids, (a2, b2, c2) = align([a, b, c])
    assert ids == ["q", "r"]
    assert a2.ids == b2.ids == c2.ids == ["q", "r"]
    assert a2.intersection[:, 0].tolist() == [1, 2]
    assert b2.intersection[:, 0].tolist() == [10, 20]
    assert c2.intersection[:, 0].tolist() == [8, 7]


def test_align_refuses_runs_with_different_class_counts():
    a = _per_image(np.ones((2, 21)), np.ones((2, 21)))
    b = _per_image(np.ones((2, 5)), np.ones((2, 5)))
    with pytest.raises(VocsegError, match=r"different numbers of classes \(\[5, 21\]\)"):
        align([a, b])
    with pytest.raises(VocsegError, match="no runs"):
        align([])


def test_align_pairs_digests_by_id_and_refuses_other_pictures():
    inter = np.ones((3, 2))
    a = PerImage(["x", "y", "z"], inter, inter, ["dx", "dy", "dz"])
    b = PerImage(["z", "y", "x"], inter, inter, ["dz", "dy", "dx"])
    _, (a2, b2) = align([a, b])
    assert a2.digests == b2.digests == ["dx", "dy", "dz"]
    legacy = PerImage(["x", "y"], inter[:2], inter[:2])  # made before digests were recorded
    _, aligned = align([a, legacy, b])
    assert aligned[1].digests is None and aligned[2].digests == ["dx", "dy"]
    other = PerImage(["x", "y", "z"], inter, inter, ["dx", "OTHER", "dz"])
    with pytest.raises(
        VocsegError, match=r"different test pictures under the same ids \(1 of 3 masks differ, e.g. 'y'\)"
    ):
        align([a, other])


# ----------------------------------------------------------------------------- paired_bootstrap and verdict


def test_bootstrap_is_deterministic_for_a_seed_and_counts_what_it_used():
    masks = _random_masks(8, seed=4)
    a = _per_image(*per_image_counts(fake_predictions(masks, 0.2, seed=1), masks))
    b = _per_image(*per_image_counts(fake_predictions(masks, 0.3, seed=2), masks))
    b_fewer = PerImage(b.ids[2:], b.intersection[2:], b.union[2:])
    r1 = paired_bootstrap([a], [b_fewer], n_boot=300, seed=3)
    r2 = paired_bootstrap([a], [b_fewer], n_boot=300, seed=3)
    assert r1 == r2
    assert (r1.n_images, r1.n_boot, r1.seeds_a, r1.seeds_b, r1.level) == (6, 300, 1, 1, 0.95)
    # the full-sample difference is over the shared images only
    sub = a.intersection[2:].sum(0), a.union[2:].sum(0)
    assert r1.diff == pytest.approx(miou(*sub) - miou(b_fewer.intersection.sum(0), b_fewer.union.sum(0)))
    wider = paired_bootstrap([a], [b_fewer], n_boot=300, seed=3, level=0.99)
    assert wider.low <= r1.low and wider.high >= r1.high


def test_bootstrap_needs_a_run_on_each_side():
    a = _per_image(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(VocsegError, match="at least one run on each side"):
        paired_bootstrap([a], [])
    with pytest.raises(VocsegError, match="at least one run on each side"):
        paired_bootstrap([], [a])


def _result(diff, low, high, seeds_a=1, seeds_b=1) -> BootstrapResult:
    return BootstrapResult(diff, low, high, 0.95, 10, 100, seeds_a, seeds_b)


def test_verdict_wording():
    assert verdict("A", "B", _result(0.1234, 0.05, 0.2, 3, 2)) == (
        "A beats B by 0.123 mIoU (95% CI 0.050 to 0.200): distinguishable from seed and test-set noise."
    )
    assert verdict("A", "B", _result(0.02, -0.01, 0.05, 3, 2)) == (
        "A beats B by 0.020 mIoU, but the 95% CI -0.010 to 0.050 includes 0: "
        "not distinguishable from seed and test-set noise."
    )
    assert verdict("A", "B", _result(0.02, -0.01, 0.05, 3, 1)) == (
        "A beats B by 0.020 mIoU, but the 95% CI -0.010 to 0.050 includes 0: not distinguishable from "
        "test-set noise (one seed on a side, so seed-to-seed variation is not measured)."
    )
    # B ahead: named first, the interval mirrored
    assert verdict("A", "B", _result(-0.1, -0.2, -0.05)) == (
        "B beats A by 0.100 mIoU (95% CI 0.050 to 0.200): distinguishable from test-set noise."
    )
    # no difference; a bound that rounds to -0.000 is written 0.000
    assert verdict("A", "B", _result(0.0, -0.0001, 0.0)) == (
        "A and B score the same mIoU, but the 95% CI 0.000 to 0.000 includes 0: not distinguishable from "
        "test-set noise (one seed on a side, so seed-to-seed variation is not measured)."
    )
