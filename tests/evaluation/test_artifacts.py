"""vocseg evaluate --save-dir: masks, best/worst panels, per-class chart, confusion matrix, per-image table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from vocseg.cli import main
from vocseg.evaluation import evaluator, inference
from vocseg.evaluation.artifacts import per_image_iou


def test_per_image_iou_hand_computed():
    inter = np.array([[2, 0, 0], [0, 0, 0]])
    union = np.array([[4, 2, 0], [0, 0, 0]])
    ious = per_image_iou(inter, union)
    assert ious[0] == pytest.approx((0.5 + 0.0) / 2) and np.isnan(ious[1])


def test_save_dir_writes_every_artifact(tiny_voc, tmp_path, monkeypatch, capsys, torch_global_state):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--model",
                "fcn",
                "--data-root",
                str(tiny_voc),
                "--out",
                str(run),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--image-size",
                "48",
                "--workers",
                "0",
                "--no-progress",
                "--amp",
                "none",
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    capsys.readouterr()
    forwards = []
    real = inference.predict_logits
    monkeypatch.setattr(evaluator, "predict_logits", lambda *a, **k: forwards.append(1) or real(*a, **k))
    assert main(["evaluate", str(run / "best.pt"), "--save-dir", str(out), "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    masks = sorted((out / "masks").glob("*.png"))
    assert len(masks) == printed["num_images"] == 4
    m = Image.open(masks[0])
    assert m.mode == "P" and m.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC's palette
    for name in ("per_class_iou.png", "confusion.png", "metrics.json", "per_image.csv"):
        assert (out / name).is_file(), name
    assert 1 <= len(list((out / "best").glob("*.png"))) <= 5 and len(list((out / "worst").glob("*.png"))) >= 1
    rows = list(csv.DictReader((out / "per_image.csv").read_text().splitlines()))
    values = [float(r["miou"]) for r in rows]
    assert values == sorted(values)  # worst first
    # One inference pass: the masks are the scoring pass's own predictions (4 images, 4 forwards), and
    # each saved mask, scored by hand against its own truth, gives the per-image mIoU in the table.
    assert len(forwards) == 4
    truth_dir = tiny_voc / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    for r in rows:
        pred = np.asarray(Image.open(out / "masks" / f"{r['id']}.png")).astype(int)
        truth = np.asarray(Image.open(truth_dir / f"{r['id']}.png")).astype(int)
        valid = truth != 255
        ious = [
            ((pred == c) & (truth == c) & valid).sum() / ((pred == c) | (truth == c))[valid].sum()
            for c in range(21)
            if ((pred == c) | (truth == c))[valid].any()
        ]
        assert float(r["miou"]) == pytest.approx(np.mean(ious), abs=1e-5), r["id"]
    # Nothing is overwritten: a second run into the same folder is refused.
    assert main(["evaluate", str(run / "best.pt"), "--save-dir", str(out), "--device", "cpu"]) == 2
    assert "not empty" in capsys.readouterr().err
