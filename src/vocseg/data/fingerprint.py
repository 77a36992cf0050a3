"""A dataset fingerprint (nnU-Net's idea, for VOC-format data): what a planner needs to know about a
training split to pick a recipe, computed once and cached like :mod:`vocseg.data.stats`.

Two passes, both in a fixed order so the result never depends on the machine:

- the **mask pass** reads the masks of every image (or of the first ``max_masks`` in the sample order):
  image sizes (a mask is as large as its image; ``VOCSegmentation.decode`` checks that for the sampled
  images), class pixel and image shares, the void share and the classes with no labelled pixel. Masks are
  cheap to decode and a rare class must not be reported missing because a sample skipped it.
- the **sample pass** decodes image and mask of at most ``max_images`` images (``Fingerprint.sampled_figures``
  names the figures it gives): object sizes, colour and scale separability, intensity statistics.

The sample is the ids sorted by a hash of ``SAMPLE_SEED`` and the id, cut to its first images: it depends on
the ids only (not on their order, the machine or the number of images asked for beyond the cut), and
growing ``max_images`` only adds images. Pixel positions inside an image come from the same hash.

Separability (used twice) is that of a nearest-class-mean classifier on features of sampled labelled pixels
(up to PIXELS_PER_IMAGE per image, MAX_PIXELS in all), fitted on the sample itself (its few parameters,
classes x features, barely overfit). It is scored by balanced accuracy (mean recall over the K classes among
those pixels), rescaled so that 0 is what predicting one class for every pixel gets (1/K) and 1 is perfect:
``max(0, (recall - 1/K) / (1 - 1/K))``; None when fewer than two classes have sampled pixels. Balanced, not
pixel, accuracy: the background's ~70% of VOC's pixels would otherwise swamp the figure.

- ``colour_separability``: features are a pixel's RGB in [0, 1]. Does colour alone tell classes apart?
- ``scale_separability[j]``: features are the RGB of the image blurred to ``f = SCALE_FACTORS[j]`` (area-
  averaged down by f, bilinearly back up) plus a texture figure, the mean absolute luminance gradient of the
  blurred image over a ``TEXTURE_WINDOW`` square, each divided by its standard deviation at full resolution.
  The class means are fitted at full resolution and score the blurred pixels: how much of the full-resolution
  separability survives the blur. Large flat objects survive it; texture with a period under about 2/f pixels,
  and objects thinner than about 1/f pixels, do not.
- ``finest_scale``: the smallest factor f in SCALE_FACTORS such that every factor from 1 down to f keeps at
  least ``KEEP`` (90%) of the full-resolution separability; None when that is under ``MIN_SEPARABILITY``
  (local colour and texture do not separate the classes at all, so resolution cannot be judged by them).
  1.0 means classes differ by detail that half resolution loses; 0.125 means 1/8 resolution keeps it all.
  It judges local cues only, never shape or context, which a network also uses.

Objects are the 8-connected components of each foreground class (1..num_classes-1) in a mask, found by
``scipy.ndimage.label``; 8-connected so that thin diagonal parts stay one object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import VocsegError
from ..runtime.files import atomic_write_bytes
from ..runtime.workers import one_torch_thread
from .classes import IGNORE_INDEX
from .stats import cache_dir, moments
from .voc import VOCSegmentation

# Bump whenever a figure's definition or the sampling changes, so cached fingerprints are recomputed.
FINGERPRINT_VERSION = 1

DEFAULT_MAX_IMAGES = 300  # the sample pass decodes this many images at most (benchmarks/bench_fingerprint.py times it)
SAMPLE_SEED = 0
PIXELS_PER_IMAGE = 2048  # pixels per sampled image drawn for the separability figures (void ones then dropped)
MAX_PIXELS = 1_000_000  # ... and at most this many in all: 64 MB of features, whatever max_images is
SCALE_FACTORS = (1.0, 0.5, 0.25, 0.125)
KEEP = 0.9  # finest_scale: the share of full-resolution separability a scale must keep
MIN_SEPARABILITY = 0.05  # below it at full resolution, finest_scale is None
TEXTURE_WINDOW = 7  # pixels (full resolution): the square the texture figure averages over
SAMPLED_FIGURES = (
    "objects_per_image",
    "object_count",
    "object_pixels_median",
    "object_pixels_p10",
    "object_share_median",
    "object_share_p10",
    "all_objects",
    "colour_separability",
    "scale_separability",
    "finest_scale",
    "mean",
    "std",
)


@dataclass
class Fingerprint:
    """A split's fingerprint. Every field is JSON-able (lists, dicts, numbers, None); per-class lists are
    indexed by class. Distributions are dicts with keys min, p10, median, p90, max (numpy's linear
    percentiles)."""

    version: int  # FINGERPRINT_VERSION
    num_images: int  # images in the split
    num_classes: int
    # -- mask pass: over ``mask_images`` images (every image unless max_masks cut it)
    mask_images: int
    height: dict[str, float]  # image height distribution, pixels
    width: dict[str, float]
    long_side: dict[str, float]  # max(height, width)
    most_common_size: list[int]  # [height, width] shared by the most images (ties: the smallest)
    share_other_size: float  # share of images whose size is not most_common_size (0: all alike)
    void_share: float  # share of all pixels that are void (255)
    class_pixel_share: list[float]  # share of the labelled (non-void) pixels in each class
    class_image_share: list[float]  # share of images with at least one pixel of each class
    missing_classes: list[int]  # classes 0..num_classes-1 without a labelled pixel
    imbalance: float | None  # largest / smallest pixel share among foreground classes present; None if none
    # -- sample pass: over ``sampled_images`` images (the figures named in ``sampled_figures``)
    sampled_images: int
    sampled_figures: list[str]
    sample_seed: int
    pixels_per_image: int  # pixels per image drawn for the separability figures (void ones then dropped)
    objects_per_image: dict[str, float]  # foreground objects per image: mean, median, max
    object_count: list[int]  # objects of each class in the sample (0 for background: not counted)
    object_pixels_median: list[float | None]  # per class, object size in pixels; None without objects
    object_pixels_p10: list[float | None]
    object_share_median: list[float | None]  # per class, object size as a share of its image's pixels
    object_share_p10: list[float | None]
    all_objects: dict[str, float | None]  # pixels_median, pixels_p10, share_median, share_p10 over every class
    colour_separability: float | None  # RGB nearest-class-mean separability in [0, 1]; see the module
    scale_factors: list[float]  # SCALE_FACTORS
    scale_separability: list[float | None]  # separability of blurred colour + texture at each factor
    finest_scale: float | None  # see the module docstring
    mean: list[float]  # per RGB channel, in [0, 1]
    std: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        """The fingerprint written by :meth:`to_dict`; a VocsegError names missing or unknown keys."""
        if not isinstance(data, dict):
            raise VocsegError(f"a fingerprint must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - data.keys()), sorted(data.keys() - names)
        if missing or unknown or data.get("version") != FINGERPRINT_VERSION:
            raise VocsegError(
                f"not a version {FINGERPRINT_VERSION} fingerprint (version {data.get('version')!r}; "
                f"missing keys: {', '.join(missing) or 'none'}; unknown keys: {', '.join(unknown) or 'none'})"
            )
        return cls(**data)


# ----------------------------------------------------------------------------- sampling and small helpers


def _id_hash(image_id: str) -> bytes:
    return hashlib.blake2b(f"{SAMPLE_SEED}:{image_id}".encode(), digest_size=8).digest()


def sample_order(ds: VOCSegmentation) -> list[int]:
    """Indices of ``ds`` sorted by a seeded hash of their ids: a sample is a prefix of this list."""
    return sorted(range(len(ds)), key=lambda i: (_id_hash(ds.ids[i]), i))


def _prefix(order: list[int], limit: int | None, what: str) -> list[int]:
    if limit is not None and limit < 1:
        raise VocsegError(f"{what} must be at least 1 (or None for every image), got {limit}")
    return sorted(order if limit is None else order[:limit])  # in index order: files read in the split's order


def distribution(values) -> dict[str, float]:
    """min, p10, median, p90, max of ``values`` (numpy's linear percentiles)."""
    p = np.percentile(np.asarray(values, dtype=np.float64), [0, 10, 50, 90, 100])
    return dict(zip(("min", "p10", "median", "p90", "max"), (float(v) for v in p)))


def _median_p10(values: np.ndarray) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    p10, median = np.percentile(np.asarray(values, dtype=np.float64), [10, 50])
    return float(median), float(p10)


# ----------------------------------------------------------------------------- mask pass


def _mask(ds: VOCSegmentation, i: int) -> torch.Tensor:
    return ds.cache[i][1] if ds.cache is not None else ds._decode_mask(i)  # the dataset's own decoding


def mask_figures(ds: VOCSegmentation, indices: list[int]) -> dict:
    """The mask-pass fields of :class:`Fingerprint` over the masks of ``indices``."""
    c = ds.num_classes
    counts = np.zeros(256, dtype=np.int64)
    present = np.zeros(c, dtype=np.int64)
    sizes = np.zeros((len(indices), 2), dtype=np.int64)
    for row, i in enumerate(indices):
        mask = _mask(ds, i)
        image_counts = torch.bincount(mask.reshape(-1), minlength=256).numpy()
        counts += image_counts
        present += image_counts[:c] > 0
        sizes[row] = mask.shape
    labelled = counts[:c]
    total_labelled = int(labelled.sum())
    pixel_share = labelled / total_labelled if total_labelled else np.zeros(c)
    fg = pixel_share[1:][labelled[1:] > 0]
    uniq, n_of = np.unique(sizes, axis=0, return_counts=True)
    common = uniq[int(np.argmax(n_of))]  # np.unique sorts, and argmax takes the first: ties go to the smallest
    return dict(
        mask_images=len(indices),
        height=distribution(sizes[:, 0]),
        width=distribution(sizes[:, 1]),
        long_side=distribution(sizes.max(1)),
        most_common_size=[int(v) for v in common],
        share_other_size=float(1 - n_of.max() / len(indices)),
        void_share=float(counts[IGNORE_INDEX] / counts.sum()),
        class_pixel_share=[float(v) for v in pixel_share],
        class_image_share=[float(v) for v in present / len(indices)],
        missing_classes=[k for k in range(c) if labelled[k] == 0],
        imbalance=float(fg.max() / fg.min()) if fg.size else None,
    )


# ----------------------------------------------------------------------------- sample pass: per image


def object_sizes(mask: np.ndarray, num_classes: int) -> dict[int, np.ndarray]:
    """Pixels of each 8-connected component of each foreground class present in ``mask`` (H, W)."""
    from scipy import ndimage

    out = {}
    counts = torch.bincount(torch.from_numpy(mask).reshape(-1), minlength=256).numpy()
    for k in np.flatnonzero(counts[1:num_classes]) + 1:
        hit = mask == k
        rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
        hit = hit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # labelling the class's bounding box is enough
        labels, n = ndimage.label(hit, structure=np.ones((3, 3), dtype=bool))
        out[int(k)] = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return out


def _pyramid(x: torch.Tensor) -> dict[int, torch.Tensor]:
    """``x`` (C, H, W), H and W multiples of every block, area-averaged by each block of SCALE_FACTORS
    (each level from the one before: 2x2 means of 2x2 means are 4x4 means)."""
    levels, k, level = {1: x}, 1, x
    for factor in SCALE_FACTORS[1:]:
        step = round(1 / factor) // k
        level, k = F.avg_pool2d(level[None], step)[0], round(1 / factor)
        levels[k] = level
    return levels


def _upsampled(small: torch.Tensor, k: int) -> torch.Tensor:
    """``small`` (C, h, w) bilinearly upsampled by ``k`` (``F.interpolate``, align_corners=False)."""
    return small if k == 1 else F.interpolate(small[None], scale_factor=k, mode="bilinear", align_corners=False)[0]


def _upsampled_at(small: torch.Tensor, k: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``_upsampled(small, k)`` at the pixels (ys, xs) only, as (N, C): bilinear samples at the positions
    ``F.interpolate`` reads (its clamping at the borders is grid_sample's "border")."""
    if k == 1:
        return small[:, ys, xs].T.numpy()
    _, h, w = small.shape
    gx = (torch.from_numpy(xs).double() + 0.5) / (k * w) * 2 - 1
    gy = (torch.from_numpy(ys).double() + 0.5) / (k * h) * 2 - 1
    grid = torch.stack([gx, gy], -1).float().view(1, 1, -1, 2)
    return F.grid_sample(small[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[
        0, :, 0
    ].T.numpy()


def _box_means(values: torch.Tensor, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (H, W) over the TEXTURE_WINDOW square around each (ys, xs), cut at the borders,
    from an integral image (cheaper than filtering the whole image for a few thousand pixels)."""
    h, w = values.shape
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = values.double().cumsum(0).cumsum(1).numpy()
    r = TEXTURE_WINDOW // 2
    y0, y1 = np.maximum(ys - r, 0), np.minimum(ys + r + 1, h)
    x0, x1 = np.maximum(xs - r, 0), np.minimum(xs + r + 1, w)
    sums = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return sums / ((y1 - y0) * (x1 - x0))


def pixel_features(
    image: torch.Tensor, mask: np.ndarray, seed: bytes, draws: int = PIXELS_PER_IMAGE
) -> tuple[np.ndarray, np.ndarray]:
    """Features of the labelled ones of ``draws`` pixels of one image, drawn with ``seed``: an array
    (len(SCALE_FACTORS), N, 4) of blurred RGB and texture per scale (see the module docstring), and the
    pixels' classes (N,). The image is cut to multiples of the coarsest block first."""
    block = round(1 / min(SCALE_FACTORS))
    h, w = (s // block * block for s in mask.shape)
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    flat = rng.integers(0, h * w, draws) if h and w else np.zeros(0, dtype=np.int64)
    ys, xs = flat // max(w, 1), flat % max(w, 1)
    keep = mask[ys, xs] != IGNORE_INDEX
    ys, xs = ys[keep], xs[keep]
    out = np.zeros((len(SCALE_FACTORS), len(ys), 4), dtype=np.float32)
    if not len(ys):
        return out, np.zeros(0, dtype=np.int64)
    pyramid = _pyramid(image[:, :h, :w].float() / 255)
    for j, factor in enumerate(SCALE_FACTORS):
        k = round(1 / factor)
        lum = _upsampled(pyramid[k].mean(0, keepdim=True), k)[0]  # luminance commutes with blurring: all linear
        grad = torch.zeros_like(lum)
        grad[:, :-1] += (lum[:, 1:] - lum[:, :-1]).abs()
        grad[:-1, :] += (lum[1:, :] - lum[:-1, :]).abs()
        out[j, :, :3] = _upsampled_at(pyramid[k], k, ys, xs)
        out[j, :, 3] = _box_means(grad, ys, xs)
    return out, mask[ys, xs].astype(np.int64)


# ----------------------------------------------------------------------------- sample pass: figures


def separability(features: np.ndarray, labels: np.ndarray, scored: np.ndarray | None = None) -> float | None:
    """Nearest-class-mean separability in [0, 1]: class means fitted on ``features`` (N, D) with classes
    ``labels`` (N,), then the same pixels' ``scored`` features (default: ``features``) classified; its
    balanced accuracy rescaled so that one class for every pixel is 0 (see the module docstring)."""
    counts = np.bincount(labels)
    classes = np.flatnonzero(counts)
    if len(classes) < 2:
        return None
    index = np.zeros(len(counts), dtype=np.int64)
    index[classes] = np.arange(len(classes))
    y, counts = index[labels], counts[classes]
    means = np.stack([np.bincount(y, weights=f, minlength=len(classes)) for f in features.T], 1) / counts[:, None]
    x = torch.from_numpy(np.asarray(features if scored is None else scored, dtype=np.float64))
    means_t = torch.from_numpy(means)
    # |x|^2 is the same for every class. In torch, not numpy: numpy's BLAS threads ran this 6x slower on a
    # busy 2-core machine than one torch thread did.
    predicted = ((means_t**2).sum(1)[None, :] - 2 * x @ means_t.T).argmin(1).numpy()
    hits = np.bincount(y, weights=predicted == y, minlength=len(classes))
    recall, chance = float((hits / counts).mean()), 1 / len(classes)
    return max(0.0, (recall - chance) / (1 - chance))


def finest_scale(values: list[float | None]) -> float | None:
    """The smallest of SCALE_FACTORS down to which every scale keeps KEEP of ``values[0]`` (full resolution)."""
    if values[0] is None or values[0] < MIN_SEPARABILITY:
        return None
    finest = SCALE_FACTORS[0]
    for factor, value in zip(SCALE_FACTORS[1:], values[1:]):
        if value is None or value < KEEP * values[0]:
            break
        finest = factor
    return finest


def _scale_figures(features: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    feats, y = np.concatenate(features, axis=1), np.concatenate(labels)
    colour = separability(feats[0, :, :3], y)
    unit = feats[0].std(0) if len(y) else np.ones(4)
    unit[unit < 1e-6] = 1.0  # a constant feature stays as it is
    # Fitted at full resolution, scored on each blurred copy: a classifier fitted on the blurred copy itself
    # would separate classes by residues no real image keeps, e.g. 2 px stripes averaged to 127.6 against a
    # flat 128 (noise-free pictures, JPEG's rounding).
    values = [separability(feats[0] / unit, y, feats[j] / unit) for j in range(len(SCALE_FACTORS))]
    return dict(
        colour_separability=colour,
        scale_factors=list(SCALE_FACTORS),
        scale_separability=values,
        finest_scale=finest_scale(values),
    )


def _object_figures(per_class: list[list[np.ndarray]], shares: list[list[np.ndarray]], counts: list[int]) -> dict:
    pix = [np.concatenate(v) if v else np.zeros(0) for v in per_class]
    rel = [np.concatenate(v) if v else np.zeros(0) for v in shares]
    pix_stats, rel_stats = [_median_p10(v) for v in pix], [_median_p10(v) for v in rel]
    all_pix, all_rel = _median_p10(np.concatenate(pix)), _median_p10(np.concatenate(rel))
    n = np.asarray(counts, dtype=np.float64)
    return dict(
        objects_per_image=dict(mean=float(n.mean()), median=float(np.median(n)), max=float(n.max())),
        object_count=[len(v) for v in pix],
        object_pixels_median=[s[0] for s in pix_stats],
        object_pixels_p10=[s[1] for s in pix_stats],
        object_share_median=[s[0] for s in rel_stats],
        object_share_p10=[s[1] for s in rel_stats],
        all_objects=dict(
            pixels_median=all_pix[0], pixels_p10=all_pix[1], share_median=all_rel[0], share_p10=all_rel[1]
        ),
    )


def _channel_codes(image: torch.Tensor) -> torch.Tensor:
    """``channel * 256 + value`` of every pixel of ``image`` (3, H, W) uint8: one bincount gives all three histograms."""
    return (image.to(torch.int32) + torch.tensor([0, 256, 512], dtype=torch.int32).view(3, 1, 1)).reshape(-1)


def sample_figures(ds: VOCSegmentation, indices: list[int]) -> dict:
    """The sample-pass fields of :class:`Fingerprint` from the images and masks of ``indices``."""
    histogram = np.zeros((3, 256), dtype=np.int64)
    per_class: list[list[np.ndarray]] = [[] for _ in range(ds.num_classes)]
    shares: list[list[np.ndarray]] = [[] for _ in range(ds.num_classes)]
    counts, features, labels = [], [], []
    draws = min(PIXELS_PER_IMAGE, max(1, MAX_PIXELS // len(indices)))
    for i in indices:
        image, mask_t = ds.load_tensors(i)
        mask = mask_t.numpy()
        histogram += torch.bincount(_channel_codes(image), minlength=3 * 256).view(3, 256).numpy()
        objects = object_sizes(mask, ds.num_classes)
        for k, sizes in objects.items():
            per_class[k].append(sizes)
            shares[k].append(sizes / mask.size)
        counts.append(sum(len(s) for s in objects.values()))
        f, y = pixel_features(image, mask, _id_hash(ds.ids[i]), draws)
        features.append(f)
        labels.append(y)
    mean, std = moments(histogram)
    return dict(
        sampled_images=len(indices),
        sampled_figures=list(SAMPLED_FIGURES),
        sample_seed=SAMPLE_SEED,
        pixels_per_image=draws,
        **_object_figures(per_class, shares, counts),
        **_scale_figures(features, labels),
        mean=mean,
        std=std,
    )


# ----------------------------------------------------------------------------- entry points


def compute_fingerprint(
    ds: VOCSegmentation, max_images: int | None = DEFAULT_MAX_IMAGES, max_masks: int | None = None
) -> Fingerprint:
    """The fingerprint of ``ds``: the mask pass over ``max_masks`` images (None: every image), the sample
    pass over ``max_images`` (None: every image), both prefixes of :func:`sample_order`. Uses the dataset's
    RAM cache when it has one. Classes without a labelled pixel are listed in ``missing_classes``, not raised."""
    if len(ds) == 0:
        raise VocsegError(f"split {ds.split!r} of {ds.voc_root} has no images to fingerprint")
    order = sample_order(ds)
    masks = _prefix(order, max_masks, "max_masks")
    sample = _prefix(order, max_images, "max_images")
    with one_torch_thread():
        figures = {**mask_figures(ds, masks), **sample_figures(ds, sample)}
    return Fingerprint(version=FINGERPRINT_VERSION, num_images=len(ds), num_classes=ds.num_classes, **figures)


def _cache_key(ds: VOCSegmentation, max_images: int | None, max_masks: int | None) -> str:
    """Keyed by everything the fingerprint reads: the root, ids, settings, and the size and time of every mask
    and of every sampled image (a stat per file, ~1/100 of a decode)."""
    h = hashlib.sha256()
    h.update(f"{FINGERPRINT_VERSION}:{SAMPLE_SEED}:{ds.num_classes}:{max_images}:{max_masks}".encode())
    h.update(str(ds.voc_root.resolve()).encode())
    h.update("\n".join(ds.ids).encode())
    order = sample_order(ds)
    paths = [ds.mask_path(i) for i in _prefix(order, max_masks, "max_masks")]
    paths += [ds.image_path(i) for i in _prefix(order, max_images, "max_images")]
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            raise VocsegError(f"cannot read {path} to fingerprint split {ds.split!r}") from None
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:24]


def cache_path(ds: VOCSegmentation, max_images: int | None = DEFAULT_MAX_IMAGES, max_masks: int | None = None) -> Path:
    """Where :func:`dataset_fingerprint` keeps the fingerprint of ``ds``."""
    return cache_dir() / "fingerprint" / f"{_cache_key(ds, max_images, max_masks)}.json"


def dataset_fingerprint(
    ds: VOCSegmentation,
    use_cache: bool = True,
    max_images: int | None = DEFAULT_MAX_IMAGES,
    max_masks: int | None = None,
) -> Fingerprint:
    """:func:`compute_fingerprint` of ``ds`` from the cache, computing and caching it on first use."""
    if not use_cache:
        return compute_fingerprint(ds, max_images, max_masks)
    path = cache_path(ds, max_images, max_masks)
    if path.is_file():
        try:
            return Fingerprint.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, VocsegError):
            pass  # a corrupt or outdated entry is recomputed and rewritten
    fingerprint = compute_fingerprint(ds, max_images, max_masks)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(json.dumps(fingerprint.to_dict()).encode(), path)
    return fingerprint
