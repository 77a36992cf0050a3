"""vocseg.data.stats: dataset mean, std and class counts against numpy, and the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from vocseg.data.stats import dataset_stats
from vocseg.data.voc import VOCSegmentation, load_image, load_mask


def test_stats_match_numpy_and_are_cached(tiny_voc, vocseg_cache, monkeypatch):
    ds = VOCSegmentation(tiny_voc, "train")
    images = [load_image(ds.image_path(i)).reshape(-1, 3) / 255.0 for i in range(len(ds))]
    masks = np.concatenate([load_mask(ds.mask_path(i)).ravel() for i in range(len(ds))])
    pix = np.concatenate(images)
    stats = dataset_stats(ds)
    assert np.allclose(stats.mean, pix.mean(0)) and np.allclose(stats.std, pix.std(0))
    assert stats.class_counts == np.bincount(masks[masks != 255], minlength=21).tolist()
    assert stats.void_pixels == int((masks == 255).sum())
    monkeypatch.setattr("vocseg.data.stats.compute_stats", lambda _: pytest.fail("cache not used"))
    assert dataset_stats(ds) == stats
