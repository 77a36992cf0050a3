"""From a Config to datasets: which folder, which ids for train / early-stopping / test, which normalisation."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, replace
from ..errors import VocsegError
from .cache import SHARE_OF_AVAILABLE, apply_cache
from .classes import class_names
from .layout import DatasetLayout, resolve_layout
from .photometric import PhotometricDistortion
from .stats import DatasetStats, dataset_stats
from .synthetic import default_dataset_root
from .transforms import SegmentationPresetEval, SegmentationPresetTrain
from .voc import VOCSegmentation

HOLDOUT_SEED = 0  # fixed, so every experiment holds out the same images whatever its training seed


def resolve_data_root(data_root: str | Path | None) -> DatasetLayout:
    """The dataset to use (a VOC tree or image/mask folders; data/layout.py): the given root, or the
    built-in synthetic dataset (generated once)."""
    if data_root is None:
        data_root = default_dataset_root()
    return resolve_layout(data_root)


def with_dataset_classes(cfg: Config) -> Config:
    """``cfg`` with the dataset's own class list (its classes.txt, class_names.txt or dataset.yaml), when it
    has one: ``num_classes`` and ``class_names`` then come from the data. A config that names other classes,
    or another count than the default's, is refused rather than silently trained on the wrong labels."""
    layout = resolve_data_root(cfg.data_root)
    names = layout.class_names
    if names is None or (cfg.class_names == names and cfg.num_classes == len(names)):
        return cfg
    if cfg.class_names is not None and cfg.class_names != names:
        raise VocsegError(
            f"config class_names {cfg.class_names} differ from the dataset's {names} ({layout.root}); "
            "drop class_names from the config to use the dataset's"
        )
    if cfg.num_classes not in (Config.num_classes, len(names)):
        raise VocsegError(
            f"config num_classes is {cfg.num_classes} but the dataset at {layout.root} lists {len(names)} classes "
            f"({', '.join(names)}); drop num_classes to use the dataset's"
        )
    return replace(cfg, num_classes=len(names), class_names=list(names))


@dataclass
class SplitIds:
    train: list[str]
    val: list[str]  # early stopping and curves
    test: list[str] | None  # final report; None: report on val
    val_name: str
    test_name: str | None


def split_ids(root: str | Path | DatasetLayout, cfg: Config) -> SplitIds:
    """Without holdout: train on ``train_split``, early-stop and report on ``val_split``.
    With ``val_holdout = f``: the paper's protocol, early-stop on a fraction ``f`` of ``train_split``
    and report on ``val_split`` as the test split."""
    layout = root if isinstance(root, DatasetLayout) else resolve_layout(root)
    train = layout.read_split(cfg.train_split)
    if cfg.val_holdout > 0:
        shuffled = sorted(train)
        random.Random(HOLDOUT_SEED).shuffle(shuffled)
        n_hold = max(1, round(len(shuffled) * cfg.val_holdout))
        held = set(shuffled[:n_hold])
        train_ids = [i for i in train if i not in held]
        val_ids = [i for i in train if i in held]
        test = layout.read_split(cfg.val_split)
        out = SplitIds(train_ids, val_ids, test, f"{cfg.train_split} holdout", cfg.val_split)
    else:
        out = SplitIds(train, layout.read_split(cfg.val_split), None, cfg.val_split, None)
    if not out.train or not out.val:
        raise VocsegError(
            f"{layout.root}: split {cfg.train_split!r} leaves {len(out.train)} training and {len(out.val)} "
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
    layout = resolve_data_root(cfg.data_root)
    ids = split_ids(layout, cfg)
    raw_train = VOCSegmentation(layout, cfg.train_split, ids=ids.train, num_classes=cfg.num_classes)
    raw_train.check()
    stats = dataset_stats(raw_train)
    mean, std = (list(normalization[0]), list(normalization[1])) if normalization else (stats.mean, stats.std)
    scale = tuple(cfg.scale_range) if cfg.scale_range and cfg.image_size else None
    photometric = PhotometricDistortion() if cfg.photometric else None
    train_tf = SegmentationPresetTrain(
        mean, std, cfg.image_size, cfg.hflip, cfg.vflip, scale, photometric, rotate=cfg.rotate
    )
    eval_tf = SegmentationPresetEval(mean, std)
    train = VOCSegmentation(layout, cfg.train_split, train_tf, ids.train, cfg.num_classes)
    val = VOCSegmentation(layout, cfg.val_split, eval_tf, ids.val, cfg.num_classes)
    val.check()
    test = None
    if ids.test is not None:
        test = VOCSegmentation(layout, ids.test_name or cfg.val_split, eval_tf, ids.test, cfg.num_classes)
        test.check()
    # Decoded once, here in the main process, before any loader forks: workers share the buffers.
    share = SHARE_OF_AVAILABLE / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # each rank keeps its own copy
    for ds in (train, val, test):
        if ds is not None:
            apply_cache(ds, cfg.cache, log, share)
    return DataBundle(layout.root, train, val, test, stats, mean, std, class_names_for(cfg), ids)


def class_names_for(cfg: Config) -> list[str]:
    """The config's class names, else VOC's (``class_<i>`` beyond VOC's 21)."""
    return class_names(cfg.num_classes, cfg.class_names)
