"""vocseg.training.step: the loss of a batch, against torch's cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vocseg.training.step import training_loss


def test_training_loss_adds_the_weighted_aux_loss():
    g = torch.Generator().manual_seed(1)
    out, aux = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 3, 5, 5, generator=g)
    y = torch.randint(0, 3, (2, 5, 5), generator=g)
    loss, _, _ = training_loss({"out": out, "aux": aux}, y, None, 0.4)
    assert loss.item() == pytest.approx((F.cross_entropy(out, y) + 0.4 * F.cross_entropy(aux, y)).item(), rel=1e-6)
    plain, _, _ = training_loss(out, y, None, 0.4)
    assert plain.item() == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
