"""The Semantic Boundaries Dataset (SBD, Hariharan et al. 2011) as extra VOC training masks: the field's
``train_aug`` split (10,582 images) used by DeepLab, PSPNet and mmsegmentation's ``voc12aug`` configs.

Layout after :func:`prepare_sbd` ``(root)``, ``root`` being the folder that holds ``VOCdevkit``::

    root/benchmark.tgz                                   SBD's archive (kept, like VOC's tar)
    root/benchmark_RELEASE/dataset/{cls,img,inst}/       SBD as extracted; train.txt, val.txt
    root/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png palette PNG for every SBD and VOC mask
                          /ImageSets/Segmentation/{sbd_train,sbd_val,train_aug}.txt

``SegmentationClassAug`` follows DeepLab's folder of that name: one mask per image of SBD ∪ VOC
train/val. Where VOC has its own mask (``SegmentationClass``), that mask is copied byte for byte,
since VOC's polygons are finer than SBD's and carry VOC's 255 (void) boundaries; every other image
gets SBD's ``GTcls.Segmentation`` labels. SBD masks have no void boundaries: their labels are kept as
they are (0 = background, 1..20 = VOC's classes), not eroded into artificial 255 bands.

SBD's ``img/`` holds 11,355 JPEGs, all from VOC 2011, so VOC 2012's ``JPEGImages`` normally already
has them; an SBD JPEG is copied only where VOC lacks that image. Nothing already on disk is ever
overwritten: a re-run keeps existing PNGs, JPEGs and split files (see :class:`SbdSummary`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import SBDataset

from ..errors import VocsegError
from .classes import IGNORE_INDEX, NUM_CLASSES, voc_palette
from .download import fetch_verified_archive, safe_extract
from .layout import AUG_MASK_DIR, IMAGE_DIR, MASK_DIR, SPLIT_DIR
from .voc import read_split, resolve_voc_root

TRAIN_AUG_SPLIT = "train_aug"
SBD_SPLITS = {"train": "sbd_train", "val": "sbd_val"}  # SBD's list name -> name of its copy in VOC's ImageSets
TRAIN_AUG_SIZE = 10_582  # |VOC train ∪ SBD train ∪ SBD val − VOC val| on the real data
SBD_ARCHIVE_SIZE = "about 1.4 GB"
SBD_DATASET_DIR = Path("benchmark_RELEASE") / "dataset"


def sbd_archive_info() -> dict[str, str]:
    """torchvision's record for SBD's archive (url, filename, md5), so a changed mirror is fixed in one place.

    ``train_noval.txt`` (torchvision's ``voc_train_url``) is not fetched: ``train_aug`` is computed from
    SBD's own lists and VOC's val list, and that URL has been failing since 2024 (pytorch/vision#8471)."""
    return {"url": SBDataset.url, "filename": SBDataset.filename, "md5": SBDataset.md5}


def _offline_message(root: Path, info: dict[str, str], reason: str) -> str:
    return (
        f"cannot download SBD {info['filename']} ({reason}).\n"
        f"Fetch it by hand from {info['url']}\n"
        f"(md5 {info['md5']}, {SBD_ARCHIVE_SIZE}), put it at {root / info['filename']}\n"
        f"and run `vocseg download --sbd --root {root}` again: it verifies the checksum and extracts it to "
        f"{root / SBD_DATASET_DIR}."
    )


def _is_sbd_dataset(folder: Path) -> bool:
    return (folder / "cls").is_dir() and (folder / "img").is_dir() and (folder / "train.txt").is_file()


def resolve_sbd_root(root: str | Path) -> Path:
    """SBD's ``dataset`` folder (``cls/``, ``img/``, ``train.txt``, ``val.txt``), given it, ``benchmark_RELEASE``
    or the folder holding ``benchmark_RELEASE``."""
    root = Path(root).expanduser()
    for candidate in (root / SBD_DATASET_DIR, root / "dataset", root):
        if _is_sbd_dataset(candidate):
            return candidate
    raise VocsegError(
        f"no SBD dataset under {root}: expected {root / SBD_DATASET_DIR}/{{cls,img,train.txt,val.txt}}; "
        f"run `vocseg download --sbd --root {root}` to fetch it"
    )


def download_sbd(root: str | Path) -> Path:
    """Download (if needed), verify and extract SBD's ``benchmark.tgz`` under ``root``; return its ``dataset``
    folder. Offline, fails at once with the archive's name, md5, URL and where to put it by hand."""
    root = Path(root).expanduser()
    if _is_sbd_dataset(root / SBD_DATASET_DIR):
        return root / SBD_DATASET_DIR
    info = sbd_archive_info()
    archive = fetch_verified_archive(root, info, _offline_message, f"vocseg download --sbd --root {root}")
    safe_extract(archive, root)
    if not _is_sbd_dataset(root / SBD_DATASET_DIR):
        raise VocsegError(f"{archive} did not contain {SBD_DATASET_DIR}/{{cls,img,train.txt}}")
    return root / SBD_DATASET_DIR


# ----------------------------------------------------------------------------- conversion


def read_sbd_mask(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """SBD's class labels ``GTcls.Segmentation`` of one ``cls/<id>.mat`` as uint8 (H, W), checked to be
    0..num_classes-1 (SBD has no 255 void pixels, but a 255 is accepted as void)."""
    path = Path(path)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise VocsegError("reading SBD's .mat masks needs scipy: pip install scipy") from None
    try:
        gt = loadmat(str(path), variable_names=["GTcls"])["GTcls"]
        # A MATLAB struct loads as a (1, 1) record array; index it the same way torchvision's SBDataset does.
        seg = np.asarray(gt["Segmentation"][0, 0])
    except (KeyError, ValueError, IndexError, TypeError, OSError, NotImplementedError) as e:
        raise VocsegError(f"SBD mask {path} cannot be read as GTcls.Segmentation: {e!r}") from None
    if seg.ndim != 2 or seg.size == 0:
        raise VocsegError(f"SBD mask {path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    if not np.issubdtype(seg.dtype, np.number) or not np.array_equal(seg, np.round(seg)):
        raise VocsegError(f"SBD mask {path}: GTcls.Segmentation is not integer labels (dtype {seg.dtype})")
    bad = np.unique(seg[((seg < 0) | (seg >= num_classes)) & (seg != IGNORE_INDEX)])
    if bad.size:
        raise VocsegError(f"SBD mask {path} has labels {bad.tolist()[:10]} outside 0..{num_classes - 1}")
    return seg.astype(np.uint8)


def _write_new(target: Path, write: Callable[[Path], object]) -> bool:
    """Write ``target`` through a temporary file in its folder, so an interrupted run never leaves a
    half-written file that a re-run would then keep; an existing ``target`` is never replaced."""
    if target.exists():
        return False
    # Not tempfile.mkstemp: its files are 0600, and the dataset folder is often shared; this one gets the umask.
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        write(tmp)
        if target.exists():  # appeared meanwhile (another process): keep it
            return False
        os.replace(tmp, target)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _save_palette_png(mask: np.ndarray, path: Path) -> None:
    img = Image.fromarray(mask)
    img.putpalette(voc_palette())  # mode "L" + palette -> "P", as VOC's own masks
    img.save(path, format="PNG")


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header only: no decode."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as e:
        raise VocsegError(f"image {path} cannot be opened: {e}") from None


@dataclass
class ConvertCounts:
    """What :func:`convert_sbd` did: PNGs written from SBD, VOC masks copied, files kept as found, JPEGs copied."""

    sbd_masks: int = 0
    voc_masks: int = 0
    kept: int = 0
    images_copied: int = 0


def _convert_one(image_id: str, sbd_root: Path, voc_root: Path, counts: ConvertCounts) -> None:
    """One id: the JPEG (copied only if VOC lacks it), then its SegmentationClassAug PNG (VOC's own, else SBD's)."""
    jpeg = voc_root / IMAGE_DIR / f"{image_id}.jpg"
    if not jpeg.exists():
        source = sbd_root / "img" / f"{image_id}.jpg"
        if not source.is_file():
            raise VocsegError(f"image {image_id!r} is in neither {voc_root / IMAGE_DIR} nor {sbd_root / 'img'}")
        counts.images_copied += _write_new(jpeg, lambda tmp: shutil.copyfile(source, tmp))
    target = voc_root / AUG_MASK_DIR / f"{image_id}.png"
    if target.exists():
        counts.kept += 1
        return
    voc_mask = voc_root / MASK_DIR / f"{image_id}.png"
    if voc_mask.is_file():
        counts.voc_masks += _write_new(target, lambda tmp: shutil.copyfile(voc_mask, tmp))
        return
    mat = sbd_root / "cls" / f"{image_id}.mat"
    mask = read_sbd_mask(mat)
    (h, w) = _image_size(jpeg)
    if (h, w) != mask.shape:
        raise VocsegError(f"SBD mask {mat} is {mask.shape[1]}x{mask.shape[0]} but image {jpeg} is {w}x{h}")
    counts.sbd_masks += _write_new(target, lambda tmp: _save_palette_png(mask, tmp))


def _copy_split_lists(sbd_root: Path, voc_root: Path) -> None:
    """SBD's train.txt / val.txt as VOC splits ``sbd_train`` / ``sbd_val``, so ``make_train_aug`` needs only VOC's
    folder; an existing file with other ids is an error, not overwritten."""
    for sbd_name, voc_name in SBD_SPLITS.items():
        source = sbd_root / f"{sbd_name}.txt"
        if not source.is_file():
            raise VocsegError(f"SBD split list not found: {source}")
        ids = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        _write_split(voc_root / SPLIT_DIR / f"{voc_name}.txt", ids)


def _write_split(path: Path, ids: list[str]) -> bool:
    """Write a split list; True if written, False if the same ids were already there. Different ids: error."""
    text = "".join(f"{i}\n" for i in ids)
    if path.exists():
        old = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if old == ids:
            return False
        raise VocsegError(
            f"{path} already exists with different ids ({len(old)} listed, {len(ids)} computed); "
            f"not overwriting it. Move it away and run again to regenerate it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_new(path, lambda tmp: tmp.write_text(text))


def convert_sbd(sbd_root: str | Path, voc_root: str | Path, progress: bool = False) -> ConvertCounts:
    """Fill ``VOC2012/SegmentationClassAug`` with a palette PNG for every ``cls/*.mat`` of SBD and every VOC
    mask (VOC's own where it has one; see the module docstring), copy SBD JPEGs VOC lacks, and copy SBD's
    train/val lists to VOC's ``sbd_train``/``sbd_val`` splits. Existing files are kept, so re-runs are cheap."""
    from tqdm import tqdm

    sbd, voc = resolve_sbd_root(sbd_root), resolve_voc_root(voc_root)
    (voc / AUG_MASK_DIR).mkdir(exist_ok=True)
    _copy_split_lists(sbd, voc)
    sbd_ids = sorted(p.stem for p in (sbd / "cls").glob("*.mat"))
    if not sbd_ids:
        raise VocsegError(f"no .mat masks in {sbd / 'cls'}")
    voc_ids = sorted(p.stem for p in (voc / MASK_DIR).glob("*.png"))
    counts = ConvertCounts()
    for image_id in tqdm(sorted(set(sbd_ids) | set(voc_ids)), desc="SBD -> PNG", disable=not progress):
        _convert_one(image_id, sbd, voc, counts)
    return counts


# ----------------------------------------------------------------------------- train_aug


def train_aug_ids(voc_train: list[str], sbd_train: list[str], sbd_val: list[str], voc_val: list[str]) -> list[str]:
    """The field's ``train_aug``: VOC train ∪ SBD train ∪ SBD val, minus every VOC val image, sorted.
    (SBD's own train/val split ignores VOC's: some SBD "train" images are VOC 2012 val images.)"""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def find_mask(voc_root: Path, image_id: str) -> Path | None:
    """The mask of ``image_id``: VOC's own (``SegmentationClass``) if present, else ``SegmentationClassAug``'s."""
    for folder in (MASK_DIR, AUG_MASK_DIR):
        path = voc_root / folder / f"{image_id}.png"
        if path.is_file():
            return path
    return None


def make_train_aug(voc_root: str | Path) -> int:
    """Write ``ImageSets/Segmentation/train_aug.txt`` from VOC's train/val and the ``sbd_train``/``sbd_val``
    splits :func:`convert_sbd` copied; return its size (10,582 on VOC 2012 + SBD). Every listed id must have
    a JPEG and a mask. An existing train_aug.txt with the same ids is left alone; with other ids, an error."""
    voc = resolve_voc_root(voc_root)
    ids = train_aug_ids(
        read_split(voc, "train"),
        read_split(voc, SBD_SPLITS["train"]),
        read_split(voc, SBD_SPLITS["val"]),
        read_split(voc, "val"),
    )
    missing = [i for i in ids if find_mask(voc, i) is None or not (voc / IMAGE_DIR / f"{i}.jpg").is_file()]
    if missing:
        raise VocsegError(
            f"{len(missing)} train_aug ids lack a JPEG in {voc / IMAGE_DIR} or a mask in {voc / MASK_DIR} / "
            f"{voc / AUG_MASK_DIR} (first: {', '.join(missing[:5])}); run the SBD conversion first"
        )
    _write_split(voc / SPLIT_DIR / f"{TRAIN_AUG_SPLIT}.txt", ids)
    return len(ids)


@dataclass(frozen=True)
class SbdSummary:
    """What :func:`prepare_sbd` did, for the CLI to print."""

    sbd_root: Path
    voc_root: Path
    counts: ConvertCounts
    train_aug_size: int

    def __str__(self) -> str:
        c = self.counts
        note = "" if self.train_aug_size == TRAIN_AUG_SIZE else f" (VOC 2012 + SBD gives {TRAIN_AUG_SIZE:,})"
        return (
            f"SBD at {self.sbd_root}\n"
            f"{self.voc_root / AUG_MASK_DIR}: {c.sbd_masks:,} masks from SBD, {c.voc_masks:,} copied from VOC, "
            f"{c.kept:,} already there (kept); {c.images_copied:,} SBD JPEGs copied into {IMAGE_DIR}\n"
            f"split {TRAIN_AUG_SPLIT}: {self.train_aug_size:,} images{note} -> "
            f"{self.voc_root / SPLIT_DIR / (TRAIN_AUG_SPLIT + '.txt')}"
        )


def prepare_sbd(root: str | Path, progress: bool = True) -> SbdSummary:
    """``vocseg download --sbd --root ROOT``: with VOC 2012 already under ``ROOT``, download SBD (if needed),
    convert its masks into ``SegmentationClassAug`` and write the ``train_aug`` split."""
    root = Path(root).expanduser()
    try:
        voc = resolve_voc_root(root)
    except VocsegError as e:
        raise VocsegError(
            f"{e}\nSBD is added to an existing VOC 2012 tree: run `vocseg download --root {root}` first"
        ) from None
    sbd = download_sbd(root)
    counts = convert_sbd(sbd, voc, progress)
    return SbdSummary(sbd, voc, counts, make_train_aug(voc))
