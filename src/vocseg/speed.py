"""Speed switches applied to a built model: channels-last, SyncBatchNorm, DDP and torch.compile.

Each is a config key (``channels_last``, ``sync_bn``, ``compile``); their measured effect per model and
device is in docs/benchmarks.md. ``channels_last: null`` (the default) takes the model's measured choice
from its registry entry; the others are off unless asked for.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import Config, replace
from .models import get_model_entry


def resolve_channels_last(cfg: Config) -> Config:
    """``cfg`` with ``channels_last: null`` replaced by the model's measured choice, so that a run's
    config.yaml records the memory format it trained in."""
    if cfg.channels_last is not None:
        return cfg
    return replace(cfg, channels_last=get_model_entry(cfg.model).channels_last)


def wrap_for_speed(
    model: nn.Module, cfg: Config, device: torch.device, world: int, log: Callable[[str], None] | None
) -> nn.Module:
    """The model as training runs it. The returned module shares parameters with ``model``."""
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        if cfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
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
