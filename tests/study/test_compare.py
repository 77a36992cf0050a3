"""`vocseg compare` and the statistics behind it: seed groups, mean ± std, the paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import fake_predictions, per_image_counts, read_report, write_fake_run
from vocseg.cli import main
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.errors import VocsegError
from vocseg.metrics import ConfusionMatrix
from vocseg.study.compare import compare, default_labels, recipe_groups
from vocseg.study.significance import PerImage, align, mean_std, miou, paired_bootstrap, verdict


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


# ----------------------------------------------------------------------------- compare


def test_recipe_groups_ignore_seed_and_runtime_keys():
    base = {"model": "fcn", "lr": 0.001, "seed": 0, "out": "a", "device": "cpu"}
    configs = [base, {**base, "seed": 1, "out": "b", "device": "cuda"}, {**base, "lr": 0.01}]
    assert recipe_groups(configs, ["a", "b", "c"]) == ["a", "a", "c"]
    assert default_labels([Path("/x/one/run"), Path("/x/two/run")]) == ["one/run", "two/run"]


def test_compare_groups_seeds_and_tests_the_difference(tmp_path, tiny_voc, vocseg_cache, capsys):
    runs = tmp_path / "runs"
    write_fake_run(runs / "good", tiny_voc, error_rate=0.05, seed=0)
    write_fake_run(runs / "good-2", tiny_voc, error_rate=0.08, seed=1)
    write_fake_run(runs / "poor", tiny_voc, error_rate=0.5, seed=0, lr=0.01)
    write_fake_run(runs / "poor-2", tiny_voc, error_rate=0.45, seed=3, lr=0.01)
    md, html = compare([runs / "good", runs / "good-2", runs / "poor", runs / "poor-2"], tmp_path / "cmp", device="cpu")
    page = read_report(md, html)
    results = {row[0]: row for row in page.rows if row and row[-1] == "done"}
    assert set(results) == {"good", "poor"}  # four runs, two recipes
    assert "±" in results["good"][3] and results["good"][-2] == "2"  # mIoU mean ± std over the 2 seeds
    groups = {row[0]: row for row in page.rows if row and row[0] in ("good", "poor") and "/" in row[1]}
    assert groups["good"][1:3] == ["2/2", "0, 1"] and groups["poor"][2] == "0, 3"
    text = page.all_text
    assert "good beats poor by" in text and "distinguishable from seed and test-set noise" in text
    assert len(page.imgs) == 4 + 3  # curves of every run, comparison, per-class bars, confusion

    # The CLI writes the same report, with labels of the user's choice.
    rc = main(
        [
            "compare",
            str(runs / "good"),
            str(runs / "poor"),
            "--out",
            str(tmp_path / "cli"),
            "--labels",
            "A",
            "B",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "report:" in capsys.readouterr().out
    assert "A beats B by" in (tmp_path / "cli" / "report.md").read_text()


def test_compare_refuses_folders_that_are_not_runs_and_bad_labels(tmp_path, tiny_voc, vocseg_cache):
    run = write_fake_run(tmp_path / "a", tiny_voc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VocsegError, match=r"empty is not a run folder: .*config.yaml not found"):
        compare([run.path, tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(VocsegError, match=r"2 label\(s\) for 1 run folder"):
        compare([run.path], tmp_path / "out", labels=["x", "y"])
    assert not (tmp_path / "out").exists()


def test_compare_refuses_the_paired_test_for_other_pictures_under_the_same_ids(tmp_path, tiny_voc, vocseg_cache):
    """Two synthetic sets of different seeds name their images alike (synth_000000, ...): the runs must not
    be paired image by image, and the report says why instead of printing an interval."""
    other = tmp_path / "other-voc"
    generate_synthetic_voc(other, n_train=12, n_val=4, seed=1, max_side=64, workers=1)
    runs = tmp_path / "runs"
    write_fake_run(runs / "a", tiny_voc, error_rate=0.05, seed=0)
    write_fake_run(runs / "b", other, error_rate=0.5, seed=0, lr=0.01)
    md, _ = compare([runs / "a", runs / "b"], tmp_path / "cmp", device="cpu")
    text = md.read_text()
    assert "different test pictures under the same ids" in text and "a paired test needs the same images" in text
    assert "beats" not in text and "95% CI" not in text
    # The same data under both runs is still paired.
    write_fake_run(runs / "c", tiny_voc, error_rate=0.5, seed=0, lr=0.01)
    md, _ = compare([runs / "a", runs / "c"], tmp_path / "cmp2", device="cpu")
    assert "a beats c by" in md.read_text()
