"""The weight average (vocseg.ema) against a hand-written average of state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vocseg.training.ema import ModelEma, ema_decay_at


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model.train()
    loss = model(torch.randn(2, 3, 8, 8)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_decay_warms_up_then_holds():
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10) == pytest.approx(11 / 20)
    assert ema_decay_at(0.999, 100_000) == 0.999
    assert ema_decay_at(0.0, 1) == 0.0  # decay 0: the copy is the model


def test_update_matches_a_hand_computed_average_of_weights_and_bn_statistics():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = ModelEma(model, decay=0.6)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(1, 6):
        _train_step(model, opt)
        ema.update(model)
        d = ema_decay_at(0.6, n)
        for k, v in model.state_dict().items():
            reference[k] = d * reference[k] + (1 - d) * v if v.is_floating_point() else v.clone()
    got = ema.module.state_dict()
    assert ema.updates == 5
    for k, v in reference.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7, msg=k)
    # the average differs from the trained weights, running statistics included
    assert not torch.allclose(got["1.running_mean"], model.state_dict()["1.running_mean"])
    assert torch.equal(got["1.num_batches_tracked"], model.state_dict()["1.num_batches_tracked"])


def test_copy_is_frozen_in_eval_mode_and_keeps_the_memory_format():
    model = _model().to(memory_format=torch.channels_last)
    ema = ModelEma(model, decay=0.9)
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.module[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.requires_grad for p in model.parameters())  # the trained model is untouched


def test_state_dict_round_trip_continues_the_same_average():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    a = ModelEma(model, decay=0.9)
    for _ in range(3):
        _train_step(model, opt)
        a.update(model)
    b = ModelEma(_model(), decay=0.9)  # a resumed run: fresh copy, then the saved weights and counter
    b.module.load_state_dict(a.module.state_dict())
    b.load_state_dict(a.state_dict())
    _train_step(model, opt)
    a.update(model)
    b.update(model)
    for k, v in a.module.state_dict().items():
        assert torch.equal(v, b.module.state_dict()[k]), k


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_is_refused_naming_the_value(decay):
    with pytest.raises(ValueError, match=repr(decay)):
        ModelEma(_model(), decay)
