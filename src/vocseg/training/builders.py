"""The model and optimizer of a training run, built from its Config (the loaders are in data.loaders)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config, parse_duration, replace
from ..models import create_model, get_model_entry

# compile: null compiles only a run that trains this many times the images that repay compiling: the one-off
# seconds vary with the host CPU, and the gain with the crop size and the GPU.
COMPILE_MARGIN = 2.0


def build_model(cfg: Config, for_loading: bool = False) -> nn.Module:
    """The model the config names. ``for_loading`` skips pretrained downloads: the weights come from a checkpoint."""
    return create_model(cfg.model, num_classes=cfg.num_classes, offline=for_loading, **cfg.model_kwargs)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def resolve_channels_last(cfg: Config) -> Config:
    """``cfg`` with ``channels_last: null`` replaced by the model's measured choice (its registry entry), so
    that a run's config.yaml records the memory format it trained in."""
    if cfg.channels_last is not None:
        return cfg
    return replace(cfg, channels_last=get_model_entry(cfg.model).channels_last)


def resolve_compile(cfg: Config, device: torch.device, steps: int, world: int = 1) -> tuple[bool, str]:
    """Whether the run compiles its model, and why. ``compile: null`` compiles only on CUDA, only a model whose
    registry entry measured a gain there (``gpu_compile``), and only when the run trains at least COMPILE_MARGIN
    times the images that repay the one-off seconds: ``steps`` x batch x ``world``, or with a budget the images
    the model trains eagerly in it at the measured rate (the compilation counts against the budget). On CPUs
    compiling took minutes and gained nothing (docs/benchmarks.md, sections (d) and (j))."""
    if cfg.compile is not None:
        return cfg.compile, f"compile: {str(cfg.compile).lower()} (set)"
    if torch.device(device).type != "cuda":
        return False, "compile: off (auto: not on CPUs)"
    speed = get_model_entry(cfg.model).gpu_compile
    if speed is None:
        return False, f"compile: off (auto: not measured for {cfg.model} on a GPU)"
    if cfg.budget is not None:
        images = parse_duration(cfg.budget) * speed.eager_ips
    else:
        images = steps * cfg.batch_size * world
    need = COMPILE_MARGIN * speed.breakeven_images
    on = images >= need
    why = f"auto: ~{images:,.0f} training images; it pays for {cfg.model} after {need:,.0f}"
    return on, f"compile: {'on' if on else 'off'} ({why})"
