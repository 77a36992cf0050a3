"""Speed switches: channels-last gives the same logits, compile falls back to eager with a message."""

from __future__ import annotations

import pytest
import torch

import vocseg.runtime.wrappers as speed
from vocseg.models import create_model, get_model_entry, list_models

CHANNELS_LAST_MODELS = [n for n in list_models() if get_model_entry(n).channels_last]


@pytest.mark.parametrize("name", CHANNELS_LAST_MODELS)
def test_channels_last_model_gives_the_same_logits(name):
    """Every model that trains channels-last by default computes what it computes in contiguous memory."""
    torch.manual_seed(0)
    model = create_model(name, offline=True).eval()
    x = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        ref = model(x)
        wrapped = speed.wrap_for_speed(model, torch.device("cpu"), channels_last=True)
        out = wrapped(x.contiguous(memory_format=torch.channels_last))
    # float rounding differs with the memory layout: errors relative to the logits' scale (deep random nets
    # give logits in the hundreds)
    err = (ref - out).abs().max() / ref.abs().max()
    if name == "unpool":
        # Max-unpooling puts each value where its pooling window's max was: when rounding in the other layout
        # reorders two near-equal values, the max moves and the error jumps past rounding size (on AVX2
        # CPUs). The masks must still agree almost everywhere.
        assert err < 1e-2 and (ref.argmax(1) == out.argmax(1)).float().mean() > 0.995, err
    else:
        assert err < 1e-5, err


def test_compile_failure_falls_back_to_eager_with_one_message(monkeypatch):
    def broken(model, **kwargs):
        raise RuntimeError("no C++ compiler found\nlong traceback text")

    monkeypatch.setattr(speed.torch, "compile", broken)
    messages: list[str] = []
    model = create_model("fcn")
    out = speed.wrap_for_speed(model, torch.device("cpu"), compile=True, log=messages.append)
    assert out is model
    assert len(messages) == 1 and "no C++ compiler found" in messages[0] and "eagerly" in messages[0]
    assert "traceback" not in messages[0]


def test_compile_probes_the_backend_with_its_own_function_not_the_model(monkeypatch):
    """The early check compiles a tiny function: the model's first compilation is then its training step,
    not an eval-mode forward of another shape (which would make training's a dynamic-shape one)."""
    compiled: list = []

    def record(fn, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(speed.torch, "compile", record)
    model = create_model("fcn")
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    out = speed.wrap_for_speed(model, torch.device("cpu"), compile=True)
    assert compiled == [speed._probe, model] and out is model and not calls


def test_eager_strips_only_the_compile_wrapper():
    model = create_model("fcn")
    assert speed.eager(model) is model
    wrapped = torch.compile(model)  # lazy: nothing is compiled until it is called
    assert speed.eager(wrapped) is model
