"""vocseg.losses: class weights (the paper's, median frequency, inverse square root) by hand, and the summed
weighted cross-entropy against torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vocseg.losses import class_weights, weighted_ce_sums


def test_paper_class_weights_hand_computed():
    w = class_weights([70, 20, 10, 0], "paper")
    assert torch.allclose(w, torch.tensor([0.3, 0.8, 0.9, 1.0]))


def test_median_frequency_and_inverse_sqrt_weights():
    counts = [600, 300, 100, 0]  # frequencies .6 .3 .1 among present classes; median .3
    mf = class_weights(counts, "median_frequency")
    assert torch.allclose(mf, torch.tensor([0.5, 1.0, 3.0, 0.0]))
    isq = class_weights(counts, "inverse_sqrt")
    raw = 1 / np.sqrt([0.6, 0.3, 0.1])
    assert torch.allclose(isq[:3], torch.tensor(raw / raw.mean(), dtype=torch.float32))
    assert isq[3] == 0
    assert class_weights(counts, "none") is None


@pytest.mark.parametrize("use_weight", [False, True])
def test_weighted_ce_sums_equals_torch_cross_entropy(use_weight):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, 9, generator=g)
    target = torch.randint(0, 5, (3, 7, 9), generator=g)
    target[0, :2] = 255
    weight = torch.rand(5, generator=g) + 0.1 if use_weight else None
    total, n = weighted_ce_sums(logits, target, weight)
    ref = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(total / n, ref, atol=1e-6)
