"""Copy-paste between a batch's crops (vocseg.data.copy_paste): what moves, what stays, and that the
training loader applies it reproducibly."""

from __future__ import annotations

import pytest
import torch

from vocseg.config import Config
from vocseg.data.builder import build_datasets
from vocseg.data.copy_paste import CopyPasteCollate, copy_paste
from vocseg.data.loaders import train_loader
from vocseg.errors import VocsegError


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4x5 crops. Crop 0: an object of class 3, a void band and padding (255). Crop 1: class 7 and
    class 2 objects on background."""
    masks = torch.tensor(
        [
            [[0, 0, 0, 255, 255], [0, 3, 3, 255, 255], [0, 3, 3, 255, 255], [0, 255, 0, 255, 255]],
            [[7, 7, 0, 0, 0], [7, 7, 0, 0, 2], [0, 0, 0, 0, 2], [0, 0, 0, 0, 0]],
        ],
        dtype=torch.uint8,
    )
    images = torch.stack([torch.full((3, 4, 5), -1.0), torch.arange(60, dtype=torch.float32).view(3, 4, 5)])
    return images, masks


def test_each_crop_receives_the_other_crops_objects_only():
    images, masks = _batch()
    out_images, out_masks = copy_paste(images, masks, prob=1.0)  # two crops: each is the other's donor
    for i, donor in ((0, 1), (1, 0)):
        objects = (masks[donor] != 0) & (masks[donor] != 255)
        assert torch.equal(out_masks[i][objects], masks[donor][objects])
        assert torch.equal(out_images[i][:, objects], images[donor][:, objects])
        assert torch.equal(out_masks[i][~objects], masks[i][~objects])  # background, void, padding: not moved
        assert torch.equal(out_images[i][:, ~objects], images[i][:, ~objects])
    # Hand-checked: crop 1's class 7 lands on crop 0's corner; crop 0's class 3 object covers crop 1's centre
    # (read from the batch as it came, so crop 1 does not get its own class 7 back through crop 0).
    assert out_masks[0].tolist() == [[7, 7, 0, 255, 255], [7, 7, 3, 255, 2], [0, 3, 3, 255, 2], [0, 255, 0, 255, 255]]
    assert out_masks[1].tolist() == [[7, 7, 0, 0, 0], [7, 3, 3, 0, 2], [0, 3, 3, 0, 2], [0, 0, 0, 0, 0]]
    assert torch.equal(images, _batch()[0]) and torch.equal(masks, _batch()[1])  # inputs untouched


def test_probability_zero_and_single_crops_change_nothing():
    images, masks = _batch()
    for out_images, out_masks in (copy_paste(images, masks, 0.0), copy_paste(images[:1], masks[:1], 1.0)):
        n = out_images.shape[0]
        assert torch.equal(out_images, images[:n]) and torch.equal(out_masks, masks[:n])


def test_collate_refuses_crops_of_different_sizes_and_bad_probabilities():
    batch = [(torch.zeros(3, 4, 5), torch.zeros(4, 5, dtype=torch.uint8)), (torch.zeros(3, 6, 5), torch.zeros(6, 5))]
    with pytest.raises(VocsegError, match=r"crops of one size.*\(4, 5\), \(6, 5\)"):
        CopyPasteCollate(0.5)(batch)
    with pytest.raises(VocsegError, match="copy_paste is a probability in \\[0, 1\\], got 1.5"):
        CopyPasteCollate(1.5)


def _first_batch(tiny_voc, **changes) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = Config(data_root=str(tiny_voc), image_size=32, batch_size=6, num_workers=0, cache="none", **changes)
    data = build_datasets(cfg.validate())
    return next(iter(train_loader(data, cfg, epoch=0, device=torch.device("cpu"), rank=0, world=1)))


def test_the_training_loader_pastes_reproducibly(tiny_voc):
    torch.manual_seed(123)  # in-process loading draws from torch's generator, which checkpoints save
    _, plain_masks = _first_batch(tiny_voc)  # the same crops, before any pasting
    torch.manual_seed(123)
    images, masks = _first_batch(tiny_voc, copy_paste=1.0)
    torch.manual_seed(123)
    again_images, again_masks = _first_batch(tiny_voc, copy_paste=1.0)
    assert torch.equal(images, again_images) and torch.equal(masks, again_masks)
    objects = lambda m: ((m != 0) & (m != 255)).sum().item()  # noqa: E731
    assert objects(masks) > objects(plain_masks)  # every crop received another's objects
    changed = masks != plain_masks
    assert changed.any() and torch.all((masks[changed] != 0) & (masks[changed] != 255))  # only objects landed
