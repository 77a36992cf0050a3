"""Statistics people can trust: mean ± standard deviation over seeds, and a paired bootstrap over test
images for the difference in mIoU between two models.

The bootstrap works on each run's ``per_image.npz``: per test image and class, the pixels of the
intersection and of the union of prediction and truth. Summing them over any set of images gives that
set's per-class IoU, so the mIoU of every resample is exact (the dataset-level mIoU, not an average of
per-image IoUs), and the full sample gives the run's own mIoU.

One replicate draws the test images with replacement, the same draw for both sides (paired: the image
difficulty cancels), and, within each side, its seeds with replacement; a side's score is the mean mIoU
of its drawn seeds on the drawn images. The interval therefore covers test-set noise and, for sides with
two or more seeds, seed-to-seed noise. Seeds are not paired across sides: seed k of A and seed k of B
share nothing but the number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import VocsegError

__all__ = ["BootstrapResult", "MeanStd", "PerImage", "align", "mean_std", "miou", "paired_bootstrap", "verdict"]

N_BOOT = 2000
CHUNK = 250  # replicates per matrix product: bounds memory at CHUNK x images weights


@dataclass(frozen=True)
class PerImage:
    """One run's per-image, per-class intersections and unions on its test split (``N x C`` each)."""

    ids: list[str]
    intersection: np.ndarray
    union: np.ndarray
    digests: list[str] | None = None  # a hash of each test mask; None in runs made before it was recorded

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], source: str = "per_image.npz") -> PerImage:
        """From :meth:`vocseg.training.rundir.RunDir.read_per_image`'s dict; shapes are checked."""
        inter, union = np.asarray(data["intersection"]), np.asarray(data["union"])
        ids = [str(i) for i in data["ids"]]
        if inter.ndim != 2 or inter.shape != union.shape or inter.shape[0] != len(ids):
            raise VocsegError(
                f"{source}: intersection {inter.shape} and union {union.shape} must both be "
                f"(images, classes) with one row per id ({len(ids)} ids)"
            )
        digests = [str(d) for d in data["mask_digest"]] if "mask_digest" in data else None
        if digests is not None and len(digests) != len(ids):
            raise VocsegError(f"{source}: {len(digests)} mask digests for {len(ids)} ids")
        return cls(ids, inter, union, digests)


@dataclass(frozen=True)
class MeanStd:
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None below two values
    n: int

    def format(self, digits: int = 4) -> str:
        if self.mean is None:
            return "–"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass(frozen=True)
class BootstrapResult:
    diff: float  # mIoU(A) - mIoU(B) on the full test sample (means over seeds)
    low: float
    high: float
    level: float
    n_images: int
    n_boot: int
    seeds_a: int
    seeds_b: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def mean_std(values: Sequence[float | None]) -> MeanStd:
    """Mean and sample standard deviation of the values that are not None."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return MeanStd(None, None, 0)
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return MeanStd(float(np.mean(present)), std, len(present))


def miou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU over the classes with a non-empty union, along the last axis (``(..., C)`` -> ``(...)``);
    NaN where no class has one."""
    intersection = np.asarray(intersection, dtype=np.float64)
    union = np.asarray(union, dtype=np.float64)
    present = union > 0
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=present)
    count = present.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, iou.sum(-1) / np.maximum(count, 1), np.nan)


def align(runs: Sequence[PerImage]) -> tuple[list[str], list[PerImage]]:
    """The test images every run scored (in the first run's order), and each run restricted to them."""
    if not runs:
        raise VocsegError("no runs to align")
    classes = {r.intersection.shape[1] for r in runs}
    if len(classes) > 1:
        raise VocsegError(f"the runs score different numbers of classes ({sorted(classes)}); they cannot be compared")
    common = set(runs[0].ids).intersection(*(r.ids for r in runs[1:]))
    ids = [i for i in runs[0].ids if i in common]
    if not ids:
        raise VocsegError("the runs share no test image; they were evaluated on different data")
    out = []
    for r in runs:
        pos = {image_id: k for k, image_id in enumerate(r.ids)}
        idx = np.array([pos[i] for i in ids])
        digests = [r.digests[k] for k in idx] if r.digests is not None else None
        out.append(PerImage(ids, r.intersection[idx], r.union[idx], digests))
    _check_same_pictures(out)
    return ids, out


def _check_same_pictures(runs: Sequence[PerImage]) -> None:
    """Refuse to pair runs whose test images under one id differ (their masks' digests disagree): the same
    ids over other pictures, such as two synthetic sets of different seeds, are not paired data."""
    recorded = [r for r in runs if r.digests is not None]
    for r in recorded[1:]:
        differ = [i for i, a, b in zip(r.ids, recorded[0].digests, r.digests) if a != b]
        if differ:
            raise VocsegError(
                f"the runs were scored on different test pictures under the same ids ({len(differ)} of "
                f"{len(r.ids)} masks differ, e.g. {differ[0]!r}); a paired test needs the same images"
            )


def _replicate_mious(side: Sequence[PerImage], weights: np.ndarray) -> np.ndarray:
    """``(replicates, seeds)``: each seed's mIoU on each replicate's image draw (``weights``: counts)."""
    cols = [miou(weights @ r.intersection.astype(np.float64), weights @ r.union.astype(np.float64)) for r in side]
    return np.stack(cols, axis=1)


def _side_scores(mious: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_rep, n_seeds = mious.shape
    if n_seeds == 1:
        return mious[:, 0]
    pick = rng.integers(0, n_seeds, size=(n_rep, n_seeds))
    return np.take_along_axis(mious, pick, axis=1).mean(1)


def paired_bootstrap(
    a: Sequence[PerImage],
    b: Sequence[PerImage],
    *,
    n_boot: int = N_BOOT,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile confidence interval of ``mIoU(A) - mIoU(B)``; ``a`` and ``b`` hold one entry per seed.

    Images are resampled jointly for both sides (see the module docstring); only images every run
    scored are used. Deterministic for a given ``seed``."""
    if not a or not b:
        raise VocsegError("paired_bootstrap needs at least one run on each side")
    ids, aligned = align([*a, *b])
    side_a, side_b = aligned[: len(a)], aligned[len(a) :]
    n = len(ids)
    full = np.ones((1, n))
    diff = float(_replicate_mious(side_a, full).mean() - _replicate_mious(side_b, full).mean())
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, CHUNK):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, n_boot - start)).astype(np.float64)
        score_a = _side_scores(_replicate_mious(side_a, weights), rng)
        score_b = _side_scores(_replicate_mious(side_b, weights), rng)
        diffs.append(score_a - score_b)
    d = np.concatenate(diffs)
    d = d[~np.isnan(d)]
    tail = (1 - level) / 2 * 100
    low, high = (float(x) for x in np.percentile(d, [tail, 100 - tail])) if d.size else (math.nan, math.nan)
    return BootstrapResult(diff, low, high, level, n, n_boot, len(a), len(b))


def verdict(label_a: str, label_b: str, result: BootstrapResult) -> str:
    """One plain sentence: who scores higher, by how much, the interval, and whether that is noise."""
    if result.diff < 0:
        label_a, label_b = label_b, label_a
        result = BootstrapResult(
            -result.diff,
            -result.high,
            -result.low,
            result.level,
            result.n_images,
            result.n_boot,
            result.seeds_b,
            result.seeds_a,
        )
    ci = f"{result.level:.0%} CI {_num(result.low)} to {_num(result.high)}"
    lead = (
        f"{label_a} beats {label_b} by {_num(result.diff)} mIoU"
        if result.diff > 0
        else f"{label_a} and {label_b} score the same mIoU"
    )
    noise = "seed and test-set noise" if min(result.seeds_a, result.seeds_b) > 1 else "test-set noise"
    if result.excludes_zero:
        return f"{lead} ({ci}): distinguishable from {noise}."
    sentence = f"{lead}, but the {ci} includes 0: not distinguishable from {noise}"
    if noise == "test-set noise":
        sentence += " (one seed on a side, so seed-to-seed variation is not measured)"
    return sentence + "."


def _num(x: float) -> str:
    return f"{x:.3f}".replace("-0.000", "0.000")
