"""The data a report's runs used: folder, split sizes, the test split and its class counts (from
:func:`vocseg.data.stats.dataset_stats`, cached), and the all-background predictor computed from them."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...config import config_from_dict
from ...data.builder import class_names_for, resolve_data_root, split_ids
from ...data.stats import dataset_stats
from ...data.synthetic import ID_PREFIX
from ...data.voc import VOCSegmentation, read_split
from ...errors import VocsegError

__all__ = ["DataInfo", "all_background_metrics", "data_info"]


@dataclass
class DataInfo:
    voc_root: Path
    synthetic: bool
    synthetic_seed: int | None
    split_sizes: dict[str, int]  # full splits on disk
    used: dict[str, int]  # train / early-stopping holdout / test, as the runs used them
    test_split: str
    test_ids: list[str]
    class_names: list[str]
    test_counts: np.ndarray  # pixels per class in the test split (void excluded)


def data_info(cfg_dict: Mapping[str, Any], source: str = "config.yaml") -> DataInfo:
    """What data a run with this config used, and its test split's class counts."""
    cfg = config_from_dict(dict(cfg_dict), source)
    layout = resolve_data_root(cfg.data_root)
    root = layout.root
    ids = split_ids(layout, cfg)
    sizes = {}
    for split in dict.fromkeys((cfg.train_split, cfg.val_split)):
        with contextlib.suppress(VocsegError):  # a split file the runs did not need
            sizes[split] = len(read_split(layout, split))
    test_ids = ids.test if ids.test is not None else ids.val
    test_split = ids.test_name or ids.val_name
    used = {"train": len(ids.train), f"early stopping ({ids.val_name})": len(ids.val)}
    if ids.test is not None:
        used[f"test ({ids.test_name})"] = len(ids.test)
    synthetic = all(i.startswith(ID_PREFIX) for i in ids.train + test_ids)
    m = re.search(r"synthetic-v\d+-\d+-\d+-s(\d+)-\d+", str(root))
    stats = dataset_stats(VOCSegmentation(layout, test_split, ids=test_ids, num_classes=cfg.num_classes))
    return DataInfo(
        root,
        synthetic,
        int(m.group(1)) if m else None,
        sizes,
        used,
        test_split,
        list(test_ids),
        class_names_for(cfg),
        np.asarray(stats.class_counts, dtype=np.int64),
    )


def all_background_metrics(counts: np.ndarray) -> dict[str, float | None]:
    """Metrics of predicting background (class 0) at every pixel, from the true class counts.

    Pixel accuracy is background's share; background's IoU is that same share (all pixels are
    predicted background), every other present class scores IoU 0, absent classes are not counted:
    mIoU = share / number of classes present. Mean accuracy = 1 / classes present; fw IoU = share^2.
    """
    counts = np.asarray(counts)
    total = float(counts.sum())
    if total == 0:
        return {"pixel_accuracy": None, "mean_iou": None, "mean_accuracy": None, "fw_iou": None}
    share = float(counts[0]) / total
    present = int((counts > 0).sum())
    if counts[0] == 0:
        present += 1  # background is predicted, so it has a non-empty union (IoU 0)
    return {
        "pixel_accuracy": share,
        "mean_iou": share / present,
        "mean_accuracy": (1.0 if counts[0] > 0 else 0.0) / max(int((counts > 0).sum()), 1),
        "fw_iou": share * share,
    }
