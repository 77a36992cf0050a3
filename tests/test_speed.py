"""Speed switches: channels-last gives the same logits, compile falls back to eager with a message."""

from __future__ import annotations

import torch

import vocseg.speed as speed
from vocseg.config import Config
from vocseg.models import create_model


def test_channels_last_model_gives_the_same_logits():
    torch.manual_seed(0)
    model = create_model("fcn").eval()
    x = torch.randn(1, 3, 37, 45)
    ref = model(x)
    wrapped = speed.wrap_for_speed(model, Config(channels_last=True), torch.device("cpu"), 1, None)
    out = wrapped(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)


def test_compile_failure_falls_back_to_eager_with_one_message(monkeypatch):
    def broken(model, **kwargs):
        raise RuntimeError("no C++ compiler found\nlong traceback text")

    monkeypatch.setattr(speed.torch, "compile", broken)
    messages: list[str] = []
    model = create_model("fcn")
    out = speed.wrap_for_speed(model, Config(compile=True), torch.device("cpu"), 1, messages.append)
    assert out is model
    assert len(messages) == 1 and "no C++ compiler found" in messages[0] and "eagerly" in messages[0]
    assert "traceback" not in messages[0]
