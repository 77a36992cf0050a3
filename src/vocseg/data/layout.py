"""Where a dataset's files are: a VOC tree, or a folder of images beside a folder of masks.

    VOC tree                                    image/mask folders (DIR)
    VOC2012/JPEGImages/<id>.jpg                 DIR/images/<id>.<jpg|png|...>     (or img_dir/, mmsegmentation's)
           /SegmentationClass/<id>.png          DIR/masks/<id>.png                (or ann_dir/ or labels/)
           /ImageSets/Segmentation/<split>.txt  DIR/splits/<split>.txt            (or images/<split>/ sub-folders,
           /class_names.txt        (optional)                                      or a seeded 80/20 split written once)
                                                DIR/classes.txt                   (optional; or dataset.yaml)

An id is the image's path under the image folder without its suffix (``a``, or ``train/a`` in split
sub-folders); its mask is ``<mask folder>/<id><mask_suffix>``. ``DIR/dataset.yaml`` may name the folders and
the suffix (``images: img_dir``, ``masks: ann_dir``, ``mask_suffix: _mask.png``) and list the classes
(``classes: [background, cat]``, or ``{0: background, 1: cat}``) and their colours (``colours: [[0, 0, 0], ...]``)
for RGB-coded masks. Masks are palette or grayscale PNGs holding class indices (255 = void), or RGB PNGs in
the given colours (VOC's colour map by default).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VocsegError
from ..runtime.files import atomic_write_bytes

VOC, FOLDERS = "voc", "folders"
IMAGE_DIR, MASK_DIR, SPLIT_DIR = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"
AUG_MASK_DIR = "SegmentationClassAug"  # SBD-converted masks of train_aug (see data/sbd.py)
# Folder pairs recognised without a dataset.yaml, in this order: the common layout, mmsegmentation's, another.
FOLDER_PAIRS = (("images", "masks"), ("img_dir", "ann_dir"), ("images", "labels"))
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CLASS_FILES = ("classes.txt", "class_names.txt")  # class_names.txt: what `vocseg import` writes
DATASET_FILE, FOLDER_SPLIT_DIR = "dataset.yaml", "splits"
SPLIT_SEED, VAL_FRACTION = 0, 0.2  # the seeded split of folders without splits (as `vocseg import` writes)


def read_class_names(path: str | os.PathLike) -> list[str]:
    """A class-list file: one name a line, blank lines skipped (labelme's ``labels.txt`` works as it is)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise VocsegError(f"cannot read the class list {path}: {e}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise VocsegError(f"the class list {path} is empty")
    return names


def seeded_split(ids: Sequence[str]) -> tuple[list[str], list[str]]:
    """A seeded 80/20 split of ``ids`` (order-independent: the ids are sorted first); one image: train only."""
    order = sorted(ids)
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = 0 if len(order) < 2 else max(1, round(len(order) * VAL_FRACTION))
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class DatasetLayout:
    """One dataset's folders, suffixes and (when it lists them) classes; maps an id to its two files."""

    root: Path  # the VOC2012 folder, or DIR
    kind: str  # VOC or FOLDERS
    image_dir: Path
    mask_dir: Path
    mask_suffix: str = ".png"
    class_names: list[str] | None = None
    colours: list[tuple[int, int, int]] | None = None  # of RGB-coded masks; None: VOC's colour map
    images: dict[str, Path] = field(default_factory=dict)  # id -> image file (folders only)

    def image_path(self, image_id: str) -> Path:
        if self.kind == VOC:
            return self.image_dir / f"{image_id}.jpg"
        return self.images.get(image_id, self.image_dir / f"{image_id}.jpg")  # a missing id: check() names it

    def mask_path(self, image_id: str) -> Path:
        """VOC's own mask when it has one, else SegmentationClassAug's (SBD's, for train_aug ids)."""
        own = self.mask_dir / f"{image_id}{self.mask_suffix}"
        if self.kind == VOC and not own.is_file():
            aug = self.root / AUG_MASK_DIR / f"{image_id}.png"
            return aug if aug.is_file() else own
        return own

    def split_dir(self) -> Path:
        return self.root / (SPLIT_DIR if self.kind == VOC else FOLDER_SPLIT_DIR)

    def available_splits(self) -> list[str]:
        return sorted(p.stem for p in self.split_dir().glob("*.txt"))

    def read_split(self, split: str) -> list[str]:
        """Image ids listed in the split file (``trainval`` of folders without one: every image)."""
        path = self.split_dir() / f"{split}.txt"
        if not path.is_file():
            if self.kind == FOLDERS and split == "trainval":
                return sorted(self.images)
            available = ", ".join(self.available_splits()) or "none"
            raise VocsegError(f"split file not found: {path} (available splits: {available})")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise VocsegError(f"split file is empty: {path}")
        return ids


def find_voc_tree(root: Path) -> Path | None:
    """The ``VOC2012`` folder when ``root`` is it, its parent ``VOCdevkit`` or the folder holding ``VOCdevkit``."""
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / IMAGE_DIR).is_dir() and (candidate / MASK_DIR).is_dir():
            return candidate
    return None


def resolve_layout(root: str | Path) -> DatasetLayout:
    """The layout of the dataset at ``root``: a VOC tree (``root`` is VOC2012, VOCdevkit or their parent) or
    image/mask folders (``root`` holds them, or a dataset.yaml naming them)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise VocsegError(f"dataset root does not exist: {root}")
    voc = find_voc_tree(root)
    if voc is not None:
        names, colours = _class_list(voc, {})
        return DatasetLayout(voc, VOC, voc / IMAGE_DIR, voc / MASK_DIR, ".png", names, colours)
    spec = _dataset_yaml(root)
    folders = _folder_pair(root, spec)
    if folders is None:
        pairs = ", ".join(f"{i}/ + {m}/" for i, m in FOLDER_PAIRS)
        raise VocsegError(
            f"no dataset under {root}: expected a VOC tree ({root}/VOCdevkit/VOC2012/{{{IMAGE_DIR},{MASK_DIR},"
            f"{SPLIT_DIR}}}) or image and mask folders ({pairs}, or named in {root / DATASET_FILE}); "
            f"`vocseg download --root {root}` fetches VOC 2012"
        )
    names, colours = _class_list(root, spec)
    suffix = str(spec.get("mask_suffix", ".png"))
    layout = DatasetLayout(root, FOLDERS, folders[0], folders[1], suffix, names, colours)
    layout.images = _index_images(layout)
    _check_pairs(layout)
    _ensure_splits(layout)
    return layout


def _dataset_yaml(root: Path) -> dict[str, Any]:
    path = root / DATASET_FILE
    if not path.is_file():
        return {}
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise VocsegError(f"cannot read {path}: {e}") from None
    known = {"images", "masks", "mask_suffix", "classes", "colours"}
    if not isinstance(spec, dict) or set(spec) - known:
        extra = sorted(set(spec) - known) if isinstance(spec, dict) else type(spec).__name__
        raise VocsegError(f"{path}: unknown keys {extra}; valid keys: {', '.join(sorted(known))}")
    return spec


def _folder_pair(root: Path, spec: dict[str, Any]) -> tuple[Path, Path] | None:
    if "images" in spec or "masks" in spec:
        images, masks = root / str(spec.get("images", "images")), root / str(spec.get("masks", "masks"))
        for path, key in ((images, "images"), (masks, "masks")):
            if not path.is_dir():
                raise VocsegError(f"{root / DATASET_FILE}: {key} folder {path} does not exist")
        return images, masks
    for image_name, mask_name in FOLDER_PAIRS:
        if (root / image_name).is_dir() and (root / mask_name).is_dir():
            return root / image_name, root / mask_name
    return None


def _class_list(root: Path, spec: dict[str, Any]) -> tuple[list[str] | None, list[tuple[int, int, int]] | None]:
    """Class names from dataset.yaml's ``classes`` or a class file beside the data; colours from ``colours``."""
    where = root / DATASET_FILE
    names = spec.get("classes")
    if isinstance(names, dict):
        by_index = {int(k): v for k, v in names.items() if str(k).isdigit()}
        if sorted(by_index) != list(range(len(names))):
            raise VocsegError(f"{where}: classes must be indexed 0..{len(names) - 1} without gaps, got {list(names)}")
        names = [by_index[i] for i in range(len(names))]
    if names is None:
        found = [root / f for f in CLASS_FILES if (root / f).is_file()]
        names = read_class_names(found[0]) if found else None
    elif not isinstance(names, list) or not names:
        raise VocsegError(f"{where}: classes must be a list of names or an index -> name mapping")
    colours = spec.get("colours")
    if colours is not None:
        ok = isinstance(colours, list) and all(isinstance(c, list) and len(c) == 3 for c in colours)
        if not ok or names is None or len(colours) != len(names):
            raise VocsegError(f"{where}: colours must be one [r, g, b] per class ({len(names or [])} classes)")
        colours = [tuple(int(v) for v in c) for c in colours]
    return ([str(n) for n in names] if names else None), colours


def _index_images(layout: DatasetLayout) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in sorted(layout.image_dir.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        image_id = path.relative_to(layout.image_dir).with_suffix("").as_posix()
        if image_id in images:
            raise VocsegError(f"{images[image_id]} and {path} are both image {image_id!r}; keep one")
        images[image_id] = path
    if not images:
        raise VocsegError(f"no images ({' '.join(IMAGE_SUFFIXES)}) in {layout.image_dir}")
    return images


def _check_pairs(layout: DatasetLayout) -> None:
    """Every image has its mask and every mask its image: a clear error naming the first file without one."""
    for image_id, path in layout.images.items():
        if not layout.mask_path(image_id).is_file():
            raise VocsegError(f"image {path} has no mask: expected {layout.mask_path(image_id)}")
    suffix = layout.mask_suffix
    for path in sorted(layout.mask_dir.rglob(f"*{suffix}")):
        image_id = path.relative_to(layout.mask_dir).as_posix()[: -len(suffix)]
        if image_id not in layout.images:
            raise VocsegError(f"mask {path} has no image: expected {layout.image_dir / image_id}.<jpg|png|...>")


def _ensure_splits(layout: DatasetLayout) -> None:
    """Splits from split files, else from the images' split sub-folders, else a seeded 80/20 split written
    once to DIR/splits (so adding images later does not move old ones between train and val)."""
    if layout.available_splits():
        return
    ids = sorted(layout.images)
    by_folder: dict[str, list[str]] = {}
    for image_id in ids:
        head, _, rest = image_id.partition("/")
        by_folder.setdefault(head if rest else "", []).append(image_id)
    if "" not in by_folder and {"train", "val"} <= set(by_folder):
        splits = by_folder
    else:
        train, val = seeded_split(ids)
        splits = {"train": train, "val": val}
    for name, members in splits.items():
        target = layout.split_dir() / f"{name}.txt"
        try:
            target.parent.mkdir(exist_ok=True)
            atomic_write_bytes("".join(f"{i}\n" for i in members).encode(), target)
        except OSError as e:
            raise VocsegError(f"cannot write the split file {target} ({e}); write {layout.split_dir()}/"
                              "{train,val}.txt yourself, one image id a line") from None  # fmt: skip
