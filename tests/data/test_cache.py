"""The decoded-image RAM cache (vocseg.data.cache): same items as from disk, auto's decision, messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vocseg.data import cache as cache_mod
from vocseg.data.cache import DecodedCache, apply_cache, available_ram, cache_decision, decoded_sizes, format_bytes
from vocseg.data.transforms import SegmentationPresetTrain, collate_pad
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _pairs_equal(a, b) -> bool:
    return all(torch.equal(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)) for x, y in zip(a, b))


def test_cached_items_equal_items_from_disk(tiny_voc: Path) -> None:
    disk = VOCSegmentation(tiny_voc, "train")
    cached = apply_cache(VOCSegmentation(tiny_voc, "train"), "ram")
    assert isinstance(cached.cache, DecodedCache) and disk.cache is None
    for i in range(len(disk)):
        assert _pairs_equal(cached[i], disk[i])
        assert type(cached[i][0]) is type(disk[i][0]) and type(cached[i][1]) is type(disk[i][1])
        image, mask = cached.load(i)
        want_image, want_mask = disk.load(i)
        assert np.array_equal(image, want_image) and np.array_equal(mask, want_mask)


def test_cached_items_through_the_train_preset_equal_uncached(tiny_voc: Path) -> None:
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=40)
    disk = VOCSegmentation(tiny_voc, "train", preset)
    cached = apply_cache(VOCSegmentation(tiny_voc, "train", preset), "ram")
    for i in range(len(disk)):
        torch.manual_seed(i)
        a = disk[i]
        torch.manual_seed(i)
        assert _pairs_equal(a, cached[i])


def test_load_returns_copies_so_the_cache_cannot_be_edited(tiny_voc: Path) -> None:
    ds = apply_cache(VOCSegmentation(tiny_voc, "val"), "ram")
    before = [t.clone() for t in ds.cache[0]]
    image, mask = ds.load(0)
    image[:] = 7
    mask[:] = 7
    assert _pairs_equal(ds.cache[0], before)


def test_forked_workers_read_the_main_process_cache(tiny_voc: Path) -> None:
    preset = SegmentationPresetTrain(MEAN, STD, crop_size=None, hflip_prob=0, vflip_prob=0)
    disk = VOCSegmentation(tiny_voc, "val", preset)
    cached = apply_cache(VOCSegmentation(tiny_voc, "val", preset), "ram")
    got = list(DataLoader(cached, batch_size=2, num_workers=1, collate_fn=collate_pad))
    want = list(DataLoader(disk, batch_size=2, num_workers=0, collate_fn=collate_pad))
    assert all(_pairs_equal(a, b) for a, b in zip(got, want)) and len(got) == len(want) == 2


def test_estimate_from_headers_is_the_decoded_size(tiny_voc: Path) -> None:
    ds = VOCSegmentation(tiny_voc, "train")
    sizes = decoded_sizes(ds)
    assert sizes == [tuple(ds.decode(i)[1].shape) for i in range(len(ds))]
    apply_cache(ds, "ram")
    assert ds.cache.nbytes == sum(4 * h * w for h, w in sizes)


def test_memory_message(tiny_voc: Path) -> None:
    lines: list[str] = []
    ds = apply_cache(VOCSegmentation(tiny_voc, "train"), "auto", lines.append)
    assert ds.cache is not None and len(lines) == 1
    m = re.fullmatch(r"cache: 12 train images decoded in RAM \((\d+) KB, \d+\.\d s\)", lines[0])
    assert m and int(m.group(1)) == round(ds.cache.nbytes / 1e3), lines[0]
    assert format_bytes(57_300_000) == "57 MB" and format_bytes(2.25e9) == "2.2 GB"


@pytest.mark.parametrize("ram, cached", [(10**12, True), (10_000, False)], ids=["fits", "too-big"])
def test_auto_decides_from_available_ram(ram: int, cached: bool, tiny_voc: Path, monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "available_ram", lambda: ram)
    lines: list[str] = []
    ds = apply_cache(VOCSegmentation(tiny_voc, "train"), "auto", lines.append)
    assert (ds.cache is not None) is cached
    if not cached:
        assert lines == [
            f"cache: off for 12 train images: {format_bytes(sum(4 * h * w for h, w in decoded_sizes(ds)))} decoded "
            "would exceed 25% of the 10 KB of RAM available (cache: ram forces it)"
        ]


def test_auto_uses_the_share_it_is_given(tiny_voc: Path, monkeypatch) -> None:
    need = sum(4 * h * w for h, w in decoded_sizes(VOCSegmentation(tiny_voc, "train")))
    monkeypatch.setattr(cache_mod, "available_ram", lambda: 3 * need)  # need = a third of the RAM
    assert apply_cache(VOCSegmentation(tiny_voc, "train"), "auto", share=0.5).cache is not None
    assert apply_cache(VOCSegmentation(tiny_voc, "train"), "auto", share=0.25).cache is None


def test_ram_forces_the_cache_unless_it_clearly_cannot_fit(tiny_voc: Path, monkeypatch) -> None:
    ds = VOCSegmentation(tiny_voc, "train")
    need = sum(4 * h * w for h, w in decoded_sizes(ds))
    monkeypatch.setattr(cache_mod, "available_ram", lambda: need + 1)  # far over auto's share, still fits
    assert apply_cache(ds, "ram").cache is not None
    monkeypatch.setattr(cache_mod, "available_ram", lambda: need // 2)
    with pytest.raises(VocsegError, match="cache: ram needs about .* but only .* available; use cache: auto or none"):
        apply_cache(VOCSegmentation(tiny_voc, "train"), "ram")


def test_none_and_unknown_ram(tiny_voc: Path, monkeypatch) -> None:
    lines: list[str] = []
    ds = apply_cache(VOCSegmentation(tiny_voc, "train"), "none", lines.append)
    assert ds.cache is None and lines == []
    monkeypatch.setattr(cache_mod, "available_ram", lambda: None)
    ds = apply_cache(VOCSegmentation(tiny_voc, "train"), "auto", lines.append)
    assert ds.cache is None and "available RAM unknown" in lines[0]


def test_bad_mode_is_refused(tiny_voc: Path) -> None:
    with pytest.raises(VocsegError, match="cache must be one of auto, ram, none, got 'disk'"):
        apply_cache(VOCSegmentation(tiny_voc, "train"), "disk")
    with pytest.raises(VocsegError):
        cache_decision("RAM", 1, 10, 0.25, "x")


def test_available_ram_reads_this_machine() -> None:
    ram = available_ram()
    assert ram is None or ram > 0


def test_decode_errors_name_the_file_when_caching(make_voc) -> None:
    rng = np.random.default_rng(0)
    samples = {
        f"img_{i}": (rng.integers(0, 255, (9, 11, 3), dtype=np.uint8), np.zeros((9, 11), np.uint8)) for i in range(3)
    }
    voc = make_voc(samples)
    bad = voc / "JPEGImages" / "img_1.jpg"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(VocsegError) as e:
        apply_cache(VOCSegmentation(voc, "train"), "ram")
    assert str(bad) in str(e.value)
