"""From a Config to datasets: which folder, which ids for train / early-stopping / test, which normalisation."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import VocsegError
from .cache import SHARE_OF_AVAILABLE, apply_cache
from .classes import class_names
from .photometric import PhotometricDistortion
from .stats import DatasetStats, dataset_stats
from .transforms import SegmentationPresetEval, SegmentationPresetTrain
from .voc import VOCSegmentation, read_split, resolve_voc_root

HOLDOUT_SEED = 0  # fixed, so every experiment holds out the same images whatever its training seed


def resolve_data_root(data_root: str | Path | None) -> Path:
    """The VOC2012 folder to use: the given root, or the built-in synthetic dataset (generated once)."""
    if data_root is None:
        from .synthetic import default_dataset_root

        data_root = default_dataset_root()
    return resolve_voc_root(data_root)


@dataclass
class SplitIds:
    train: list[str]
    val: list[str]  # early stopping and curves
    test: list[str] | None  # final report; None: report on val
    val_name: str
    test_name: str | None


def split_ids(voc_root: Path, cfg: Config) -> SplitIds:
    """Without holdout: train on ``train_split``, early-stop and report on ``val_split``.
    With ``val_holdout = f``: the paper's protocol, early-stop on a fraction ``f`` of ``train_split``
    and report on ``val_split`` as the test split."""
    train = read_split(voc_root, cfg.train_split)
    if cfg.val_holdout > 0:
        shuffled = sorted(train)
        random.Random(HOLDOUT_SEED).shuffle(shuffled)
        n_hold = max(1, round(len(shuffled) * cfg.val_holdout))
        held = set(shuffled[:n_hold])
        train_ids = [i for i in train if i not in held]
        val_ids = [i for i in train if i in held]
        test = read_split(voc_root, cfg.val_split)
        out = SplitIds(train_ids, val_ids, test, f"{cfg.train_split} holdout", cfg.val_split)
    else:
        out = SplitIds(train, read_split(voc_root, cfg.val_split), None, cfg.val_split, None)
    if not out.train or not out.val:
        raise VocsegError(
            f"{voc_root}: split {cfg.train_split!r} leaves {len(out.train)} training and {len(out.val)} "
            f"{out.val_name!r} images; both need at least one (check the split files and val_holdout)"
        )
    if cfg.max_train_images:
        out.train = out.train[: cfg.max_train_images]
    if cfg.max_val_images:
        out.val = out.val[: cfg.max_val_images]
        if out.test is not None:
            out.test = out.test[: cfg.max_val_images]
    return out


@dataclass
class DataBundle:
    voc_root: Path
    train: VOCSegmentation
    val: VOCSegmentation
    test: VOCSegmentation | None
    stats: DatasetStats  # of the training ids
    mean: list[float]
    std: list[float]
    class_names: list[str]
    ids: SplitIds


def build_datasets(
    cfg: Config, normalization: tuple | None = None, log: Callable[[str], None] | None = None
) -> DataBundle:
    """Datasets with the train/eval presets. ``normalization`` (mean, std) overrides the training split's
    own statistics (pretrained encoders want the statistics they were trained with). ``log`` receives
    one-line notes (the decoded-image cache's size)."""
    voc_root = resolve_data_root(cfg.data_root)
    ids = split_ids(voc_root, cfg)
    raw_train = VOCSegmentation(voc_root, cfg.train_split, ids=ids.train, num_classes=cfg.num_classes)
    raw_train.check()
    stats = dataset_stats(raw_train)
    mean, std = (list(normalization[0]), list(normalization[1])) if normalization else (stats.mean, stats.std)
    scale = tuple(cfg.scale_range) if cfg.scale_range and cfg.image_size else None
    photometric = PhotometricDistortion() if cfg.photometric else None
    train_tf = SegmentationPresetTrain(
        mean, std, cfg.image_size, cfg.hflip, cfg.vflip, scale, photometric, rotate=cfg.rotate
    )
    eval_tf = SegmentationPresetEval(mean, std)
    train = VOCSegmentation(voc_root, cfg.train_split, train_tf, ids.train, cfg.num_classes)
    val = VOCSegmentation(voc_root, cfg.val_split, eval_tf, ids.val, cfg.num_classes)
    val.check()
    test = None
    if ids.test is not None:
        test = VOCSegmentation(voc_root, ids.test_name or cfg.val_split, eval_tf, ids.test, cfg.num_classes)
        test.check()
    # Decoded once, here in the main process, before any loader forks: workers share the buffers.
    share = SHARE_OF_AVAILABLE / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # each rank keeps its own copy
    for ds in (train, val, test):
        if ds is not None:
            apply_cache(ds, cfg.cache, log, share)
    return DataBundle(voc_root, train, val, test, stats, mean, std, class_names_for(cfg), ids)


def class_names_for(cfg: Config) -> list[str]:
    """The config's class names, else VOC's (``class_<i>`` beyond VOC's 21)."""
    return class_names(cfg.num_classes, cfg.class_names)
