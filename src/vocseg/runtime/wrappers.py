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

    torch.compile is lazy: a missing C++ compiler or Triton only shows at the first call, so a tiny
    forward is tried here, in eval mode and without gradients, to fail early rather than mid-epoch."""
    try:
        compiled = torch.compile(model)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            param = next(model.parameters())
            compiled(torch.zeros(1, 3, 64, 64, device=param.device))
        model.train(was_training)
        return compiled
    except Exception as e:  # noqa: BLE001 - any backend failure means: run eagerly
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if log is not None:
            log(f"compile: torch.compile is not usable here ({first[:200]}); training eagerly instead")
        return model
