"""Device and precision choice: resolve_device, resolve_amp (and the CPU's native-bf16 check), autocast,
and moving a batch onto the device in the model's memory format."""

from __future__ import annotations

import contextlib

import pytest
import torch

from vocseg.errors import VocsegError
from vocseg.runtime.device import autocast, cpu_has_native_bf16, resolve_amp, resolve_device, to_device_input

CPU = torch.device("cpu")


@pytest.fixture
def no_accelerator(monkeypatch):
    """Neither CUDA nor MPS, whatever machine runs the tests."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _native_bf16(monkeypatch, avx512: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


# ----------------------------------------------------------------------------- resolve_device


def test_auto_without_an_accelerator_is_the_cpu(no_accelerator):
    assert resolve_device("auto") == CPU
    assert resolve_device() == CPU


def test_auto_with_cuda_takes_the_local_ranks_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_named_devices_are_read_by_torch(no_accelerator):
    assert resolve_device("cpu") == CPU
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "cuda:x"])
def test_an_unknown_device_is_an_error_naming_it(name):
    with pytest.raises(VocsegError, match=f"unknown device '{name}'"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_an_error_naming_it(no_accelerator, name):
    with pytest.raises(VocsegError, match=f"device '{name}' requested but CUDA is not available"):
        resolve_device(name)


# ----------------------------------------------------------------------------- resolve_amp


@pytest.mark.parametrize("device", [CPU, torch.device("cuda", 0), torch.device("mps")])
def test_explicit_amp_choices_ignore_the_device(device):
    assert resolve_amp("none", device) is None
    assert resolve_amp("bf16", device) is torch.bfloat16
    assert resolve_amp("fp16", device) is torch.float16


@pytest.mark.parametrize("amp", ["fp8", "BF16", "", "float16"])
def test_an_unknown_amp_lists_the_choices(amp):
    with pytest.raises(VocsegError) as info:
        resolve_amp(amp, CPU)
    message = str(info.value)
    assert repr(amp) in message
    for choice in ("auto", "none", "bf16", "fp16"):
        assert choice in message.split("valid choices:")[1]


@pytest.mark.parametrize(
    ("avx512", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True), (True, True, True)]
)
def test_auto_amp_on_cpu_follows_native_bf16(monkeypatch, avx512, amx, native):
    _native_bf16(monkeypatch, avx512, amx)
    assert cpu_has_native_bf16() is native
    assert resolve_amp("auto", CPU) is (torch.bfloat16 if native else None)


def test_auto_amp_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_amp("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_amp("auto", cuda) is torch.float16


def test_auto_amp_on_mps_is_full_precision(monkeypatch):
    _native_bf16(monkeypatch, True, True)  # the CPU's bf16 says nothing about another device
    assert resolve_amp("auto", torch.device("mps")) is None


# ----------------------------------------------------------------------------- autocast and inputs


def test_autocast_none_is_a_null_context():
    ctx = autocast(CPU, None)
    assert isinstance(ctx, contextlib.nullcontext)
    a, b = torch.randn(4, 5), torch.randn(5, 3)
    with ctx:
        out = a @ b
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.from_numpy(a.numpy() @ b.numpy()))


def test_bf16_autocast_makes_a_matmul_bf16():
    a, b = torch.randn(4, 5), torch.randn(5, 3)
    with autocast(CPU, torch.bfloat16):
        out = a @ b
    assert out.dtype == torch.bfloat16
    assert torch.is_autocast_enabled("cpu") is False  # left on exit
    torch.testing.assert_close(out.float(), a @ b, atol=0.1, rtol=0.05)


def test_to_device_input_makes_channels_last_only_when_asked():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    last = to_device_input(x, CPU, channels_last=True)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert last.stride() == (60, 1, 15, 3)  # (N, H, W, C) order in memory
    assert last.device == CPU and torch.equal(last, x)
    plain = to_device_input(x, CPU, channels_last=False)
    assert plain.is_contiguous() and plain.stride() == x.stride() and torch.equal(plain, x)
