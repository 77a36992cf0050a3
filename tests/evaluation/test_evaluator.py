"""vocseg.evaluation.evaluator: one pass over a split equals one confusion matrix over it (a reference)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vocseg.data.loaders import StridedSampler
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
