"""The peak FLOP/s table behind MFU: lookup by the names torch.cuda.get_device_name() returns, and the
overrides. Reference: the vendors' datasheets (dense bf16 = half the printed sparse figure)."""

from __future__ import annotations

import pytest
import torch

from vocseg.errors import VocsegError
from vocseg.runtime.peak_flops import PEAK_ENV, peak_flops, peak_flops_for_name


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),  # SXM
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H100 NVL", 835),
        ("NVIDIA H200", 989),
        ("NVIDIA H200 NVL", 835),
        ("NVIDIA GH200 480GB", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100-PCIE-40GB", 312),
        ("NVIDIA A10", 125),
        ("NVIDIA L4", 121),
        ("NVIDIA L40S", 362),
        ("NVIDIA L40", 181),
        ("AMD Instinct MI300X", 1307),
    ],
)
def test_known_devices(name, tflops):
    assert peak_flops_for_name(name) == tflops * 1e12


@pytest.mark.parametrize("name", ["NVIDIA A10G", "Tesla T4", "Tesla V100-SXM2-16GB", "NVIDIA GeForce RTX 4090", ""])
def test_unknown_devices(name):
    assert peak_flops_for_name(name) is None


def test_cpu_has_no_peak_unless_given(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", override_tflops=2.5) == 2.5e12
    monkeypatch.setenv(PEAK_ENV, "100")
    assert peak_flops("cpu") == 100e12
    assert peak_flops("cpu", override_tflops=50) == 50e12  # the argument wins over the environment


def test_cuda_device_is_looked_up_by_name(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert peak_flops() == 989e12 and peak_flops("cuda:0") == 989e12


@pytest.mark.parametrize("bad", ["fast", "0", "-3", "inf", "nan"])
def test_bad_overrides_name_the_value(monkeypatch, bad):
    monkeypatch.setenv(PEAK_ENV, bad)
    with pytest.raises(VocsegError, match=f"{PEAK_ENV}.*{bad!r}"):
        peak_flops("cpu")
    monkeypatch.delenv(PEAK_ENV)
    with pytest.raises(VocsegError, match="not a positive number"):
        peak_flops("cpu", override_tflops=bad)
