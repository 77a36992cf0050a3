"""Reader for the PASCAL VOC 2012 segmentation tree (and any dataset laid out the same way).

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                            /SegmentationClass/<id>.png      palette PNG: class index per pixel, 255 = void
                            /ImageSets/Segmentation/<split>.txt
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import VocsegError
from .classes import IGNORE_INDEX, NUM_CLASSES, voc_colormap

# PIL refuses images above 2x this many pixels and only warns above 1x; we refuse both (see load_image).
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

IMAGE_DIR, MASK_DIR, SPLIT_DIR = "JPEGImages", "SegmentationClass", "ImageSets/Segmentation"


def resolve_voc_root(root: str | Path) -> Path:
    """Return the ``VOC2012`` folder given it, its parent ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise VocsegError(f"dataset root does not exist: {root}")
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / IMAGE_DIR).is_dir() and (candidate / MASK_DIR).is_dir():
            return candidate
    raise VocsegError(
        f"no VOC tree under {root}: expected {root}/VOCdevkit/VOC2012/{{{IMAGE_DIR},{MASK_DIR},{SPLIT_DIR}}} "
        f"(or pass the VOC2012 folder itself); run `vocseg download --root {root}` to fetch VOC 2012"
    )


def read_split(voc_root: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Segmentation/<split>.txt``."""
    path = voc_root / SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (voc_root / SPLIT_DIR).glob("*.txt"))
        raise VocsegError(f"split file not found: {path} (available splits: {', '.join(available) or 'none'})")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise VocsegError(f"split file is empty: {path}")
    return ids


def _open_checked(path: Path, what: str) -> Image.Image:
    if not path.is_file():
        raise VocsegError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise VocsegError(f"{what} is an empty (zero-byte) file: {path}")
    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns; a segmentation image that large is a decompression bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()  # force the decode now so a truncated file fails here, naming the file
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VocsegError(f"{what} {path} is too large to decode safely (over {MAX_IMAGE_PIXELS} pixels): {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VocsegError(f"{what} {path} cannot be decoded (truncated or corrupt?): {e}") from None
    return img


def load_image(path: str | Path) -> np.ndarray:
    """Decode any image PIL reads (JPEG, PNG; RGB, grayscale, CMYK, RGBA, 16-bit) to uint8 RGB (H, W, 3)."""
    path = Path(path)
    img = _open_checked(path, "image")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of letting PIL clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black so transparent pixels do not carry arbitrary hidden colours.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.array(img.convert("RGB"))


# VOC colour -> class index, as sorted 24-bit codes for a vectorised lookup of RGB-coded masks.
_LUT_CODES, _LUT_INDEX = (
    np.array(col, dtype=np.int64)
    for col in zip(*sorted(((r << 16) | (g << 8) | b, i) for i, (r, g, b) in enumerate(voc_colormap(256))))
)


def load_mask(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Decode a VOC mask to uint8 class indices (H, W): palette/grayscale PNGs are read as indices,
    RGB PNGs are mapped back through VOC's colour map. Values must be 0..num_classes-1 or 255."""
    path = Path(path)
    img = _open_checked(path, "mask")
    if img.mode in ("P", "L"):
        mask = np.array(img, dtype=np.uint8)
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        pos = np.clip(np.searchsorted(_LUT_CODES, codes), 0, len(_LUT_CODES) - 1)
        found = _LUT_CODES[pos] == codes
        if not found.all():
            bad = tuple(int(v) for v in rgb[~found][0])
            raise VocsegError(f"mask {path} has colour {bad}, which is not in VOC's colour map")
        mask = _LUT_INDEX[pos].astype(np.uint8)
    else:
        raise VocsegError(f"mask {path} has unsupported mode {img.mode!r}; expected a palette (P) or grayscale PNG")
    bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
    if bad.size:
        raise VocsegError(
            f"mask {path} has values {bad.tolist()[:10]} outside 0..{num_classes - 1} and {IGNORE_INDEX} (void)"
        )
    return mask


class VOCSegmentation(Dataset):
    """VOC-format segmentation split. Items are ``transforms(image, mask)``; without transforms,
    ``(tv_tensors.Image uint8 (3,H,W), tv_tensors.Mask uint8 (H,W))``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transforms: Callable | None = None,
        ids: Sequence[str] | None = None,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        self.voc_root = resolve_voc_root(root)
        self.split = split
        self.ids = list(ids) if ids is not None else read_split(self.voc_root, split)
        self.transforms = transforms
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.voc_root / IMAGE_DIR / f"{self.ids[i]}.jpg"

    def mask_path(self, i: int) -> Path:
        return self.voc_root / MASK_DIR / f"{self.ids[i]}.png"

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(image uint8 (H,W,3), mask uint8 (H,W))``, checked for matching sizes."""
        image = load_image(self.image_path(i))
        mask = load_mask(self.mask_path(i), self.num_classes)
        if image.shape[:2] != mask.shape:
            raise VocsegError(
                f"image {self.image_path(i)} is {image.shape[1]}x{image.shape[0]} but its mask "
                f"{self.mask_path(i)} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def __getitem__(self, i: int):
        image, mask = self.load(i)
        image_t = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        mask_t = tv_tensors.Mask(torch.from_numpy(mask))
        if self.transforms is not None:
            return self.transforms(image_t, mask_t)
        return image_t, mask_t

    def check(self) -> None:
        """Verify that every listed image and mask exists (fail before training starts, naming the file)."""
        for i in range(len(self)):
            for path, what in ((self.image_path(i), "image"), (self.mask_path(i), "mask")):
                if not path.is_file():
                    raise VocsegError(f"{what} for id {self.ids[i]!r} of split {self.split!r} not found: {path}")
