"""Structurally different synthetic VOC-format datasets ("families"), for fitting planning rules on some
datasets and scoring them on others.

- ``builtin``: the built-in dataset of :mod:`vocseg.data.synthetic` (21 VOC classes).
- ``shape_texture``: 8 classes, each one shape (disc, square, triangle, star) filled with one fine texture
  (horizontal stripes, diagonal stripes, checker, dots; 2-4 px features, fixed in pixels, not scaled with
  the object). Each shape carries two textures and each texture sits on two shapes, so neither names the
  class alone; every object and every background takes random colours, so colour never does. Background
  distractors of other shapes (crescent, L, arrow, bar) carry the same textures, so texture is not objectness.
- ``small_objects``: VOC-sized images with 3-8 non-overlapping objects of the 20 builtin classes, each
  covering 0.2-3% of the image (log-uniform), among background distractors of similar size.
- ``few``: 60 train / 40 val builtin-style scenes of 8 VOC classes in 4 pairs sharing a hue range.
- ``imbalanced``: builtin-style scenes of 10 VOC classes whose pixel shares are Zipf-like, ~ 1/k^2.2 for
  the k-th most frequent: 158x between the first and the last as drawn; 130-380x measured on the default
  480 + 160 images over three seeds (the void band and occlusion take more from the rare, thin shapes).
  Background covers ~60% of the pixels (builtin: ~70%).
- ``photo_background``: builtin-style objects of 10 VOC classes on random crops, rescales and flips of the
  real images matplotlib ships: the photograph grace_hopper.jpg, and a shaded relief of the measured
  Jacksboro fault elevation model. Its other sample files are a clipart, a logo, an MRI slice that is
  mostly black and data tables, so these two are all the natural images there are (no scikit-image here).

Sizes: small_objects is VOC-sized (long side 375-500 px) because its point is objects of a few hundred
pixels in a large image; shrunk, they would be a few pixels. Every other family uses the built-in default
dataset's long side, 192 px: fast to train on a CPU, and the same in every family, so that the structure a
family is built around is its only difference (shape_texture's textures are fixed in pixels, so a larger
image would not make them finer). Image sizes come from the built-in generator: never a multiple of 32.

Every family writes ``VOC2012/class_names.txt`` (background first), so the class count is in the data.
Image ``index`` of a family is drawn from ``np.random.default_rng([seed, stream, index])`` with a stream
number per family (builtin keeps its own ``[seed, index]``): a dataset is identical whatever the number of
workers, and no two families share random draws. photo_background's pixels also depend on matplotlib's
sample images and PIL's JPEG decoder, so they are reproducible per installation.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import VocsegError
from ..runtime.workers import run_in_chunks
from .classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, voc_palette
from .synthetic import (
    _CLASSES,
    _N_OBJECTS,
    _N_OBJECTS_P,
    _OBJ_AREA,
    DEFAULT_SYNTHETIC,
    JPEG_QUALITY,
    _background,
    _boundary,
    _ClassSpec,
    _draw_distractor,
    _draw_object,
    _hsv,
    _image_size,
    _paint,
    _shape_mask,
    _smooth_noise,
    _write_lines,
    empty_voc_tree,
    generate_synthetic_voc,
    render_sample,
)

__all__ = ["FAMILIES", "Family", "family_names", "generate_family", "render_family_sample", "CLASS_NAMES_FILE"]

CLASS_NAMES_FILE = "class_names.txt"
_MIN_SIDE = 48  # as generate_synthetic_voc: below this the shapes are a few pixels


@dataclass(frozen=True)
class Family:
    """One family's defaults; ``class_names`` starts with the background."""

    description: str
    n_train: int
    n_val: int
    max_side: int
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# VOC class indices each builtin-style family draws from; family class k is VOC class _X_VOC[k - 1].
# few: four hue pairs (aeroplane/boat, cat/dog, chair/diningtable, horse/person), so shape decides within a pair.
_FEW_VOC = (1, 4, 8, 9, 11, 12, 13, 15)
# imbalanced: VOC classes 1-10, most frequent first. Ranked by how much of its box the class's shape fills,
# most first: the pixel shares are set (Zipf), so a rare class of thin shapes needs more objects to reach
# its share, and the rarest (aeroplane) gets 47x fewer objects than the commonest, not 158x: ~15 in 480 images.
_IMBALANCED_VOC = (6, 7, 5, 4, 10, 9, 2, 3, 8, 1)
_PHOTO_VOC = tuple(range(11, 21))  # diningtable .. tvmonitor: the VOC classes imbalanced does not use
_ZIPF_EXPONENT = 2.2  # pixel share of class k ~ 1/k^2.2: first / last = 10^2.2 = 158 as drawn

# shape_texture: (shape, texture) per class; shapes map to synthetic's shape masks and aspect ranges.
_ST_CLASSES = (
    ("disc", "hstripes"),
    ("disc", "checker"),
    ("square", "hstripes"),
    ("square", "dots"),
    ("triangle", "dstripes"),
    ("triangle", "checker"),
    ("star", "dots"),
    ("star", "dstripes"),
)
_ST_SHAPES = {
    "disc": ("ellipse", (0.8, 1.25)),
    "square": ("rect", (0.8, 1.25)),
    "triangle": ("triangle", (0.8, 1.25)),
    "star": ("star5", (0.9, 1.1)),
}
_ST_DISTRACTORS = (("crescent", (0.8, 1.2)), ("lshape", (0.6, 1.0)), ("arrow", (1.6, 2.4)), ("bar", (4.0, 8.0)))
_ST_TEXTURES = ("hstripes", "dstripes", "checker", "dots")


def _voc_names(indices: Sequence[int]) -> tuple[str, ...]:
    return ("background", *(VOC_CLASSES[i] for i in indices))


FAMILIES: dict[str, Family] = {
    "builtin": Family(
        "the built-in dataset: cluttered textured scenes of 20 VOC classes that share colours in pairs",
        DEFAULT_SYNTHETIC["n_train"],
        DEFAULT_SYNTHETIC["n_val"],
        DEFAULT_SYNTHETIC["max_side"],
        VOC_CLASSES,
    ),
    "shape_texture": Family(
        "8 classes told apart only by shape and a fine texture; every colour random",
        400,
        100,
        192,
        ("background", *(f"{shape}_{texture}" for shape, texture in _ST_CLASSES)),
    ),
    "small_objects": Family(
        "VOC-sized images with 3-8 objects of 20 VOC classes, each 0.2-3% of the image",
        300,
        100,
        500,
        VOC_CLASSES,
    ),
    "few": Family("60 training images of 8 VOC classes", 60, 40, 192, _voc_names(_FEW_VOC)),
    "imbalanced": Family(
        "10 VOC classes with Zipf-like pixel shares: 100x or more between the most and least frequent",
        480,
        160,
        192,
        _voc_names(_IMBALANCED_VOC),
    ),
    "photo_background": Family(
        "objects of 10 VOC classes on crops of real photographs",
        400,
        100,
        192,
        _voc_names(_PHOTO_VOC),
    ),
}


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def family_names() -> list[str]:
    """The families ``generate_family`` knows, in registry order."""
    return list(FAMILIES)


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise VocsegError(f"unknown dataset family {name!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def generate_family(
    name: str,
    out: str | Path,
    n_train: int | None = None,
    n_val: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
    max_side: int | None = None,
) -> Path:
    """Write family ``name`` as a VOC-format tree under ``out``; return ``out/VOCdevkit/VOC2012``.

    ``n_train``, ``n_val``, ``max_side`` (the long side's upper bound; sizes are drawn in 0.75-1 of it):
    ``None`` takes the family's default (``FAMILIES[name]``). Images ``<name>_000000 ..`` (builtin:
    ``synth_..``) form ``train``, the next ``n_val`` form ``val``. ``workers`` processes render (default:
    one per CPU); the result does not depend on their number. Refuses (``VocsegError``) if
    ``out/VOCdevkit/VOC2012`` already holds anything, or an unknown name, listing the known ones.
    """
    family = _family(name)
    n_train = family.n_train if n_train is None else n_train
    n_val = family.n_val if n_val is None else n_val
    max_side = family.max_side if max_side is None else max_side
    _check_arguments(n_train, n_val, seed, max_side, workers)
    if name == "builtin":
        root = generate_synthetic_voc(out, n_train, n_val, seed, max_side, workers, progress)
        # Written after the split files that mark the tree complete: the delegate refuses a non-empty folder.
        _write_lines(root / CLASS_NAMES_FILE, list(family.class_names))
        return root

    root = empty_voc_tree(out)

    n = n_train + n_val
    _render_all(root, name, n, seed, max_side, workers, progress)
    _write_lines(root / CLASS_NAMES_FILE, list(family.class_names))
    # Split files last: their presence marks a completed tree.
    ids = [_image_id(name, i) for i in range(n)]
    sets = root / "ImageSets" / "Segmentation"
    _write_lines(sets / "train.txt", ids[:n_train])
    _write_lines(sets / "val.txt", ids[n_train:])
    _write_lines(sets / "trainval.txt", ids)
    return root


def render_family_sample(
    name: str, seed: int, index: int, max_side: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of family ``name``, as written before JPEG compression: ``(H, W, 3) uint8`` RGB and
    ``(H, W) uint8`` labels (0 .. num_classes-1, 255 void)."""
    family = _family(name)
    max_side = family.max_side if max_side is None else max_side
    if name == "builtin":
        return render_sample(seed, index, max_side)
    stream, render = _RENDERERS[name]
    return render(np.random.default_rng([seed, stream, index]), max_side)


# --------------------------------------------------------------------------------------------------
# Files and workers
# --------------------------------------------------------------------------------------------------


def _check_arguments(n_train: int, n_val: int, seed: int, max_side: int, workers: int | None) -> None:
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise VocsegError(f"need n_train >= 0, n_val >= 0 and at least one image, got n_train={n_train}, n_val={n_val}")
    if seed < 0:
        raise VocsegError(f"seed must be >= 0, got {seed}")
    if max_side < _MIN_SIDE:
        raise VocsegError(f"max_side must be at least {_MIN_SIDE} pixels, got {max_side}")
    if workers is not None and workers < 1:
        raise VocsegError(f"workers must be >= 1, got {workers}")


def _image_id(name: str, index: int) -> str:
    return f"{name}_{index:06d}"


def _render_all(root: Path, name: str, n: int, seed: int, max_side: int, workers: int | None, progress: bool) -> None:
    """Render and write images 0..n-1 in chunks over ``workers`` processes, as generate_synthetic_voc does."""
    run_in_chunks(_render_chunk, lambda idx: (str(root), name, seed, max_side, idx), n, workers, f"{name} dataset",
                  progress)  # fmt: skip


def _render_chunk(task: tuple[str, str, int, int, list[int]]) -> int:
    """Worker: render and write the images of one chunk of indices; return how many."""
    root, name, seed, max_side, indices = task
    palette = voc_palette()
    for index in indices:
        image, label = render_family_sample(name, seed, index, max_side)
        stem = _image_id(name, index)
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{stem}.jpg"), quality=JPEG_QUALITY)
        mask = Image.fromarray(label)  # mode "L"; putpalette turns it into "P"
        mask.putpalette(palette)
        mask.save(os.path.join(root, "SegmentationClass", f"{stem}.png"))
    return len(indices)


# --------------------------------------------------------------------------------------------------
# Shared drawing
# --------------------------------------------------------------------------------------------------


# A fixed grid on the shape's normalised box [-1, 1]^2, to measure how much of its box a shape fills.
_GRID_V, _GRID_U = (g.astype(np.float32) for g in np.meshgrid(*2 * [np.linspace(-1, 1, 96)], indexing="ij"))


def _finish(rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """render_sample's last steps: global illumination, sensor noise, then the void band."""
    h, w = label.shape
    img *= 0.85 + 0.3 * _smooth_noise(rng, h, w, max(h, w) // 3)[..., None]
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2.0, 7.0))
    label[_boundary(label)] = IGNORE_INDEX
    return np.clip(img, 0, 255).astype(np.uint8), label


def _frame(
    shape_rng: np.random.Generator,
    shape: str,
    a: float,
    b: float,
    theta: float,
    flip: float,
    centre: tuple[float, float],
    hw: tuple[int, int],
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray] | None:
    """Where a shape lands, as in synthetic's _draw_object: ``(y0, x0, mask, pu, pv)`` over its clipped
    bounding box (``pu, pv``: pixel coordinates in the shape's own frame), or None if that box is empty.
    ``shape_rng`` draws the shape's own parameters (arm widths, points), so a caller can repeat them."""
    (cx, cy), (h, w) = centre, hw
    r = math.hypot(a, b)  # the rotated box always fits in this radius
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    pu = (dx * cos + dy * sin) * np.float32(flip)
    pv = dy * cos - dx * sin
    return y0, x0, _shape_mask(shape_rng, shape, pu / np.float32(a), pv / np.float32(b)), pu, pv


def _stamp(img: np.ndarray, label: np.ndarray, y0: int, x0: int, mask: np.ndarray, rgb: np.ndarray, cls: int) -> None:
    """Paint ``rgb`` and write ``cls`` where ``mask`` is set, over what is below."""
    y1, x1 = y0 + mask.shape[0], x0 + mask.shape[1]
    img[y0:y1, x0:x1][mask] = rgb[mask]
    label[y0:y1, x0:x1][mask] = cls


def _builtin_objects(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    voc: Sequence[int],
    p: np.ndarray | None,
    max_distractors: int = 5,
) -> None:
    """render_sample's scene over the classes ``voc`` (family class k+1 is VOC class ``voc[k]``), drawn
    with probabilities ``p`` (None: uniform): distractors, 1-4 objects, sometimes one late distractor."""
    n_distract = int(rng.integers(1, max_distractors + 1))
    late = int(rng.random() < 0.3)
    for _ in range(n_distract - late):
        _draw_distractor(rng, img, label)
    for _ in range(int(rng.choice(_N_OBJECTS, p=_N_OBJECTS_P))):
        k = int(rng.choice(len(voc), p=p))
        _draw_object(rng, img, label, k + 1, _CLASSES[voc[k] - 1], _OBJ_AREA)
    for _ in range(late):
        _draw_distractor(rng, img, label)


# --------------------------------------------------------------------------------------------------
# Builtin-style families: few, imbalanced, photo_background
# --------------------------------------------------------------------------------------------------


def _render_few(rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = _image_size(rng, max_side)
    img, label = _background(rng, h, w), np.zeros((h, w), np.uint8)
    _builtin_objects(rng, img, label, _FEW_VOC, None)
    return _finish(rng, img, label)


def _render_imbalanced(rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = _image_size(rng, max_side)
    img, label = _background(rng, h, w), np.zeros((h, w), np.uint8)
    _builtin_objects(rng, img, label, _IMBALANCED_VOC, _zipf_p())
    return _finish(rng, img, label)


@functools.lru_cache(maxsize=1)
def _zipf_p() -> np.ndarray:
    """Object-class probabilities for imbalanced: Zipf in *pixels*, not in objects. Box sizes are iid, but
    shapes fill 30-100% of their box (a plane little, a bus all), so a Zipf draw of objects alone gave only
    ~50x in pixels over 400 images; dividing by each class's mean fill makes the pixel shares Zipf (before
    occlusion, which hits every class alike)."""
    rng = np.random.default_rng(0)  # fixed: the same probabilities in every process
    fill = [
        np.mean([_shape_mask(rng, _CLASSES[c - 1].shape, _GRID_U, _GRID_V).mean() for _ in range(32)])
        for c in _IMBALANCED_VOC
    ]
    p = np.array([k**-_ZIPF_EXPONENT / f for k, f in enumerate(fill, start=1)])
    return p / p.sum()


def _render_photo_background(rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = _image_size(rng, max_side)
    img, label = _photo_crop(rng, h, w), np.zeros((h, w), np.uint8)
    # The photograph is the clutter: fewer distractors (0-2) than the builtin scenes' 1-5.
    _builtin_objects(rng, img, label, _PHOTO_VOC, None, max_distractors=2)
    return _finish(rng, img, label)


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[Image.Image, ...]:
    """The real images backgrounds are cut from, loaded once per process: matplotlib's photograph, and its
    Jacksboro fault elevation model as a shaded relief (matplotlib's own demo rendering of it)."""
    from matplotlib import cbook, colormaps
    from matplotlib.colors import LightSource

    try:
        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as f:
            photo = f.convert("RGB")
        dem = cbook.get_sample_data("jacksboro_fault_dem.npz")
        z, dx, dy = dem["elevation"].astype(np.float64), float(dem["dx"]), float(dem["dy"])
    except (OSError, KeyError, ValueError) as e:
        raise VocsegError(
            f"the photo_background family needs matplotlib's sample images grace_hopper.jpg and "
            f"jacksboro_fault_dem.npz (in matplotlib/mpl-data/sample_data), which could not be read: {e}"
        ) from e
    # Vertical exaggeration: elevations are metres but dx, dy are degrees (~93 m per 0.00083 degree).
    shaded = LightSource(azdeg=315, altdeg=45).shade(
        z, cmap=colormaps["gist_earth"], blend_mode="soft", vert_exag=1 / 111_000, dx=dx, dy=dy
    )
    relief = Image.fromarray(np.round(shaded[..., :3] * 255).astype(np.uint8))
    return photo, relief


def _photo_crop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop (1-3x zoom), flip and colour change of one of the real images, at ``h x w``, float32."""
    photos = _photos()
    k = int(rng.integers(len(photos)))
    src = photos[k]
    sw, sh = src.size
    cw = min(sw, sh * w / h) * rng.uniform(0.35, 1.0)  # the largest crop of the output's aspect, shrunk
    ch = cw * h / w
    x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
    img = np.asarray(src.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch)), dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if k > 0 and rng.random() < 0.5:  # terrain seen from above has no "up"; a portrait has
        img = img[::-1]
    mean = img.mean()
    img = mean + (img - mean) * np.float32(rng.uniform(0.7, 1.2))  # contrast
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # colour cast
    if rng.random() < 0.2:
        img = np.broadcast_to(img.mean(axis=2, keepdims=True), img.shape)
    return np.ascontiguousarray(img, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# small_objects
# --------------------------------------------------------------------------------------------------

_SMALL_SHARE = (0.002, 0.03)  # each object's own pixels, as a fraction of the image
_SMALL_N = (3, 8)
_SMALL_DISTRACTORS = (2, 8)
_GAP = 3  # px between objects' bounding circles: each object is its own region of the mask, void band included


def _render_small_objects(rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = _image_size(rng, max_side)
    img, label = _background(rng, h, w), np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(_SMALL_DISTRACTORS[0], _SMALL_DISTRACTORS[1] + 1))):
        _draw_distractor(rng, img, label)  # 0.4-5% of the image each: as small as the objects
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(_SMALL_N[0], _SMALL_N[1] + 1))):
        cls = int(rng.integers(1, NUM_CLASSES))
        share = math.exp(rng.uniform(*np.log(_SMALL_SHARE)))
        _draw_sized(rng, img, label, cls, _CLASSES[cls - 1], share, placed)
    return _finish(rng, img, label)


def _draw_sized(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    cls: int,
    spec: _ClassSpec,
    share: float,
    placed: list[tuple[float, float, float]],
) -> None:
    """Draw a builtin-class object whose own pixels (not its box's) cover ``share`` of the image, wholly
    inside it and clear of the objects in ``placed`` (x, y, radius), which it joins. Skipped if no room."""
    h, w = label.shape
    aspect = rng.uniform(*spec.aspect)
    theta = math.radians(rng.uniform(-spec.rotation, spec.rotation))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    # Shapes fill 30-100% of their box: measure this instance's fill, then size its box to hit the share.
    shape_seed = int(rng.integers(2**63))
    fill = float(_shape_mask(np.random.default_rng(shape_seed), spec.shape, _GRID_U, _GRID_V).mean())
    box = share * h * w / max(fill, 0.05)
    a, b = math.sqrt(box * aspect) / 2, math.sqrt(box / aspect) / 2
    r = math.hypot(a, b)
    centre = _free_spot(rng, r, placed, h, w)
    if centre is None:
        return
    placed.append((*centre, r))
    drawn = _frame(np.random.default_rng(shape_seed), spec.shape, a, b, theta, flip, centre, (h, w))
    if drawn is None:
        return
    y0, x0, mask, pu, pv = drawn
    _stamp(img, label, y0, x0, mask, _spec_pixels(rng, spec, pu, pv, max(a, b), mask.shape), cls)


def _free_spot(
    rng: np.random.Generator, r: float, placed: list[tuple[float, float, float]], h: int, w: int
) -> tuple[float, float] | None:
    """A centre whose circle of radius ``r`` lies inside the image and ``_GAP`` px clear of ``placed``."""
    lo = r + 1
    if 2 * lo >= min(h, w):
        return None
    for _ in range(30):
        cx, cy = rng.uniform(lo, w - lo), rng.uniform(lo, h - lo)
        if all(math.hypot(cx - x, cy - y) >= r + rr + _GAP for x, y, rr in placed):
            return cx, cy
    return None


def _spec_pixels(
    rng: np.random.Generator, spec: _ClassSpec, pu: np.ndarray, pv: np.ndarray, size: float, shape: tuple[int, int]
) -> np.ndarray:
    """A builtin class's colours and texture over a box, as the second half of synthetic's _draw_object."""
    hue = spec.hue[0] + rng.uniform(-spec.hue[1], spec.hue[1])
    sat, val = rng.uniform(*spec.sat), rng.uniform(*spec.val)
    c1 = _hsv(hue, sat, val)
    if rng.random() < 0.5:
        c2 = _hsv(hue, sat * rng.uniform(0.6, 1.2), val * rng.choice((rng.uniform(0.3, 0.7), rng.uniform(1.3, 1.8))))
    else:
        c2 = _hsv(hue + rng.choice((-1, 1)) * rng.uniform(0.05, 0.2), rng.uniform(*spec.sat), rng.uniform(*spec.val))
    kinds = list(spec.textures)
    weights = np.array([spec.textures[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    return _paint(rng, kind, pu, pv, size, shape, c1, c2)


# --------------------------------------------------------------------------------------------------
# shape_texture
# --------------------------------------------------------------------------------------------------

_ST_AREA = (0.04, 0.3)  # object box as a fraction of the image, log-uniform
_ST_DISTRACTOR_AREA = (0.01, 0.08)
_MIN_LUMA_GAP = 60.0  # the texture's two colours differ this much in luma, so JPEG's chroma subsampling keeps it


def _render_shape_texture(rng: np.random.Generator, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = _image_size(rng, max_side)
    # Background: two random colours blended by smooth noise; no fine texture of its own.
    c1, c2 = _any_colour(rng), _any_colour(rng)
    t = _smooth_noise(rng, h, w, max(4, int(max(h, w) * rng.uniform(0.1, 0.3))))
    img = np.ascontiguousarray(c1 + t[..., None] * (c2 - c1), dtype=np.float32)
    label = np.zeros((h, w), np.uint8)
    n_distract = int(rng.integers(1, 5))
    late = int(rng.random() < 0.3)
    for _ in range(n_distract - late):
        _draw_st_distractor(rng, img, label)
    for _ in range(int(rng.choice(_N_OBJECTS, p=_N_OBJECTS_P))):
        cls = int(rng.integers(1, len(_ST_CLASSES) + 1))
        shape, texture = _ST_CLASSES[cls - 1]
        _draw_textured(rng, img, label, cls, *_ST_SHAPES[shape], texture, _ST_AREA)
    for _ in range(late):
        _draw_st_distractor(rng, img, label)
    return _finish(rng, img, label)


def _draw_st_distractor(rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> None:
    shape, aspect = _ST_DISTRACTORS[int(rng.integers(len(_ST_DISTRACTORS)))]
    texture = _ST_TEXTURES[int(rng.integers(len(_ST_TEXTURES)))]
    _draw_textured(rng, img, label, 0, shape, aspect, texture, _ST_DISTRACTOR_AREA)


def _draw_textured(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    cls: int,
    shape: str,
    aspect_range: tuple[float, float],
    texture: str,
    area_range: tuple[float, float],
) -> None:
    """A shape at any angle, anywhere, filled with ``texture`` in two random colours."""
    h, w = label.shape
    area = h * w * math.exp(rng.uniform(*np.log(area_range)))
    aspect = rng.uniform(*aspect_range)
    a, b = math.sqrt(area * aspect) / 2, math.sqrt(area / aspect) / 2
    theta, flip = rng.uniform(-math.pi, math.pi), (-1.0 if rng.random() < 0.5 else 1.0)
    centre = (rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h)
    drawn = _frame(rng, shape, a, b, theta, flip, centre, (h, w))
    if drawn is None:
        return
    y0, x0, mask, _, _ = drawn
    on = _fine_texture(rng, texture, y0, x0, mask.shape)
    c1, c2 = _contrasting_colours(rng)
    _stamp(img, label, y0, x0, mask, np.where(on[..., None], c2, c1), cls)


def _fine_texture(rng: np.random.Generator, kind: str, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
    """Boolean pattern over a box at ``(y0, x0)``, in image coordinates with a random phase: orientation and
    period are the class's, whatever the object's size and angle. Features are 2-4 px."""
    ys = np.arange(y0, y0 + shape[0])[:, None] + int(rng.integers(0, 24))
    xs = np.arange(x0, x0 + shape[1])[None, :] + int(rng.integers(0, 24))
    if kind == "hstripes":  # period 4 px: 2 px lines
        return np.broadcast_to(ys % 4 < 2, shape)
    if kind == "dstripes":  # 45 degrees, period 8 px along a row (5.7 px across the stripes)
        return (xs + ys) % 8 < 4
    if kind == "checker":  # 3 px cells
        return (xs // 3 + ys // 3) % 2 == 0
    if kind == "dots":  # 6 px pitch, 1.6 px radius
        return (xs % 6 - 2.5) ** 2 + (ys % 6 - 2.5) ** 2 <= 1.6**2
    raise ValueError(f"unknown texture {kind!r}")


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    """Any hue, saturation and (not too dark) value: the same distribution for every class and the background."""
    return _hsv(rng.random(), rng.random(), rng.uniform(0.15, 1.0))


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two iid random colours, redrawn until their luma differs by ``_MIN_LUMA_GAP``, so the texture shows."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    for _ in range(100):
        c1, c2 = _any_colour(rng), _any_colour(rng)
        if abs(float((c1 - c2) @ luma)) >= _MIN_LUMA_GAP:
            return c1, c2
    return c1, np.full(3, 0.0 if float(c1 @ luma) > 127 else 255.0, np.float32)  # practically never reached


_RENDERERS: dict[str, tuple[int, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]]] = {
    "shape_texture": (1, _render_shape_texture),
    "small_objects": (2, _render_small_objects),
    "few": (3, _render_few),
    "imbalanced": (4, _render_imbalanced),
    "photo_background": (5, _render_photo_background),
}
assert set(_RENDERERS) | {"builtin"} == set(FAMILIES)
