"""Everything a training run is built from a Config, in one place: model, optimizer, scheduler, loaders.

``train.py`` calls these and nothing else builds them, so a new optimizer or loader option is added here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import Config
from .data.builder import DataBundle
from .data.copy_paste import CopyPasteCollate
from .data.transforms import collate_pad
from .models import create_model
from .system import resolve_workers


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


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's cosine is stepped once per epoch with T_max = epochs; "none" keeps the LR constant."""
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


class StridedSampler(Sampler):
    """Indices rank, rank + world, ...: each rank evaluates a disjoint part, with no padding duplicates."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(data: DataBundle, cfg: Config, epoch: int, device: torch.device, rank: int, world: int) -> DataLoader:
    """A fresh loader per epoch whose order and augmentation depend only on (seed, epoch): resuming at an
    epoch boundary replays exactly the batches an uninterrupted run would have seen."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(
            data.train, world, rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(data.train, generator=g)
    return DataLoader(
        data.train,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=CopyPasteCollate(cfg.copy_paste) if cfg.copy_paste else collate_pad,
        drop_last=len(data.train) // world > cfg.batch_size,  # BN needs >1 sample; keep tiny sets usable
        generator=g,
        **_loader_options(cfg, device),
    )


def eval_loader(
    dataset: Dataset, cfg: Config, device: torch.device, rank: int = 0, world: int = 1, batch_size: int | None = None
) -> DataLoader:
    """Evaluation batches of ``cfg.eval_batch_size`` images (``batch_size`` overrides it)."""
    return DataLoader(
        dataset,
        batch_size=batch_size or cfg.eval_batch_size,
        sampler=StridedSampler(len(dataset), rank, world),
        collate_fn=collate_pad,
        **_loader_options(cfg, device),
    )


def _loader_options(cfg: Config, device: torch.device) -> dict:
    """Workers per device (see system.resolve_workers); on CUDA pinned memory and prefetching."""
    workers = resolve_workers(cfg.num_workers, device)
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options["prefetch_factor"] = 4 if device.type == "cuda" else 2
    return options
