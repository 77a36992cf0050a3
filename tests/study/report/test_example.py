"""vocseg.study.report.example: the example image is the one with the most object classes (ties: more
foreground), and each run's prediction of it is its best checkpoint's, at native size."""

from __future__ import annotations

import numpy as np
import torch

from helpers import write_fake_run
from vocseg.checkpoint import load_model
from vocseg.data.classes import IGNORE_INDEX, VOC_CLASSES
from vocseg.study.report import DataInfo, ReportRun
from vocseg.study.report.example import choose_example, predict_example


def info_for(voc, ids) -> DataInfo:
    return DataInfo(
        voc_root=voc,
        synthetic=False,
        synthetic_seed=None,
        split_sizes={"val": len(ids)},
        used={"test": len(ids)},
        test_split="val",
        test_ids=list(ids),
        class_names=list(VOC_CLASSES),
        test_counts=np.zeros(21, np.int64),
    )


def mask_with(classes: list[int], foreground_rows: int) -> np.ndarray:
    """20 x 24 background with ``foreground_rows`` rows shared out among ``classes``, and a void border."""
    mask = np.zeros((20, 24), np.uint8)
    for k, c in enumerate(classes):
        mask[k : foreground_rows : len(classes)] = c
    mask[:, 0] = IGNORE_INDEX  # void is not a class
    return mask


def test_most_object_classes_wins_and_foreground_breaks_ties(make_voc):
    image = np.full((20, 24, 3), 128, np.uint8)
    samples = {
        "two_small": (image, mask_with([3, 7], 4)),
        "one_large": (image, mask_with([5], 18)),
        "two_large": (image, mask_with([7, 12], 10)),  # as many classes as two_small, more foreground
        "void_only": (image, np.full((20, 24), IGNORE_INDEX, np.uint8)),
    }
    voc = make_voc(samples, {"val": list(samples)})
    assert choose_example(info_for(voc, samples)) == ("two_large", [7, 12])


def test_each_finished_run_predicts_the_example_at_native_size(tmp_path, tiny_voc):
    info = info_for(tiny_voc, ["synth_000012"])
    ran = write_fake_run(tmp_path / "ran", tiny_voc)
    missing = tmp_path / "no-checkpoint"
    runs = [ReportRun("ran", ran), ReportRun("no checkpoint", write_fake_run(missing, tiny_voc))]
    runs[1].run.best_path.unlink()
    image, mask, preds = predict_example(runs, info, "synth_000012")
    assert image.shape[:2] == mask.shape and image.shape[2] == 3
    assert list(preds) == ["ran"] and preds["ran"].shape == mask.shape and preds["ran"].max() < 21
    # By hand: the checkpoint's normalisation (write_fake_run's 0.5 / 0.25), one forward, argmax.
    model, _ = load_model(ran.best_path, "cpu")
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        expected = model(x[None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(preds["ran"], expected)
