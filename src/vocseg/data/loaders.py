"""The data loaders of a run: a seeded training loader whose workers persist across epochs, and strided
evaluation loaders that batch only images of one size."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

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


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """The indices of ``sizes`` grouped by size (in first-seen order of sizes), in batches of up to
    ``batch_size``: images that stack without padding."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        by_size[tuple(size)].append(i)
    return [group[j : j + batch_size] for group in by_size.values() for j in range(0, len(group), batch_size)]


class SameSizeBatches(Sampler):
    """Batches of up to ``batch_size`` indices whose images share one size (:func:`size_batches`), so no image
    is padded and each is evaluated at native resolution as it would be alone; rank's share of them
    (batches rank, rank + world, ...)."""

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.batches = size_batches(sizes, batch_size)[rank::world]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _epoch_generator(seed: int, epoch: int) -> tuple[torch.Generator, int]:
    """The generator of ``epoch``'s order, and the base seed of its workers (worker w seeds torch with base + w):
    its first draw, as DataLoader draws it when the generator is the loader's."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return g, int(torch.empty((), dtype=torch.int64).random_(generator=g).item())


class EpochSampler(Sampler):
    """``(epoch, index)`` pairs in the order of the epoch ``set_epoch`` chose, which depends only on (seed,
    epoch): a permutation of all indices, or with ``world`` > 1 DistributedSampler's share for ``rank``. Each
    index carries its epoch to the workers, which reseed when it changes (:class:`EpochItems`)."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.epoch = n, seed, 0
        self.shard = None
        if world > 1:
            self.shard = torch.utils.data.DistributedSampler(
                range(n), world, rank, shuffle=True, seed=seed, drop_last=True
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shard is not None:
            self.shard.set_epoch(epoch)

    def __iter__(self):
        if self.shard is not None:
            order = list(self.shard)
        else:  # the permutation after the workers' base seed: a loader built per epoch drew them in this order
            order = torch.randperm(self.n, generator=_epoch_generator(self.seed, self.epoch)[0]).tolist()
        return iter([(self.epoch, i) for i in order])

    def __len__(self) -> int:
        return len(self.shard) if self.shard is not None else self.n


class EpochItems(Dataset):
    """``dataset[i]`` for EpochSampler's ``(epoch, i)``. In a loader worker the first item of each epoch seeds
    torch's and Python's generators from (seed, epoch, worker id) as DataLoader seeds a fresh worker, so a
    worker that persists across epochs draws each epoch's augmentation as a loader built for that epoch alone
    (a resumed run's) does. Loading in the main process, the draws come from the global generator as before."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, i = key
        worker = get_worker_info()
        if worker is not None and epoch != self.epoch:
            self.epoch = epoch
            seed = _epoch_generator(self.seed, epoch)[1] + worker.id
            random.seed(seed)
            torch.manual_seed(seed)
        return self.dataset[i]


def train_loader(
    data: DataBundle,
    cfg: Config,
    epoch: int,
    device: torch.device,
    rank: int,
    world: int,
    reuse: DataLoader | None = None,
) -> DataLoader:
    """The training loader of ``epoch``: its order depends only on (seed, epoch), and so do its workers'
    augmentation draws (EpochItems); loading in the main process they come from the global RNG that last.pt
    saves. Either way resuming at an epoch boundary replays exactly the batches an uninterrupted run would have seen.
    ``reuse``, the loader of the run's previous epoch, is set to ``epoch`` and returned: its worker processes
    persist instead of starting again each epoch.

    With augmentation on the device (config ``augment_on``), items are the raw windows crops need, with the
    same draws made here, collated as lists (data.device_augment); its DeviceAugment finishes the batches."""
    if reuse is not None:
        reuse.sampler.set_epoch(epoch)
        return reuse
    sampler = EpochSampler(len(data.train), cfg.seed, rank, world)
    sampler.set_epoch(epoch)
    on_device = resolve_augment_on(cfg.augment_on, device) == "device"
    collate = CopyPasteCollate(cfg.copy_paste) if cfg.copy_paste else collate_pad
    options = _loader_options(cfg, device)
    return DataLoader(
        EpochItems(RawTrainItems(data.train) if on_device else data.train, cfg.seed),
        batch_size=cfg.batch_size,
        sampler=sampler,
        collate_fn=RawCollate(cfg.copy_paste) if on_device else collate,
        drop_last=len(data.train) // world > cfg.batch_size,  # BN needs >1 sample; keep tiny sets usable
        generator=torch.Generator(),  # the workers' start-up seeds (EpochItems replaces them), not the global RNG
        persistent_workers=options["num_workers"] > 0,
        **options,
    )


class EpochBatches:
    """``epoch``'s batches of a training loader (train_loader's, its sampler set to ``epoch``): exactly
    ``len(loader)`` of them, iterated once.

    ``then`` is the epoch that follows, when one will run. With loader workers, that epoch's iterator is made as
    soon as this epoch's last batch has arrived: the persistent workers then prepare its first batches while
    this epoch's last steps run. Without this, each epoch's first batch kept the GPU waiting 1.5-2 steps on an
    H100 (docs/benchmarks.md, section (j)). The next EpochBatches takes that iterator over (``previous``).
    Which batches an epoch gets is unchanged: its order and its workers' draws depend only on (seed, epoch)."""

    def __init__(
        self, loader: DataLoader, epoch: int, then: int | None = None, previous: EpochBatches | None = None
    ) -> None:
        self.loader, self.epoch, self.then = loader, epoch, then
        handed_on = previous is not None and previous.loader is loader and previous.then == epoch
        self._iterator = previous.started if handed_on else None
        self.started = None  # ``then``'s iterator, once made

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator, self._iterator = self._iterator or self._start(self.epoch), None
        for i in range(len(self.loader)):
            batch = next(iterator, None)
            if batch is None:
                return
            if i == len(self.loader) - 1 and self.then is not None and self.loader.num_workers > 0:
                self.started = self._start(self.then)
            yield batch

    def _start(self, epoch: int):
        self.loader.sampler.set_epoch(epoch)
        return iter(self.loader)


def eval_loader(
    dataset: Dataset, cfg: Config, device: torch.device, rank: int = 0, world: int = 1, batch_size: int | None = None
) -> DataLoader:
    """Evaluation batches of up to ``cfg.eval_batch_size`` images (``batch_size`` overrides it) of one size,
    read from the masks' headers (a mask is as large as its image): every image at native resolution, unpadded."""
    size = batch_size or cfg.eval_batch_size
    options = dict(collate_fn=collate_pad, **_loader_options(cfg, device))
    if size == 1:
        return DataLoader(dataset, batch_size=1, sampler=StridedSampler(len(dataset), rank, world), **options)
    return DataLoader(dataset, batch_sampler=SameSizeBatches(dataset.mask_sizes, size, rank, world), **options)


def _loader_options(cfg: Config, device: torch.device) -> dict:
    """Workers per device (see runtime.workers.resolve_workers); on CUDA pinned memory and prefetching."""
    workers = resolve_workers(cfg.num_workers, device)
    options: dict = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options["prefetch_factor"] = 4 if device.type == "cuda" else 2
    return options
