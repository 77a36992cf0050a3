"""A built-in synthetic dataset in PASCAL VOC 2012's on-disk format: a hard cousin of VOC.

Every image is a cluttered, textured background with 1-4 occluding objects of the 20 VOC object
classes. A class is *not* one colour: each class draws its shape family, aspect ratio, hue range,
saturation/value and texture from overlapping distributions, so a model must combine shape, texture
and colour to tell classes apart. Background-class distractors (blobs, bars, diamonds, hexagons,
hourglasses) use the same textures as objects in muted colours, so "textured thing" does not mean "object";
backgrounds are muted too, and most classes are saturated, but three classes are as grey as the background.
Masks carry a 2-3 px void (255) band around every object edge, like VOC's.

Each image is drawn from its own RNG, ``np.random.default_rng([seed, index])``, so the dataset is
identical whatever the number of worker processes.
"""

from __future__ import annotations

import colorsys
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import VocsegError
from ..runtime.files import output_dir
from ..runtime.workers import run_in_chunks
from .classes import IGNORE_INDEX, NUM_CLASSES, voc_palette
from .stats import cache_dir as default_cache_dir

__all__ = ["generate_synthetic_voc", "default_dataset_root", "DEFAULT_SYNTHETIC", "GENERATOR_VERSION"]

# Bump whenever the drawing code changes what an image looks like, so cached datasets are regenerated.
GENERATOR_VERSION = 2

DEFAULT_SYNTHETIC: dict[str, int] = dict(n_train=480, n_val=160, seed=0, max_side=192)

JPEG_QUALITY = 90
ID_PREFIX = "synth_"

# Object size: bounding-box area as a fraction of the image, log-uniform in this range. Tuned so the
# background (class 0) covers ~70% of all pixels over the dataset, as in VOC.
_OBJ_AREA = (0.09, 0.65)
_DISTRACTOR_AREA = (0.004, 0.05)
_N_OBJECTS = (1, 2, 3, 4)
_N_OBJECTS_P = (0.3, 0.3, 0.25, 0.15)

_TEXTURES = ("flat", "stripes", "checker", "noise", "dots", "gradient", "mottled")


@dataclass(frozen=True)
class _ClassSpec:
    """How one class is drawn; every field is a distribution, overlapping with other classes."""

    shape: str
    aspect: tuple[float, float]  # width / height of the shape's box, before rotation
    rotation: float  # max |rotation| in degrees; 180 = any orientation
    hue: tuple[float, float]  # centre, half-width on the hue circle [0, 1)
    sat: tuple[float, float]
    val: tuple[float, float]
    textures: dict[str, float]  # texture -> relative weight


# Index i+1 is VOC class i+1 (aeroplane ... tvmonitor). Most classes come in pairs sharing a hue range
# (aeroplane/boat, bicycle/car, bird/bus, cat/dog, chair/diningtable, horse/person, bottle/pottedplant,
# motorbike/sofa) and differing in shape and texture, so colour narrows a pixel down to a pair and shape
# decides within it. Cow, sheep and tvmonitor are low-saturation, like the background, so for them shape
# and texture carry everything. Classes sharing a shape family (ellipse: cow vs sheep; rect: bus vs
# train) differ in aspect range, colour and texture.
_CLASSES: tuple[_ClassSpec, ...] = (
    _ClassSpec(
        "plane", (1.1, 1.6), 180, (0.60, 0.06), (0.45, 0.9), (0.6, 0.95), {"flat": 3, "gradient": 3, "stripes": 1}
    ),
    _ClassSpec("ring", (0.9, 1.1), 30, (0.99, 0.06), (0.5, 1.0), (0.4, 0.9), {"stripes": 3, "flat": 2, "checker": 1}),
    _ClassSpec(
        "triangle", (0.8, 1.3), 180, (0.16, 0.06), (0.45, 0.9), (0.4, 0.9), {"noise": 3, "mottled": 2, "flat": 1}
    ),
    _ClassSpec(
        "trapezoid", (1.4, 2.2), 20, (0.60, 0.06), (0.45, 0.9), (0.3, 0.9), {"stripes": 3, "gradient": 2, "flat": 1}
    ),
    _ClassSpec("bottle", (0.3, 0.5), 20, (0.33, 0.06), (0.45, 0.9), (0.3, 0.8), {"gradient": 3, "flat": 2, "noise": 1}),
    _ClassSpec("rect", (1.3, 1.9), 15, (0.16, 0.06), (0.6, 1.0), (0.6, 1.0), {"checker": 3, "stripes": 1, "flat": 1}),
    _ClassSpec(
        "roundrect", (1.4, 2.2), 20, (0.99, 0.06), (0.5, 1.0), (0.3, 0.9), {"flat": 3, "gradient": 3, "mottled": 1}
    ),
    _ClassSpec("star5", (0.9, 1.1), 180, (0.08, 0.05), (0.45, 0.9), (0.4, 0.9), {"noise": 3, "mottled": 2, "dots": 1}),
    _ClassSpec(
        "lshape", (0.6, 1.0), 20, (0.45, 0.06), (0.45, 0.85), (0.3, 0.8), {"stripes": 3, "flat": 2, "gradient": 1}
    ),
    _ClassSpec(
        "ellipse", (1.45, 2.1), 25, (0.07, 0.20), (0.0, 0.5), (0.2, 0.9), {"dots": 3, "checker": 2, "mottled": 1}
    ),
    _ClassSpec(
        "table", (1.3, 2.0), 10, (0.45, 0.06), (0.45, 0.85), (0.3, 0.8), {"gradient": 3, "stripes": 2, "flat": 1}
    ),
    _ClassSpec(
        "crescent", (0.8, 1.2), 180, (0.08, 0.05), (0.45, 0.9), (0.3, 0.9), {"noise": 3, "mottled": 2, "flat": 1}
    ),
    _ClassSpec(
        "arrow", (1.6, 2.4), 180, (0.03, 0.04), (0.45, 0.85), (0.3, 0.8), {"flat": 3, "gradient": 2, "noise": 1}
    ),
    _ClassSpec("gear", (0.9, 1.1), 180, (0.78, 0.06), (0.5, 1.0), (0.3, 0.9), {"checker": 3, "flat": 2, "dots": 1}),
    _ClassSpec(
        "heart", (0.85, 1.15), 20, (0.03, 0.04), (0.4, 0.8), (0.5, 1.0), {"flat": 3, "gradient": 3, "mottled": 1}
    ),
    _ClassSpec(
        "spiky", (0.8, 1.2), 180, (0.30, 0.06), (0.5, 1.0), (0.3, 0.8), {"noise": 3, "stripes": 1, "mottled": 2}
    ),
    _ClassSpec(
        "ellipse", (1.0, 1.35), 180, (0.12, 0.20), (0.0, 0.25), (0.7, 1.0), {"noise": 3, "dots": 2, "mottled": 2}
    ),
    _ClassSpec(
        "ushape", (1.3, 1.9), 15, (0.78, 0.06), (0.45, 0.9), (0.3, 0.8), {"stripes": 3, "mottled": 2, "flat": 1}
    ),
    _ClassSpec("rect", (2.4, 4.0), 25, (0.88, 0.06), (0.45, 0.9), (0.4, 0.9), {"stripes": 3, "gradient": 2, "dots": 1}),
    _ClassSpec("frame", (1.15, 1.5), 10, (0.60, 0.30), (0.0, 0.4), (0.1, 0.5), {"gradient": 3, "flat": 2, "noise": 1}),
)
assert len(_CLASSES) == NUM_CLASSES - 1

# Background-class distractor shapes: families no object class uses, plus irregular blobs and bars.
_DISTRACTOR_SHAPES = ("blob", "blob", "bar", "diamond", "hexagon", "hourglass")


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def generate_synthetic_voc(
    out: str | Path,
    n_train: int = 1000,
    n_val: int = 300,
    seed: int = 0,
    max_side: int = 500,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write a VOC-format tree under ``out``; return the path to ``out/VOCdevkit/VOC2012``.

    Images ``synth_000000 .. synth_{n_train-1}`` form ``train``, the next ``n_val`` form ``val``.
    Refuses (``VocsegError``) if ``out/VOCdevkit/VOC2012`` already holds anything.
    """
    if n_train < 0 or n_val < 0 or n_train + n_val == 0:
        raise VocsegError(f"need n_train >= 0, n_val >= 0 and at least one image, got n_train={n_train}, n_val={n_val}")
    if max_side < 48:
        raise VocsegError(f"max_side must be at least 48 pixels, got {max_side}")
    if workers is not None and workers < 1:
        raise VocsegError(f"workers must be >= 1, got {workers}")

    root = empty_voc_tree(out)

    n = n_train + n_val
    run_in_chunks(_render_chunk, lambda idx: (str(root), seed, max_side, idx), n, workers, "synthetic VOC", progress)

    # Split files last: their presence marks a completed tree.
    ids = [_image_id(i) for i in range(n)]
    sets = root / "ImageSets" / "Segmentation"
    _write_lines(sets / "train.txt", ids[:n_train])
    _write_lines(sets / "val.txt", ids[n_train:])
    _write_lines(sets / "trainval.txt", ids)
    return root


def empty_voc_tree(out: str | Path) -> Path:
    """``out/VOCdevkit/VOC2012`` with its three folders, created; refused if it already holds anything."""
    root = Path(out).expanduser() / "VOCdevkit" / "VOC2012"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise VocsegError(f"{root} already exists and is not empty; refusing to overwrite it (choose another folder)")
    output_dir(Path(out).expanduser(), "dataset folder")
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        output_dir(root / sub, "dataset folder")
    return root


def default_dataset_root(cache_dir: str | Path | None = None) -> Path:
    """Return the folder holding VOCdevkit for the built-in default synthetic dataset, generating it once.

    Cache dir: ``cache_dir``, else ``$VOCSEG_CACHE``, else ``~/.cache/vocseg``. The dataset is built in a
    temporary sibling folder and renamed into place when complete, so a partial one is never used; if
    another process finished first, ours is discarded.
    """
    params = dict(DEFAULT_SYNTHETIC)  # read at call time so callers/tests can override it
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = (
        f"synthetic-v{GENERATOR_VERSION}-{params['n_train']}-{params['n_val']}-s{params['seed']}-{params['max_side']}"
    )
    final = base / name
    if _is_complete(final):
        return final
    if final.exists():
        raise VocsegError(f"{final} exists but is not a complete synthetic dataset; delete it and retry")
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=base))
    except OSError as e:
        raise VocsegError(f"cannot create the dataset cache folder {base}: {e}") from e
    try:
        generate_synthetic_voc(tmp, **params)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process won the race; use its copy
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _image_id(index: int) -> str:
    return f"{ID_PREFIX}{index:06d}"


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _is_complete(root: Path) -> bool:
    return (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "trainval.txt").is_file()


def _render_chunk(task: tuple[str, int, int, list[int]]) -> int:
    """Worker: render and write the images of one chunk of indices; return how many."""
    root, seed, max_side, indices = task
    palette = voc_palette()
    for index in indices:
        image, label = render_sample(seed, index, max_side)
        name = _image_id(index)
        Image.fromarray(image).save(os.path.join(root, "JPEGImages", f"{name}.jpg"), quality=JPEG_QUALITY)
        mask = Image.fromarray(label)  # mode "L"; putpalette turns it into "P"
        mask.putpalette(palette)
        mask.save(os.path.join(root, "SegmentationClass", f"{name}.png"))
    return len(indices)


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def render_sample(seed: int, index: int, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw image ``index`` of the dataset with ``seed``: ``(H, W, 3) uint8`` RGB and ``(H, W) uint8`` labels."""
    rng = np.random.default_rng([seed, index])
    h, w = _image_size(rng, max_side)
    img = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)

    n_distract = int(rng.integers(1, 6))
    late = int(rng.random() < 0.3)  # sometimes one distractor occludes objects, as clutter does in VOC
    for _ in range(n_distract - late):
        _draw_distractor(rng, img, label)
    n_obj = int(rng.choice(_N_OBJECTS, p=_N_OBJECTS_P))
    for _ in range(n_obj):
        cls = int(rng.integers(1, NUM_CLASSES))
        _draw_object(rng, img, label, cls, _CLASSES[cls - 1], _OBJ_AREA)
    for _ in range(late):
        _draw_distractor(rng, img, label)

    # Global illumination, sensor noise; then the void band (computed on the final, visible labels).
    img *= 0.85 + 0.3 * _smooth_noise(rng, h, w, max(h, w) // 3)[..., None]
    img += rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(rng.uniform(2.0, 7.0))
    label[_boundary(label)] = IGNORE_INDEX
    return np.clip(img, 0, 255).astype(np.uint8), label


def _image_size(rng: np.random.Generator, max_side: int) -> tuple[int, int]:
    """Long side in [0.75, 1] * max_side, aspect in [3:4, 4:3], neither side a multiple of 32."""
    long_side = int(rng.integers(round(0.75 * max_side), max_side + 1))
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    if aspect >= 1:
        w, h = long_side, round(long_side / aspect)
    else:
        w, h = round(long_side * aspect), long_side
    # Models often assume sizes divisible by 32; real VOC sizes rarely are, so never produce one.
    h, w = (s - 1 if s % 32 == 0 else s for s in (h, w))
    return h, w


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)), np.float32) * 255


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A background colour: any hue, but muted, as most of a VOC scene is (objects are mostly more saturated)."""
    return _hsv(rng.random(), rng.uniform(0.0, 0.4), rng.uniform(0.2, 0.9))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise in ~[0, 1]: a coarse random grid upsampled bicubically (fast, via PIL)."""
    cell = max(2, cell)
    grid = rng.random((h // cell + 2, w // cell + 2), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), dtype=np.float32)


def _texture_weight(
    rng: np.random.Generator, kind: str, pu: np.ndarray, pv: np.ndarray, size: float, shape: tuple[int, int]
) -> np.ndarray | None:
    """Per-pixel mix weight in [0, 1] between a texture's two colours (None = flat).

    ``pu, pv`` are pixel coordinates in the object's own (rotated) frame, so patterns turn with the
    object; periods scale with ``size`` so patterns scale with the object.
    """
    if kind == "flat":
        return None
    if kind in ("stripes", "gradient"):
        phi = rng.uniform(0, math.pi)
        proj = pu * np.float32(math.cos(phi)) + pv * np.float32(math.sin(phi))
        if kind == "gradient":
            return np.clip(proj / np.float32(2 * size) + 0.5, 0, 1)
        period = max(3.0, size * rng.uniform(0.15, 0.45))
        sharp = rng.uniform(0.6, 4.0)  # soft sine bands .. hard stripes
        return np.clip(0.5 + sharp * np.sin(proj * np.float32(2 * math.pi / period)), 0, 1)
    if kind == "checker":
        p = max(3.0, size * rng.uniform(0.15, 0.4))
        return ((np.floor(pu / p) + np.floor(pv / p)) % 2).astype(np.float32)
    if kind == "dots":
        p = max(4.0, size * rng.uniform(0.15, 0.35))
        du = pu % p - p / 2
        dv = pv % p - p / 2
        return (du * du + dv * dv < (p * rng.uniform(0.2, 0.4)) ** 2).astype(np.float32)
    if kind == "noise":
        return rng.random(shape, dtype=np.float32) ** np.float32(rng.uniform(0.5, 2.0))
    if kind == "mottled":
        return _smooth_noise(rng, shape[0], shape[1], max(2, int(size * rng.uniform(0.1, 0.3))))
    raise ValueError(f"unknown texture {kind!r}")


def _paint(
    rng: np.random.Generator,
    kind: str,
    pu: np.ndarray,
    pv: np.ndarray,
    size: float,
    shape: tuple[int, int],
    c1: np.ndarray,
    c2: np.ndarray,
) -> np.ndarray:
    """RGB float pixels of a texture with a random linear shading across the object."""
    t = _texture_weight(rng, kind, pu, pv, size, shape)
    rgb = np.broadcast_to(c1, (*shape, 3)) if t is None else c1 + t[..., None] * (c2 - c1)
    psi = rng.uniform(0, 2 * math.pi)
    shade = 1 + np.float32(rng.uniform(-0.25, 0.25) / size) * (
        pu * np.float32(math.cos(psi)) + pv * np.float32(math.sin(psi))
    )
    return rgb * np.broadcast_to(shade, shape)[..., None]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cluttered background: a colour gradient, one low-contrast pattern, and low-frequency mottling."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    size = max(h, w) / 2
    c1, c2 = _random_colour(rng), _random_colour(rng)
    img = _paint(rng, "gradient", xs, ys, size, (h, w), c1, c2)
    kind = str(rng.choice(("stripes", "checker", "noise", "dots", "mottled", "flat")))
    t = _texture_weight(rng, kind, xs, ys, size * rng.uniform(0.3, 1.0), (h, w))
    if t is not None:
        img = img + (t - 0.5)[..., None] * rng.normal(0, 25, 3).astype(np.float32)
    img = img + (_smooth_noise(rng, h, w, max(4, int(size * rng.uniform(0.1, 0.5)))) - 0.5)[..., None] * (
        rng.normal(0, 40, 3).astype(np.float32)
    )
    return np.ascontiguousarray(img, dtype=np.float32)


def _draw_distractor(rng: np.random.Generator, img: np.ndarray, label: np.ndarray) -> None:
    shape = str(rng.choice(_DISTRACTOR_SHAPES))
    aspect = (4.0, 12.0) if shape == "bar" else (0.6, 1.6)
    spec = _ClassSpec(shape, aspect, 180, (rng.random(), 0.5), (0.0, 0.6), (0.1, 0.95), dict.fromkeys(_TEXTURES, 1.0))
    _draw_object(rng, img, label, 0, spec, _DISTRACTOR_AREA)


def _draw_object(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    cls: int,
    spec: _ClassSpec,
    area_range: tuple[float, float],
) -> None:
    """Paint one shape over ``img`` and write ``cls`` into ``label`` where it is drawn (occluding what is below).

    All work happens inside the shape's bounding box, so cost scales with the object, not the image.
    """
    h, w = label.shape
    area = h * w * math.exp(rng.uniform(math.log(area_range[0]), math.log(area_range[1])))
    aspect = rng.uniform(*spec.aspect)
    a = math.sqrt(area * aspect) / 2  # half-width and half-height of the shape's own box
    b = math.sqrt(area / aspect) / 2
    theta = math.radians(rng.uniform(-spec.rotation, spec.rotation))
    flip = -1.0 if rng.random() < 0.5 else 1.0  # mirror asymmetric shapes (L, crescent, arrow)
    cx = rng.uniform(0.05, 0.95) * w
    cy = rng.uniform(0.05, 0.95) * h

    r = math.hypot(a, b)  # the rotated box always fits in this radius
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    cos, sin = np.float32(math.cos(theta)), np.float32(math.sin(theta))
    pu = (dx * cos + dy * sin) * np.float32(flip)  # pixel coordinates in the object's frame
    pv = dy * cos - dx * sin
    mask = _shape_mask(rng, spec.shape, pu / np.float32(a), pv / np.float32(b))

    hue = spec.hue[0] + rng.uniform(-spec.hue[1], spec.hue[1])
    sat, val = rng.uniform(*spec.sat), rng.uniform(*spec.val)
    c1 = _hsv(hue, sat, val)
    if rng.random() < 0.5:  # second texture colour: same hue, darker/lighter ...
        c2 = _hsv(hue, sat * rng.uniform(0.6, 1.2), val * rng.choice((rng.uniform(0.3, 0.7), rng.uniform(1.3, 1.8))))
    else:  # ... or a neighbouring hue
        c2 = _hsv(hue + rng.choice((-1, 1)) * rng.uniform(0.05, 0.2), rng.uniform(*spec.sat), rng.uniform(*spec.val))
    kinds = list(spec.textures)
    weights = np.array([spec.textures[k] for k in kinds], dtype=np.float64)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    rgb = _paint(rng, kind, pu, pv, max(a, b), mask.shape, c1, c2)

    img[y0:y1, x0:x1][mask] = rgb[mask]
    label[y0:y1, x0:x1][mask] = cls


def _shape_mask(rng: np.random.Generator, shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in normalised coordinates: the shape's box is ``[-1, 1]^2``.

    Shape parameters (arm widths, number of points, ...) are drawn from ``rng`` so every instance differs.
    """
    if shape in _RADIAL_SHAPES:
        return _radial_mask(rng, shape, u, v)
    if shape in _FIGURE_SHAPES:
        return _figure_mask(rng, shape, u, v)
    au, av = np.abs(u), np.abs(v)
    inside_box = (au <= 1) & (av <= 1)
    if shape in ("rect", "bar"):
        return inside_box
    if shape == "roundrect":
        e = rng.uniform(3.0, 6.0)
        return au**e + av**e <= 1
    if shape == "frame":
        t = rng.uniform(0.2, 0.35)
        return inside_box & ~((au < 1 - t) & (av < 1 - t))
    if shape == "triangle":  # apex at v = -1, base at v = 1
        return (av <= 1) & (au <= (v + 1) / 2)
    if shape == "trapezoid":  # wide top, narrow bottom (a hull)
        top = rng.uniform(0.4, 0.7)
        return (av <= 1) & (au <= top + (1 - top) * (1 - v) / 2)
    if shape == "diamond":
        return au + av <= 1
    if shape == "hourglass":
        return inside_box & (au <= 0.15 + 0.85 * av)
    if shape == "bottle":  # body plus a narrow neck on top
        neck = rng.uniform(-0.55, -0.3)
        return ((au <= 1) & (v >= neck) & (v <= 1)) | ((au <= rng.uniform(0.3, 0.5)) & (v >= -1) & (v < neck))
    if shape == "lshape":  # vertical bar on the left, foot along the bottom
        t = rng.uniform(0.3, 0.45) * 2
        return inside_box & ~((u > -1 + t) & (v < 1 - t))
    if shape == "ushape":  # sofa-like: seat plus two arms
        t = rng.uniform(0.25, 0.4) * 2
        return inside_box & ~((au < 1 - t) & (v < rng.uniform(-0.1, 0.3)))
    if shape == "table":  # top slab plus two legs
        t = rng.uniform(0.2, 0.35)
        leg = rng.uniform(0.12, 0.2)
        return inside_box & ((v <= -1 + t) | ((au >= 0.95 - leg) & (au <= 0.95)))
    raise ValueError(f"unknown shape {shape!r}")


_RADIAL_SHAPES = ("ellipse", "ring", "star5", "spiky", "gear", "hexagon")
_FIGURE_SHAPES = ("plane", "crescent", "arrow", "heart", "blob")


def _radial_mask(rng: np.random.Generator, shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shapes defined by the radius and angle around the box centre."""
    rr = u * u + v * v
    if shape == "ellipse":
        return rr <= 1
    if shape == "ring":
        return (rr <= 1) & (rr >= rng.uniform(0.4, 0.65) ** 2)
    theta = np.arctan2(v, u)
    rad = np.sqrt(rr)
    if shape in ("star5", "spiky"):
        k = 5 if shape == "star5" else int(rng.integers(9, 14))
        inner = rng.uniform(0.35, 0.55) if shape == "star5" else rng.uniform(0.25, 0.45)
        t = (theta * np.float32(k / (2 * math.pi)) + np.float32(rng.random())) % 1
        return rad <= inner + (1 - inner) * np.abs(2 * t - 1)
    if shape == "gear":
        k = int(rng.integers(6, 11))
        teeth = np.cos(theta * k + np.float32(rng.uniform(0, 2 * math.pi))) > 0
        return (rad >= rng.uniform(0.2, 0.35)) & ((rad <= 0.75) | (teeth & (rad <= 1)))
    # Regular hexagon: distance to the nearest edge normal.
    sector = (theta + np.float32(rng.uniform(0, math.pi))) % np.float32(math.pi / 3) - np.float32(math.pi / 6)
    return rad * np.cos(sector) <= math.cos(math.pi / 6)


def _figure_mask(rng: np.random.Generator, shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Composite or curved figures: plane, crescent, arrow, heart, and the distractors' noisy blob."""
    au, av = np.abs(u), np.abs(v)
    if shape == "plane":  # fuselage along u, swept wings, small tail plane
        body = (av <= rng.uniform(0.12, 0.2)) & (au <= 1)
        wc = rng.uniform(-0.1, 0.15)
        wing = (np.abs(u - wc + 0.3 * av) <= rng.uniform(0.1, 0.18)) & (av <= 1)
        tail = (np.abs(u + 0.85) <= 0.08) & (av <= rng.uniform(0.3, 0.45))
        return body | wing | tail
    if shape == "crescent":
        d = rng.uniform(0.35, 0.6)
        return (u * u + v * v <= 1) & ((u - d) ** 2 + v * v > rng.uniform(0.75, 0.95) ** 2)
    if shape == "arrow":  # shaft towards -u, head at +u
        split = rng.uniform(0.0, 0.35)
        shaft = (u >= -1) & (u < split) & (av <= rng.uniform(0.2, 0.35))
        head = (u >= split) & (u <= 1) & (av <= (1 - u) / (1 - split))
        return shaft | head
    if shape == "heart":  # the implicit heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3
        x, y = u * 1.15, -v * 1.15 + 0.1
        q = x * x + y * y - 1
        return q * q * q - x * x * y * y * y <= 0
    # blob: irregular, an ellipse carved by thresholded low-frequency noise
    n = _smooth_noise(rng, u.shape[0], u.shape[1], max(2, min(u.shape) // 4))
    return (u * u + v * v <= 1) & (n > rng.uniform(0.3, 0.5))


def _boundary(label: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds more than one label: a 2 px band (~3 px on diagonals).

    Separable 3x3 max/min filters with numpy shifts; edge padding keeps the image border out of the band.
    """
    p = np.pad(label, 1, mode="edge")
    rmax = np.maximum(np.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    rmin = np.minimum(np.minimum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    cmax = np.maximum(np.maximum(rmax[:-2], rmax[1:-1]), rmax[2:])
    cmin = np.minimum(np.minimum(rmin[:-2], rmin[1:-1]), rmin[2:])
    return cmax != cmin
