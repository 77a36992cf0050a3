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


# ----------------------------------------------------------------------------- compile: null


CUDA = torch.device("cuda")  # a device object needs no GPU


def test_compile_set_in_the_config_is_kept_everywhere():
    for value in (True, False):
        for device in (torch.device("cpu"), CUDA):
            assert builders.resolve_compile(Config(model="unet", compile=value), device, 10)[0] is value


def test_compile_null_is_off_on_cpus_and_for_unmeasured_or_slower_models():
    assert builders.resolve_compile(Config(model="unet"), torch.device("cpu"), 10**9) == (
        False,
        "compile: off (auto: not on CPUs)",
    )
    on, why = builders.resolve_compile(Config(model="lraspp_mobilenet_v3_large"), CUDA, 10**9)
    assert not on and "not measured for lraspp_mobilenet_v3_large" in why
    # measured slower compiled: no run is long enough
    assert not builders.resolve_compile(Config(model="transfer_unet"), CUDA, 10**12)[0]


def test_compile_null_on_cuda_compiles_runs_that_repay_it():
    """unet on an H100: 140.3 img/s eager, 198.3 compiled, 12.5 s to compile. Each image saves
    1/140.3 - 1/198.3 s, so the one-off is repaid after 12.5 / that = 5,996 images; with the margin of 2,
    a run of 11,992 images or more compiles."""
    speed = builders.get_model_entry("unet").gpu_compile
    assert speed.breakeven_images == pytest.approx(12.5 / (1 / 140.3 - 1 / 198.3))
    need = builders.COMPILE_MARGIN * speed.breakeven_images
    assert 11_990 < need < 11_993
    cfg = Config(model="unet", batch_size=16)
    assert not builders.resolve_compile(cfg, CUDA, 749)[0]  # 11,984 images
    on, why = builders.resolve_compile(cfg, CUDA, 750)  # 12,000 images
    assert on and "~12,000 training images" in why and "after 11,992" in why
    assert builders.resolve_compile(cfg, CUDA, 375, world=2)[0]  # steps count every process's batch
    # with a budget, the images it trains eagerly at the measured rate: 60 s x 140.3 = 8,418 < 11,992 < 120 s'
    assert not builders.resolve_compile(Config(model="unet", budget="60s"), CUDA, 10**9)[0]
    assert builders.resolve_compile(Config(model="unet", budget="2m"), CUDA, 1)[0]
