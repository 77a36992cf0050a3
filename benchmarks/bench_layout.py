"""Whether a dataset's classes have a vertical layout that vertical flips would break.

For each family's training masks: how unevenly each foreground class's pixels split between the top and the
bottom halves, against the same between the left and right halves (which horizontal flips, used
everywhere, already assume is even). A class whose pixels all lie in one half scores 1, an even split 0;
the figure is the mean over foreground classes weighted by their pixels. A vertical figure well above the
horizontal one (sky above, road below) says flipping upside down makes crops the test set never shows.

    python benchmarks/bench_auto.py --budget 15m --which auto     # writes the families' data
    python benchmarks/bench_layout.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vocseg.data.classes import IGNORE_INDEX as VOID
from vocseg.data.voc import VOCSegmentation, decode_mask


def half_counts(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class pixel counts in the top half, the left half and the whole (an odd middle row or column
    dropped, so the halves are equal)."""
    h, w = (mask.shape[0] // 2) * 2, (mask.shape[1] // 2) * 2
    mask = mask[:h, :w]
    return _count(mask[: h // 2]), _count(mask[:, : w // 2]), _count(mask)


def _count(mask: np.ndarray) -> np.ndarray:
    return np.bincount(mask.ravel(), minlength=VOID + 1)


def asymmetry(half: np.ndarray, total: np.ndarray) -> float:
    """Pixel-weighted mean over foreground classes (not background, not void) of |share in one half - 0.5| x 2."""
    classes = [c for c in range(1, VOID) if total[c] > 0]
    if not classes:
        return 0.0
    share = np.array([abs(half[c] / total[c] - 0.5) * 2 for c in classes])
    return float((share * total[classes]).sum() / total[classes].sum())


def layout(root: Path, split: str) -> tuple[float, float, int]:
    """(vertical, horizontal asymmetry, images) over a split's masks, read as training reads them (any layout
    the project reads, RGB-coded masks included)."""
    ds = VOCSegmentation(root, split)
    top, left, total = (np.zeros(VOID + 1) for _ in range(3))
    for i in range(len(ds)):
        t, lft, tot = half_counts(decode_mask(ds.mask_path(i), ds.num_classes, ds.layout.colours).numpy())
        top, left, total = top + t, left + lft, total + tot
    return asymmetry(top, total), asymmetry(left, total), len(ds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="bench-auto/data", help="bench_auto.py's data folder (FAMILY-sSEED/...)")
    p.add_argument("--split", default="train")
    args = p.parse_args()
    roots = sorted(Path(args.data).glob("*/VOCdevkit/VOC2012"))
    if not roots:
        raise SystemExit(f"no VOC-format data under {args.data}/*/VOCdevkit/VOC2012: run bench_auto.py first")
    print(f"{'dataset':<22}{'images':>8}{'vertical':>10}{'horizontal':>12}")
    for root in roots:
        vertical, horizontal, n = layout(root, args.split)
        print(f"{root.parts[-3]:<22}{n:>8}{vertical:>10.3f}{horizontal:>12.3f}")


if __name__ == "__main__":
    main()
