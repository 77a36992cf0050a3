"""The wrappers a built model may run in: channels-last, SyncBatchNorm, DDP and torch.compile, and
:func:`unwrap` to get the plain module back.

Their measured effect per model and device is in docs/benchmarks.md, section (d).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP and torch.compile's wrappers (what is saved and evaluated)."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper


def wrap_for_speed(
    model: nn.Module,
    device: torch.device,
    *,
    channels_last: bool = False,
    sync_bn: bool = False,
    compile: bool = False,
    world: int = 1,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """The model as training runs it. The returned module shares parameters with ``model``."""
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        model = compile_or_eager(model, log)
    return model


def compile_or_eager(model: nn.Module, log: Callable[[str], None] | None) -> nn.Module:
    """``torch.compile(model)``, or the eager model with a message when this machine cannot compile.

    torch.compile is lazy: a missing C++ compiler or Triton only shows at the first call, so a tiny function is
    compiled and run here first, on the model's device, to fail early rather than mid-epoch. Not the model
    itself: a probe of another shape or mode would make its first training compile a dynamic-shape one."""
    try:
        param = next(model.parameters())
        torch.compile(_probe)(torch.ones(4, device=param.device))
        return torch.compile(model)
    except Exception as e:  # noqa: BLE001 - any backend failure means: run eagerly
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if log is not None:
            log(f"compile: torch.compile is not usable here ({first[:200]}); training eagerly instead")
        return model


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * 2 + 1)


def eager(model: nn.Module) -> nn.Module:
    """``model`` without torch.compile's wrapper (DDP stays): evaluation runs eagerly, since native-size images
    of many shapes and eval mode would each cost a compilation."""
    return getattr(model, "_orig_mod", model)
