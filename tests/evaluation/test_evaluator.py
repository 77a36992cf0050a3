"""vocseg.evaluation.evaluator: one pass over a split equals one confusion matrix over it (a reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vocseg.config import Config
from vocseg.data.builder import build_datasets
from vocseg.data.loaders import StridedSampler, eval_loader
from vocseg.evaluation.evaluator import evaluate
from vocseg.metrics import ConfusionMatrix, per_image_counts


def test_evaluation_equals_one_confusion_matrix_and_fills_per_image_rows_in_dataset_order():
    g = torch.Generator().manual_seed(2)
    images = torch.randn(5, 3, 6, 8, generator=g)
    masks = torch.randint(0, 3, (5, 6, 8), generator=g)
    model = torch.nn.Conv2d(3, 3, 1)
    loader = DataLoader(TensorDataset(images, masks), batch_size=2, sampler=StridedSampler(5, 0, 1))
    ev = evaluate(model, loader, 3, None, None, torch.device("cpu"))
    with torch.no_grad():
        preds = model(images).argmax(1)
    ref = ConfusionMatrix(3)
    ref.update(preds, masks)
    assert ev.metrics["mean_iou"] == pytest.approx(ref.compute()["mean_iou"])
    inter, union = per_image_counts(preds, masks, 3)
    assert torch.equal(ev.intersection, inter) and torch.equal(ev.union, union)
    # The split's IoU is the per-image counts summed: what the paired bootstrap resamples.
    iou = ev.intersection.sum(0) / ev.union.sum(0)
    assert float(iou.mean()) == pytest.approx(ev.metrics["mean_iou"])


def test_same_size_batches_give_what_one_image_at_a_time_gives(make_voc, vocseg_cache):
    """eval_batch_size > 1 batches only images of one size: the same predictions, confusion matrix and
    per-image rows (in dataset order) as one image at a time."""
    g = np.random.default_rng(1)
    shapes = [(20, 28), (28, 20), (20, 28), (20, 28), (28, 20), (24, 24)]
    samples = {
        f"im{i}": (g.integers(0, 256, (*hw, 3), dtype=np.uint8), g.integers(0, 3, hw, dtype=np.uint8))
        for i, hw in enumerate(shapes)
    }
    root = make_voc(samples, {"val": [f"im{i}" for i in range(5)], "train": ["im5"]})
    cfg = Config(data_root=str(root.parents[1]), num_workers=0, cache="none", num_classes=3).validate()
    data = build_datasets(cfg, None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)
    )
    cpu = torch.device("cpu")
    alone = evaluate(model, eval_loader(data.val, cfg, cpu), 3, None, None, cpu)
    batched = evaluate(model, eval_loader(data.val, cfg, cpu, batch_size=4), 3, None, None, cpu)
    assert torch.equal(batched.confusion.matrix, alone.confusion.matrix)
    assert torch.equal(batched.intersection, alone.intersection) and torch.equal(batched.union, alone.union)
    assert batched.metrics["loss"] == pytest.approx(alone.metrics["loss"], rel=1e-6)
