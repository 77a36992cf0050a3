"""The training step and the evaluation pass: per-image counts, the aux loss, and metrics equal to a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from vocseg.data.loaders import StridedSampler
from vocseg.evaluation.evaluator import evaluate
from vocseg.metrics import ConfusionMatrix, per_image_counts
from vocseg.training.step import training_loss


def test_per_image_counts_match_a_numpy_reference():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (3, 9, 7), generator=g)
    masks = torch.randint(0, 4, (3, 9, 7), generator=g)
    masks[0, :2] = 255
    inter, union = per_image_counts(preds, masks, 4)
    for b in range(3):
        p, m = preds[b].numpy(), masks[b].numpy()
        valid = m != 255
        for c in range(4):
            tp = np.sum((p == c) & (m == c) & valid)
            un = np.sum(((p == c) | (m == c)) & valid)
            assert inter[b, c] == tp and union[b, c] == un, (b, c)


def test_training_loss_adds_the_weighted_aux_loss():
    g = torch.Generator().manual_seed(1)
    out, aux = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    y = torch.randint(0, 3, (2, 5, 5), generator=g)
    loss, _, _ = training_loss({"out": out, "aux": aux}, y, None, 0.4)
    assert loss.item() == pytest.approx((F.cross_entropy(out, y) + 0.4 * F.cross_entropy(aux, y)).item(), rel=1e-6)
    plain, _, _ = training_loss(out, y, None, 0.4)
    assert plain.item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)


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
