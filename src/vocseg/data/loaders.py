"""The data loaders of a run: a fresh, seeded training loader per epoch and strided evaluation loaders."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config
from ..runtime.workers import resolve_workers
from .builder import DataBundle
from .copy_paste import CopyPasteCollate
from .device_augment import RawCollate, RawTrainItems, resolve_augment_on
from .transforms import collate_pad


class StridedSampler(Sampler):
    """Indices rank, rank + world, ...: each rank evaluates a disjoint part, with no padding duplicates."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(data: DataBundle, cfg: Config, epoch: int, device: torch.device, rank: int, world: int) -> DataLoader:
    """A fresh loader per epoch whose order depends only on (seed, epoch). The augmentation draws come from
    the workers' seeds, which the same generator sets, or, loading in the main process, from the global
    RNG that last.pt saves: resuming at an epoch boundary replays exactly the batches an uninterrupted
    run would have seen.

    With augmentation on the device (config ``augment_on``), items are the raw windows crops need, with the
    same draws made here, collated as lists (data.device_augment); its DeviceAugment finishes the batches."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if world > 1:
        sampler = torch.utils.data.DistributedSampler(
            data.train, world, rank, shuffle=True, seed=cfg.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
    else:
        sampler = torch.utils.data.RandomSampler(data.train, generator=g)
    on_device = resolve_augment_on(cfg.augment_on, device) == "device"
    collate = CopyPasteCollate(cfg.copy_paste) if cfg.copy_paste else collate_pad
    return DataLoader(
        RawTrainItems(data.train) if on_device else data.train,
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=RawCollate(cfg.copy_paste) if on_device else collate,
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
    """Workers per device (see runtime.workers.resolve_workers); on CUDA pinned memory and prefetching."""
    workers = resolve_workers(cfg.num_workers, device)
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options["prefetch_factor"] = 4 if device.type == "cuda" else 2
    return options
