"""The loaders of a run: strided evaluation shards, a training order that depends only on (seed, epoch),
and evaluation batches of the configured (or overridden) size, of images of one size."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from vocseg.config import Config
from vocseg.data.builder import build_datasets
from vocseg.data.copy_paste import CopyPasteCollate
from vocseg.data.loaders import EpochBatches, SameSizeBatches, StridedSampler, eval_loader, train_loader
from vocseg.data.transforms import collate_pad

CPU = torch.device("cpu")


class Recording(Dataset):
    """A dataset that records which indices were asked for, in order."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.asked = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i):
        self.asked.append(int(i))
        return self.inner[i]


def _config(tiny_voc, **changes) -> Config:
    base = dict(data_root=str(tiny_voc), num_workers=0, image_size=32, cache="none", batch_size=4)
    return Config(**{**base, **changes})


@pytest.fixture
def data(tiny_voc, vocseg_cache):
    return build_datasets(_config(tiny_voc).validate(), None)


def _epoch_order(data, cfg: Config, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The dataset indices of each batch the training loader yields for ``epoch``."""
    rec = Recording(data.train)
    loader = train_loader(dataclasses.replace(data, train=rec), cfg, epoch, CPU, rank, world)
    batches = []
    for images, _ in loader:
        batches.append(rec.asked[-len(images) :])
    return batches


# ----------------------------------------------------------------------------- StridedSampler


def test_strided_sampler_hand_case():
    assert list(StridedSampler(10, 1, 3)) == [1, 4, 7]
    assert list(StridedSampler(10, 0, 1)) == list(range(10))
    assert list(StridedSampler(2, 3, 4)) == [] and len(StridedSampler(2, 3, 4)) == 0


@pytest.mark.parametrize("n", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_strided_sampler_ranks_are_disjoint_and_cover_every_index(n, world):
    shards = [list(StridedSampler(n, rank, world)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))  # each index exactly once
    assert [len(StridedSampler(n, rank, world)) for rank in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced, no padding duplicates


# ----------------------------------------------------------------------------- train_loader


def test_train_order_depends_only_on_seed_and_epoch(data, tiny_voc, torch_global_state):
    cfg = _config(tiny_voc, seed=3)
    torch.manual_seed(0)
    first = _epoch_order(data, cfg, epoch=2)
    torch.manual_seed(1)  # the global generator does not choose the order
    again = _epoch_order(data, cfg, epoch=2)
    assert first == again
    assert len(first) == 3 and all(len(b) == 4 for b in first)  # 12 images in batches of 4
    assert sorted(i for b in first for i in b) == list(range(12))  # a permutation of the training set
    assert _epoch_order(data, cfg, epoch=3) != first
    assert _epoch_order(data, _config(tiny_voc, seed=4), epoch=2) != first


def test_same_seed_and_epoch_give_identical_batches(data, tiny_voc, torch_global_state):
    """Order from (seed, epoch); crops and flips (drawn in this process with 0 workers) from torch's global
    generator, which a checkpoint saves: with both the same, every batch is the same."""
    cfg = _config(tiny_voc, seed=0)

    def batches(epoch):
        torch.manual_seed(11)
        return list(train_loader(data, cfg, epoch, CPU, 0, 1))

    a, b = batches(1), batches(1)
    assert len(a) == len(b) == 3
    for (ia, ma), (ib, mb) in zip(a, b):
        assert ia.shape == (4, 3, 32, 32) and ma.shape == (4, 32, 32)
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    other = batches(2)
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, other))


def test_small_training_sets_keep_their_last_batch(data, tiny_voc):
    """drop_last only when the set is larger than one batch: a tiny set still gives a batch."""
    assert [len(b) for b in _epoch_order(data, _config(tiny_voc, batch_size=5), 0)] == [5, 5]  # 2 dropped
    assert [len(b) for b in _epoch_order(data, _config(tiny_voc, batch_size=12), 0)] == [12]
    assert [len(b) for b in _epoch_order(data, _config(tiny_voc, batch_size=20), 0)] == [12]


def test_distributed_ranks_train_on_disjoint_images(data, tiny_voc):
    cfg = _config(tiny_voc, batch_size=2)
    shards = [[i for b in _epoch_order(data, cfg, 0, rank, 2) for i in b] for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert sorted(shards[0] + shards[1]) == list(range(12))
    assert _epoch_order(data, cfg, 0, 0, 2) == _epoch_order(data, cfg, 0, 0, 2)
    assert _epoch_order(data, cfg, 1, 0, 2) != _epoch_order(data, cfg, 0, 0, 2)


def test_copy_paste_picks_its_collate(data, tiny_voc):
    assert train_loader(data, _config(tiny_voc), 0, CPU, 0, 1).collate_fn is collate_pad
    collate = train_loader(data, _config(tiny_voc, copy_paste=0.3), 0, CPU, 0, 1).collate_fn
    assert isinstance(collate, CopyPasteCollate) and collate.prob == 0.3


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(images.clone(), masks.clone()) for images, masks in loader]


def _assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (ia, ma), (ib, mb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ma, mb)


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_are_those_of_a_loader_built_for_each_epoch(workers, data, tiny_voc, torch_global_state):
    """The reference: the loader this module built before its workers persisted, a fresh DataLoader per epoch
    whose generator, seeded from (seed, epoch), drew the workers' base seed and then the order."""
    cfg = _config(tiny_voc, seed=5, num_workers=workers)
    for epoch in (0, 3):
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        old = DataLoader(
            data.train, 4, sampler=RandomSampler(data.train, generator=g), num_workers=workers,
            collate_fn=collate_pad, drop_last=True, generator=g,
        )  # fmt: skip
        torch.manual_seed(9)
        reference = _batches(old)
        torch.manual_seed(9)
        _assert_same_batches(_batches(train_loader(data, cfg, epoch, CPU, 0, 1)), reference)


class ProcessIds(Dataset):
    """Items that say which process made them (the image holds its process id)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return torch.full((1, 2, 2), float(os.getpid())), torch.zeros(2, 2, dtype=torch.int64)


def test_workers_persist_across_epochs_with_the_batches_of_fresh_ones(data, tiny_voc, torch_global_state):
    """One worker kept from epoch to epoch (reuse=) gives every epoch the batches a loader built for it alone
    gives (as after a resume), also after an epoch ended early (a time budget); it is the same process."""
    cfg = _config(tiny_voc, num_workers=1, photometric=True)
    fresh = {e: _batches(train_loader(data, cfg, e, CPU, 0, 1)) for e in (1, 2)}
    loader = train_loader(data, cfg, 0, CPU, 0, 1)
    assert loader.persistent_workers
    next(iter(loader))  # epoch 0 ends after one batch; its worker has prefetched more
    for epoch in (1, 2):
        loader = train_loader(data, cfg, epoch, CPU, 0, 1, reuse=loader)
        _assert_same_batches(_batches(loader), fresh[epoch])
    pids = dataclasses.replace(data, train=ProcessIds(12))
    loader = train_loader(pids, cfg, 0, CPU, 0, 1)
    first = {int(x) for images, _ in loader for x in images.flatten()}
    again = {int(x) for images, _ in train_loader(pids, cfg, 1, CPU, 0, 1, reuse=loader) for x in images.flatten()}
    assert first == again and len(first) == 1 and os.getpid() not in first


@pytest.mark.parametrize("workers", [0, 1])
def test_epoch_batches_start_the_next_epoch_at_the_last_batch_with_the_batches_of_fresh_loaders(
    workers, data, tiny_voc, torch_global_state
):
    """Chained EpochBatches give every epoch the batches a loader built for it alone gives. With a worker, the
    next epoch's iterator is made when this epoch's last batch arrives, before it is used (so the worker
    prepares the next epoch meanwhile), and handed on; the last epoch starts none; without workers none is."""
    cfg = _config(tiny_voc, num_workers=workers, photometric=True)
    torch.manual_seed(9)  # loading in the main process draws from the global generator, epoch after epoch
    fresh = {e: _batches(train_loader(data, cfg, e, CPU, 0, 1)) for e in (0, 1, 2)}
    torch.manual_seed(9)
    loader, previous = None, None
    for epoch, then in ((0, 1), (1, 2), (2, None)):
        loader = train_loader(data, cfg, epoch, CPU, 0, 1, reuse=loader)
        batches = EpochBatches(loader, epoch, then, previous)
        got, started_at = [], []
        for images, masks in batches:
            started_at.append(batches.started is not None)
            got.append((images.clone(), masks.clone()))
        _assert_same_batches(got, fresh[epoch])
        assert len(batches) == len(got) == len(fresh[epoch])
        prestarts = workers > 0 and then is not None
        assert started_at == [False] * (len(got) - 1) + [prestarts]
        if prestarts:
            assert loader.sampler.epoch == then
        previous = batches


def test_epoch_batches_after_an_epoch_cut_short_start_their_own(data, tiny_voc, torch_global_state):
    """An epoch that ends early (a time budget) starts no next iterator; the next epoch makes its own, with its
    own batches (the worker's prefetched leftovers of the cut epoch are dropped)."""
    cfg = _config(tiny_voc, num_workers=1)
    fresh = _batches(train_loader(data, cfg, 1, CPU, 0, 1))
    loader = train_loader(data, cfg, 0, CPU, 0, 1)
    cut = EpochBatches(loader, 0, then=1)
    next(iter(cut))
    assert cut.started is None
    loader = train_loader(data, cfg, 1, CPU, 0, 1, reuse=loader)
    _assert_same_batches(_batches(EpochBatches(loader, 1, None, previous=cut)), fresh)


# ----------------------------------------------------------------------------- eval_loader


def test_same_size_batches_group_by_size_and_share_batches_by_rank():
    sizes = [(4, 6), (6, 4), (4, 6), (4, 6), (6, 4), (4, 6)]
    assert list(SameSizeBatches(sizes, 2)) == [[0, 2], [3, 5], [1, 4]]
    assert list(SameSizeBatches(sizes, 3)) == [[0, 2, 3], [5], [1, 4]]
    shards = [list(SameSizeBatches(sizes, 2, rank, 2)) for rank in range(2)]
    assert shards == [[[0, 2], [1, 4]], [[3, 5]]]  # every image once over the ranks
    assert len(SameSizeBatches([], 4)) == 0


@pytest.fixture
def mixed_sizes(make_voc, vocseg_cache):
    """5 val images of two sizes, 0 2 3 one size and 1 4 the other, and 2 training ones."""
    g = np.random.default_rng(0)
    shapes = [(20, 28), (28, 20), (20, 28), (20, 28), (28, 20), (24, 24), (24, 24)]
    samples = {
        f"im{i}": (g.integers(0, 256, (*hw, 3), dtype=np.uint8), g.integers(0, 3, hw, dtype=np.uint8))
        for i, hw in enumerate(shapes)
    }
    root = make_voc(samples, {"val": [f"im{i}" for i in range(5)], "train": ["im5", "im6"]})
    cfg = Config(data_root=str(root.parents[1]), num_workers=0, cache="none", num_classes=3).validate()
    return build_datasets(cfg, None), cfg


def test_eval_loader_batches_only_images_of_one_size(mixed_sizes):
    data, cfg = mixed_sizes
    loader = eval_loader(data.val, dataclasses.replace(cfg, eval_batch_size=4), CPU)
    assert list(loader.batch_sampler) == [[0, 2, 3], [1, 4]]
    for (images, masks), indices in zip(loader, loader.batch_sampler):
        alone = [data.val[i] for i in indices]  # no padding: each image as it is alone
        assert torch.equal(images, torch.stack([a[0] for a in alone]))
        assert torch.equal(masks, torch.stack([a[1] for a in alone]))
    override = eval_loader(data.val, cfg, CPU, batch_size=2)
    assert list(override.batch_sampler) == [[0, 2], [3], [1, 4]]
    assert list(eval_loader(data.val, cfg, CPU).batch_sampler) == [[i] for i in range(5)]


def test_eval_loader_shards_by_rank_in_order(data, tiny_voc):
    loader = eval_loader(data.val, _config(tiny_voc), CPU, rank=1, world=2)
    assert list(loader.sampler) == [1, 3]
    rec = Recording(data.val)
    list(eval_loader(rec, _config(tiny_voc), CPU, rank=1, world=2))
    assert rec.asked == [1, 3]


def test_loader_options_on_cpu(data, tiny_voc):
    plain = eval_loader(data.val, _config(tiny_voc), CPU)
    assert plain.num_workers == 0 and plain.pin_memory is False and plain.prefetch_factor is None
    workers = eval_loader(data.val, dataclasses.replace(_config(tiny_voc), num_workers=1), CPU)
    assert workers.num_workers == 1 and workers.pin_memory is False and workers.prefetch_factor == 2
