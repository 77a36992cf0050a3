"""vocseg.losses: class weights (the paper's, median frequency, inverse square root) by hand, and the summed
weighted cross-entropy against torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vocseg.losses import (
    _lovasz_grad,
    class_weights,
    labels_on_grid,
    lovasz_softmax_loss,
    soft_dice_loss,
    weighted_ce_sums,
)
from vocseg.training.step import training_loss


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


def test_label_smoothing_hand_computed():
    """Smoothing e: each pixel's CE is (1 - e) * -log p_t + e / C * sum_c -log p_c, weighted by w_t; with no
    class weights the mean is torch's own ``label_smoothing``."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[1, 0] = 255
    weight = torch.tensor([0.3, 1.0, 0.9, 0.7])
    total, n = weighted_ce_sums(logits, target, weight, label_smoothing=0.2)
    logp = logits.log_softmax(1).permute(0, 2, 3, 1)[target != 255]  # (pixels, C)
    t = target[target != 255]
    per_pixel = 0.8 * -logp[torch.arange(t.numel()), t] + 0.2 / 4 * -logp.sum(1)
    assert torch.allclose(total, (weight[t] * per_pixel).sum(), atol=1e-5)
    assert torch.allclose(n, weight[t].sum())
    plain_total, plain_n = weighted_ce_sums(logits, target, None, label_smoothing=0.2)
    ref = F.cross_entropy(logits, target, ignore_index=255, label_smoothing=0.2)
    assert torch.allclose(plain_total / plain_n, ref, atol=1e-6)
    assert not torch.allclose(plain_total / plain_n, F.cross_entropy(logits, target, ignore_index=255))


def test_labels_on_grid_hand_computed():
    """A 5 x 7 mask on a 2 x 2 grid of 4-pixel cells (the input padded to 8 x 8): the labels at the cells'
    centres (rows 2 and 6, columns 2 and 6); row 6 is past the image, so void."""
    masks = torch.arange(35).reshape(1, 5, 7)
    got = labels_on_grid(masks, 4, (2, 2))
    assert got.tolist() == [[[16, 20], [255, 255]]]
    assert labels_on_grid(masks, 1, (5, 7)) is masks
    with pytest.raises(ValueError, match="does not cover"):
        labels_on_grid(masks, 2, (2, 2))


def test_aux_loss_on_a_coarse_grid_uses_the_labels_at_the_cells_centres():
    g = torch.Generator().manual_seed(2)
    out, aux = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 16, 16), generator=g)
    loss, _, _ = training_loss({"out": out, "aux": aux}, y, None, 0.4, aux_stride=4)
    expected = F.cross_entropy(out, y) + 0.4 * F.cross_entropy(aux, y[:, 2::4, 2::4])
    assert torch.allclose(loss, expected, atol=1e-6)


def _one_hot_logits(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits whose softmax is one-hot at ``pred`` to float precision."""
    return F.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() * 100.0


def _hand_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(mean IoU, mean Dice) over the classes present in ``truth``, void (255) ignored: by hand."""
    valid = truth != 255
    ious, dices = [], []
    for c in np.unique(truth[valid]):
        p, g = (pred == c) & valid, (truth == c) & valid
        ious.append((p & g).sum() / (p | g).sum())
        dices.append(2 * (p & g).sum() / (p.sum() + g.sum()))
    return float(np.mean(ious)), float(np.mean(dices))


def _random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, 4, (2, 9, 11), generator=g)
    truth[:, 0, :] = 255  # a void band
    pred = torch.where(
        torch.rand(truth.shape, generator=g) < 0.7, truth.clamp(max=3), torch.randint(0, 5, truth.shape, generator=g)
    )
    return pred, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_losses_on_hard_predictions_are_one_minus_the_metric(seed):
    """On one-hot probabilities Lovasz-softmax is exactly 1 - mean IoU and soft Dice 1 - mean Dice, over
    the classes present in the truth, void ignored (the defining property of both)."""
    pred, truth = _random_case(seed)
    logits = _one_hot_logits(pred, 5)
    miou, mdice = _hand_scores(pred.numpy(), truth.numpy())
    assert lovasz_softmax_loss(logits, truth).item() == pytest.approx(1 - miou, abs=1e-5)
    assert soft_dice_loss(logits, truth).item() == pytest.approx(1 - mdice, abs=1e-5)


def test_lovasz_gradient_hand_computed():
    """Errors sorted with truth [1, 0, 1]: Jaccard losses 1 - I/U = 1/2, 2/3, 1; their differences."""
    assert _lovasz_grad(torch.tensor([1.0, 0.0, 1.0])).tolist() == pytest.approx([0.5, 1 / 6, 1 / 3])


@pytest.mark.parametrize("loss", [lovasz_softmax_loss, soft_dice_loss])
def test_region_losses_ignore_void_and_give_gradients(loss):
    _, truth = _random_case(3)
    logits = torch.randn(2, 5, 9, 11, requires_grad=True)
    value = loss(logits, truth)
    value.backward()
    assert 0 < value.item() < 1 and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert logits.grad[:, :, 0, :].abs().max() == 0  # void pixels get no gradient
    changed = logits.detach().clone()
    changed[:, :, 0, :] = 50.0
    assert loss(changed, truth).item() == pytest.approx(value.item())
    assert loss(logits, torch.full_like(truth, 255)).item() == 0.0  # an all-void batch


def test_training_loss_adds_the_region_loss_to_the_cross_entropy():
    pred, truth = _random_case(4)
    logits = torch.randn(2, 5, 9, 11)
    ce, _, _ = training_loss(logits, truth, None, 0.0, "ce")
    both, total, weight = training_loss(logits, truth, None, 0.0, "ce+lovasz")
    assert both.item() == pytest.approx(ce.item() + lovasz_softmax_loss(logits, truth).item(), rel=1e-6)
    assert (total / weight).item() == pytest.approx(ce.item())  # the logged loss stays the cross-entropy
    dice, _, _ = training_loss(logits, truth, None, 0.0, "ce+dice")
    assert dice.item() == pytest.approx(ce.item() + soft_dice_loss(logits, truth).item(), rel=1e-6)
