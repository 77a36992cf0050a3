"""evaluate_checkpoint: a saved checkpoint scored on a split gives the metrics of a hand-written reference
(the same weights and normalisation, one image at a time, a ConfusionMatrix and numpy), and bad options are
refused before the model is loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vocseg.evaluation.evaluate as evaluate_module
from vocseg.checkpoint import checkpoint_metadata, save_checkpoint
from vocseg.config import Config
from vocseg.data.classes import IGNORE_INDEX, class_names
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError
from vocseg.evaluation.evaluate import evaluate_checkpoint
from vocseg.metrics import ConfusionMatrix
from vocseg.models import create_model

MEAN, STD = [0.45, 0.5, 0.55], [0.2, 0.25, 0.3]


@pytest.fixture(scope="module")
def checkpoint(tiny_voc, tmp_path_factory) -> tuple[Path, dict]:
    """An FCN checkpoint (random weights with spread-out BN statistics, so that several classes are
    predicted) whose config points at tiny_voc; and its state dict."""
    # amp bf16 in the run's config: the tests' amp="none" must override it to match the fp32 reference
    cfg = Config(model="fcn", data_root=str(tiny_voc), amp="bf16", num_workers=0, device="cpu")
    torch.manual_seed(0)
    model = create_model("fcn")
    state = model.state_dict()
    g = torch.Generator().manual_seed(1)
    for key, value in state.items():
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.2)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint({"model": state, **checkpoint_metadata(cfg, class_names(21), MEAN, STD)}, path)
    return path, state


@pytest.fixture(scope="module")
def reference(tiny_voc, checkpoint) -> dict:
    """The val split scored by hand: normalise each raw image, one forward each, argmax, count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _score_by_hand(tiny_voc, checkpoint[1])
    finally:
        torch.set_num_threads(threads)


def _score_by_hand(tiny_voc, state) -> dict:
    model = create_model("fcn")
    model.load_state_dict(state)
    model.eval()
    ds = VOCSegmentation(tiny_voc, "val")
    cm = ConfusionMatrix(21)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    correct = valid = 0
    ce_sum = 0.0
    preds = {}
    with torch.no_grad():
        for i in range(len(ds)):
            image, mask = ds.load(i)
            x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
            logits = model(x[None])
            target = torch.from_numpy(mask).long()[None]
            pred = logits.argmax(1)
            cm.update(pred, target)
            ce_sum += F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum").item()
            scored = mask != IGNORE_INDEX
            correct += int((pred[0].numpy() == mask)[scored].sum())
            valid += int(scored.sum())
            preds[ds.ids[i]] = pred[0].numpy().astype(np.uint8)
    return {
        **cm.compute(),
        "numpy_pixel_accuracy": correct / valid,
        "ce_loss": ce_sum / valid,
        "preds": preds,
        "classes": int((cm.matrix.sum(0) > 0).sum()),
    }


def test_metrics_match_a_hand_computed_reference(checkpoint, reference, one_thread):
    path, _ = checkpoint
    assert reference["classes"] >= 3  # the reference predicts several classes: a real test of mIoU
    out = evaluate_checkpoint(path, split="val", device="cpu", amp="none", num_workers=0, progress=False)
    assert out["pixel_accuracy"] == pytest.approx(reference["numpy_pixel_accuracy"], abs=1e-12)
    assert out["pixel_accuracy"] == pytest.approx(reference["pixel_accuracy"], abs=1e-12)
    assert out["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-9)
    assert out["mean_accuracy"] == pytest.approx(reference["mean_accuracy"], abs=1e-9)
    assert out["fw_iou"] == pytest.approx(reference["fw_iou"], abs=1e-9)
    assert out["per_class_iou"] == pytest.approx(reference["per_class_iou"], abs=1e-9)
    # no class weights in the checkpoint: the loss is the plain cross-entropy over scored pixels
    assert out["loss"] == pytest.approx(reference["ce_loss"], rel=1e-5)
    assert out["ce_loss"] == pytest.approx(reference["ce_loss"], rel=1e-5)
    assert (out["split"], out["num_images"], out["checkpoint"], out["model"]) == ("val", 4, str(path), "fcn")
    assert (out["tta"], out["tta_scales"], out["slide"]) == ("none", None, None)


def test_save_dir_masks_are_the_scored_predictions(checkpoint, reference, tiny_voc, tmp_path, monkeypatch, one_thread):
    """The masks come from the scoring pass itself (the figures drawn after it are test_artifacts' business)."""
    path, _ = checkpoint
    save = tmp_path / "eval"
    drawn = []
    monkeypatch.setattr(evaluate_module, "write_evaluation_artifacts", lambda *args: drawn.append(args))
    out = evaluate_checkpoint(
        path, tiny_voc, "val", device="cpu", amp="none", num_workers=0, progress=False, save_dir=save
    )
    assert out["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-9)
    assert len(drawn) == 1 and drawn[0][0] == save
    assert sorted(p.name for p in save.iterdir()) == ["best", "masks", "worst"]
    for image_id, pred in reference["preds"].items():
        with Image.open(save / "masks" / f"{image_id}.png") as img:
            assert img.mode == "P" and np.array_equal(np.asarray(img), pred)


def test_a_save_dir_under_a_file_fails_before_the_model_loads(checkpoint, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("load_model must not be called")

    monkeypatch.setattr(evaluate_module, "load_model", never)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file")
    for save_dir in (blocker / "eval", blocker):
        with pytest.raises(VocsegError, match=f"{blocker}.*is a file, not a folder"):
            evaluate_checkpoint(checkpoint[0], device="cpu", progress=False, save_dir=save_dir)
    assert blocker.read_text() == "a file"


def test_a_non_empty_save_dir_is_refused_before_the_model_loads(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    with pytest.raises(VocsegError, match="is not empty"):
        evaluate_checkpoint(checkpoint[0], device="cpu", progress=False, save_dir=tmp_path / "old")


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_tta_scales_without_multiscale_are_refused(checkpoint, monkeypatch, tta):
    monkeypatch.setattr(evaluate_module, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    with pytest.raises(VocsegError, match=rf"tta_scales \[0\.5, 1\.0\] need tta 'multiscale', got tta '{tta}'"):
        evaluate_checkpoint(checkpoint[0], device="cpu", progress=False, tta=tta, tta_scales=[0.5, 1.0])
