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


def test_moments_of_a_hand_made_histogram():
    """Half the pixels 0, half 255: mean 0.5 and std 0.5 in every channel; a constant channel has std ~0."""
    from vocseg.data.stats import moments

    histogram = np.zeros((3, 256), dtype=np.int64)
    histogram[0, [0, 255]] = 7
    histogram[1, [0, 255]] = 1
    histogram[2, 51] = 10  # every pixel 51/255 = 0.2
    mean, std = moments(histogram)
    assert np.allclose(mean, [0.5, 0.5, 0.2]) and np.allclose(std, [0.5, 0.5, 0.0], atol=1e-6)
