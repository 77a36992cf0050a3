"""The model and optimizer of a run from its Config, and the channels-last choice it records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vocseg.training.builders as builders
from vocseg.config import Config
from vocseg.errors import VocsegError


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


# ----------------------------------------------------------------------------- build_optimizer


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_optimizer_type_lr_and_weight_decay(name, cls):
    model = _tiny_model()
    opt = builders.build_optimizer(Config(optimizer=name, lr=0.02, weight_decay=0.003, momentum=0.7), model)
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.003
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]
    if name == "sgd":
        assert group["momentum"] == 0.7


def test_adam_and_adamw_keep_their_weight_decay_apart():
    """Adam adds the decay to the gradient, AdamW shrinks the weights: one step from the same start differs."""
    results = {}
    for name in ("adam", "adamw"):
        model = nn.Linear(1, 1, bias=False)
        nn.init.constant_(model.weight, 2.0)
        opt = builders.build_optimizer(Config(optimizer=name, lr=0.1, weight_decay=0.5), model)
        model.weight.grad = torch.ones_like(model.weight)
        opt.step()
        results[name] = model.weight.item()
    # Adam: g = 1 + 0.5 * 2 = 2, the first bias-corrected step is lr * sign(g): 2 - 0.1
    assert results["adam"] == pytest.approx(1.9, abs=1e-6)
    # AdamW: 2 * (1 - lr * wd) = 1.9, then the step lr * sign(g) = 0.1: 1.8
    assert results["adamw"] == pytest.approx(1.8, abs=1e-6)


def test_sgd_step_by_hand():
    """Two SGD steps with momentum and weight decay, against the update rule written out."""
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    opt = builders.build_optimizer(Config(optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=0.9), model)
    w, buf = torch.tensor([[1.0, -2.0]]), None
    for grad in (torch.tensor([[0.5, 0.25]]), torch.tensor([[-1.0, 2.0]])):
        model.weight.grad = grad.clone()
        opt.step()
        d = grad + 0.01 * w
        buf = d if buf is None else 0.9 * buf + d
        w = w - 0.1 * buf
        torch.testing.assert_close(model.weight.detach(), w)


def test_only_trainable_parameters_are_optimized():
    model = _tiny_model()
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = builders.build_optimizer(Config(optimizer="adamw"), model)
    optimized = {id(p) for g in opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in [*model[1].parameters(), *model[2].parameters()]}
    assert not optimized & {id(p) for p in model[0].parameters()}


# ----------------------------------------------------------------------------- build_model


def test_build_model_passes_the_configs_model_and_offline_only_for_loading(monkeypatch):
    calls = []
    monkeypatch.setattr(builders, "create_model", lambda name, **kw: calls.append((name, kw)) or nn.Identity())
    cfg = Config(model="unet", num_classes=5, model_kwargs={"base_channels": 4})
    builders.build_model(cfg)
    builders.build_model(cfg, for_loading=True)
    assert calls == [
        ("unet", {"num_classes": 5, "offline": False, "base_channels": 4}),
        ("unet", {"num_classes": 5, "offline": True, "base_channels": 4}),
    ]


def test_build_model_for_loading_downloads_nothing(offline):
    """A pretrained transfer model without cached weights: for loading it builds with no network call,
    for training it fails (the weights are missing and the network is off)."""
    cfg = Config(model="transfer", num_classes=3, model_kwargs={"encoder": "resnet18"})
    model = builders.build_model(cfg, for_loading=True)
    assert offline == []
    assert model.classifier.out_channels == 3
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(VocsegError, match="resnet18"):
        builders.build_model(cfg)


def test_build_model_gives_the_registry_model():
    model = builders.build_model(Config(model="unet", num_classes=4, model_kwargs={"base_channels": 4}))
    assert type(model).__name__ == "UNet"
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 4, 16, 16)


# ----------------------------------------------------------------------------- resolve_channels_last


def test_channels_last_null_takes_the_models_measured_choice():
    assert builders.resolve_channels_last(Config(model="transfer_unet")).channels_last is True
    assert builders.resolve_channels_last(Config(model="unet")).channels_last is False
    assert builders.resolve_channels_last(Config(model="unet", channels_last=True)).channels_last is True
    assert builders.resolve_channels_last(Config(model="fcn", channels_last=False)).channels_last is False
