"""Which device and which autocast precision a run uses, and moving inputs onto that device."""

from __future__ import annotations

import contextlib
import os

import torch

from ..config import CHOICES
from ..errors import VocsegError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the local rank's CUDA device, else MPS, else the CPU; any other name as torch reads it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VocsegError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VocsegError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full fp32)."""
    if amp not in CHOICES["amp"]:
        raise VocsegError(f"unknown amp {amp!r}; valid choices: {', '.join(CHOICES['amp'])}")
    if amp == "none":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware has it (Ampere+ GPUs; CPUs with AVX512-BF16 or AMX), else fp16 on CUDA
    # and fp32 on other CPUs, where bf16 is emulated and slower than fp32 (docs/benchmarks.md, "Precision").
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``'s type; a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device_input(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on ``device`` (non-blocking from pinned memory), channels-last when the model runs so."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images
