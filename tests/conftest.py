"""Shared test fixtures.

- ``tiny_voc``: a small synthetic VOC tree (12 train / 4 val images), shared read-only by the session.
- ``make_voc``: writes a hand-made VOC tree from arrays, for tests that need exact pixels or broken files.
- ``vocseg_cache``: points ``$VOCSEG_CACHE`` at a fresh folder, so dataset statistics never touch ~/.cache.
- ``torch_global_state``: for tests that call ``train()`` in-process: one torch thread (fast and
  deterministic on a busy 2-core machine), and the RNGs and determinism flags restored afterwards.
- ``one_thread``: one torch thread for the test, nothing else (model and inference tests).
- ``offline``: an empty ``$TORCH_HOME`` and no network, for model weights; returns the list of network
  calls tried (each one raised).

Plain helpers shared by several test files (not fixtures) are in helpers.py.
"""

from __future__ import annotations

import random
import socket
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vocseg.data.classes import voc_palette
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.runtime.workers import one_torch_thread

TINY_TRAIN, TINY_VAL, TINY_MAX_SIDE = 12, 4, 64


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first, the rest in file order (a stable sort).

    One test process per core (xdist) takes tests in this order: a long test started last keeps one core
    busy while the other idles, so the long ones go first and the many short ones fill the gaps.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``VOCdevkit`` of a 12 train / 4 val synthetic dataset (long side 48-64 px).
    Shared by the whole session: do not modify it (copy it, or use ``make_voc``)."""
    root = tmp_path_factory.mktemp("tiny_voc")
    generate_synthetic_voc(root, n_train=TINY_TRAIN, n_val=TINY_VAL, seed=0, max_side=TINY_MAX_SIDE, workers=1)
    return root


def write_voc_tree(
    root: Path,
    samples: Mapping[str, tuple[np.ndarray | Image.Image, np.ndarray | Image.Image]],
    splits: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Write ``root/VOCdevkit/VOC2012`` with ``samples`` (id -> (image, mask)) and ``splits`` (name -> ids;
    default: every id in ``train``). Arrays: images (H, W, 3) uint8 saved as JPEG quality 95, masks (H, W)
    uint8 saved as palette PNGs; PIL images are saved as they are. Returns the VOC2012 folder."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for name, (image, mask) in samples.items():
        img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        img.save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        if isinstance(mask, np.ndarray):
            mask = Image.fromarray(mask.astype(np.uint8))  # mode "L"; putpalette makes it "P"
            mask.putpalette(voc_palette())
        mask.save(voc / "SegmentationClass" / f"{name}.png")
    for split, ids in (splits if splits is not None else {"train": list(samples)}).items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


@pytest.fixture
def make_voc(tmp_path: Path) -> Callable[..., Path]:
    """``make_voc(samples, splits=None, root=None)``: :func:`write_voc_tree` under ``tmp_path/"voc"`` by default."""

    def make(samples, splits=None, root: Path | None = None) -> Path:
        return write_voc_tree(root if root is not None else tmp_path / "voc", samples, splits)

    return make


@pytest.fixture
def vocseg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "vocseg-cache"
    monkeypatch.setenv("VOCSEG_CACHE", str(path))
    return path


@pytest.fixture
def torch_global_state():
    """Run the test with one torch thread; restore threads, determinism flags and RNG states after it."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])


@pytest.fixture
def one_thread():
    """One torch thread: small workloads gain nothing from more, and on a busy 2-core machine extra threads
    spin and slow everything down."""
    with one_torch_thread():
        yield


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty ``TORCH_HOME`` under ``tmp_path`` and a network that raises (and records) when touched."""
    touched = []

    def blocked(*args, **kwargs):
        touched.append(args)
        raise OSError("network access blocked by the test")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called torch.hub.set_dir
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(urllib.request, "urlopen", blocked)
    monkeypatch.setattr(torch.hub, "urlopen", blocked, raising=False)
    return touched
