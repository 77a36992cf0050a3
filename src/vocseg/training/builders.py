"""The model and optimizer of a training run, built from its Config (the loaders are in data.loaders)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config, replace
from ..models import create_model, get_model_entry


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
