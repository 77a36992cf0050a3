"""Per-channel mean/std and per-class pixel counts of a split, cached per dataset and id list."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtime.files import atomic_write_bytes
from .voc import VOCSegmentation


def cache_dir() -> Path:
    """vocseg's cache folder: $VOCSEG_CACHE, else ~/.cache/vocseg."""
    return Path(os.environ.get("VOCSEG_CACHE") or Path.home() / ".cache" / "vocseg").expanduser()


@dataclass
class DatasetStats:
    mean: list[float]  # per RGB channel, in [0, 1]
    std: list[float]
    class_counts: list[int]  # pixels per class index
    void_pixels: int
    num_images: int


def _cache_key(ds: VOCSegmentation) -> str:
    h = hashlib.sha256()
    h.update(str(ds.voc_root.resolve()).encode())
    h.update(str(ds.num_classes).encode())
    h.update("\n".join(ds.ids).encode())
    # Changing a file's size or time invalidates the cache; reading every file's bytes would cost as much as recomputing.
    for path in (ds.image_path(0), ds.mask_path(0), ds.image_path(len(ds) - 1), ds.mask_path(len(ds) - 1)):
        st = path.stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def compute_stats(ds: VOCSegmentation) -> DatasetStats:
    """One pass over the split. Mean and std come from each channel's histogram of its 8-bit values: exact
    integer counts, then float sums over 256 values instead of millions of pixels, so the pass is bound by
    decoding rather than by float64 pixel sums (docs/results.md, "strong.yaml at VOC scale on one GPU")."""
    histogram = np.zeros((3, 256), dtype=np.int64)
    counts = np.zeros(ds.num_classes, dtype=np.int64)
    void = 0
    for i in range(len(ds)):
        image, mask = ds.load(i)
        for c in range(3):
            histogram[c] += np.bincount(image[..., c].ravel(), minlength=256)
        valid = mask[mask != 255]
        counts += np.bincount(valid, minlength=ds.num_classes)[: ds.num_classes]
        void += int(mask.size - valid.size)
    return DatasetStats(*moments(histogram), counts.tolist(), void, len(ds))


def moments(histogram: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] from ``(3, 256)`` counts of the values 0..255."""
    values = np.arange(256, dtype=np.float64) / 255.0
    n = histogram.sum(1)
    mean = histogram @ values / n
    std = np.sqrt(np.maximum(histogram @ values**2 / n - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def dataset_stats(ds: VOCSegmentation, use_cache: bool = True) -> DatasetStats:
    """Stats of ``ds`` from the cache, computing and caching them on first use."""
    path = cache_dir() / "stats" / f"{_cache_key(ds)}.json"
    if use_cache and path.is_file():
        try:
            return DatasetStats(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            pass  # a corrupt cache entry is recomputed and rewritten
    stats = compute_stats(ds)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(json.dumps(asdict(stats)).encode(), path)
    return stats
