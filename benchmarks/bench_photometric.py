"""A training crop's preparation with photometric distortion: the HSV code before and after the rewrite.

    python benchmarks/bench_photometric.py [--images 100] [--repeats 5] [--threads 1]

strong.yaml's training preset (random rescale 0.5-2.0, 512 crop padded with 255, flip, photometric
distortion) on VOC-sized synthetic images (long side up to 500 px, generated into a temporary folder),
in one thread, as a loader worker runs it. Three sides, interleaved, on the same images and draws:
"no photometric"; "where/gather" (the HSV conversions before, built on torch.where, gather and max with
indices, copied below); "arithmetic" (vocseg's now). Median ms per crop; ratios printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch import Tensor

import vocseg.data.photometric as photometric
from vocseg.data.cache import apply_cache
from vocseg.data.photometric import PhotometricDistortion
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.data.transforms import SegmentationPresetTrain
from vocseg.data.voc import VOCSegmentation


def rgb_to_hsv_before(rgb: Tensor) -> Tensor:
    r, g, b = rgb.unbind(-3)
    maxc, _ = rgb.max(dim=-3)
    minc, _ = rgb.min(dim=-3)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb_before(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(-3)
    h6 = (h % 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    index = (sector.to(torch.int64) % 6).unsqueeze(-3)

    def pick(*values: Tensor) -> Tensor:
        return torch.stack(values, dim=-3).gather(-3, index).squeeze(-3)

    return torch.stack((pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)), dim=-3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (a loader worker has 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    now = (photometric.rgb_to_hsv, photometric.hsv_to_rgb)
    before = (rgb_to_hsv_before, hsv_to_rgb_before)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_voc(tmp, n_train=args.images, n_val=1, max_side=500, workers=1)
        plain = SegmentationPresetTrain([0.5] * 3, [0.25] * 3, 512, 0.5, 0.0, (0.5, 2.0), None)
        distorted = SegmentationPresetTrain([0.5] * 3, [0.25] * 3, 512, 0.5, 0.0, (0.5, 2.0), PhotometricDistortion())
        ds = VOCSegmentation(root, "train")
        apply_cache(ds, "ram", None, 0.5)  # decoded once: every side measures the crop's preparation alone

        def crops(transform, hsv) -> float:
            photometric.rgb_to_hsv, photometric.hsv_to_rgb = hsv
            ds.transforms = transform
            torch.manual_seed(0)  # the same scales, crops, flips and colour draws on every side
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            return (time.perf_counter() - t0) / len(ds) * 1e3

        sides = {
            "no photometric": (plain, now),
            "where/gather": (distorted, before),
            "arithmetic": (distorted, now),
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.repeats):
            for name, (transform, hsv) in sides.items():
                times[name].append(crops(transform, hsv))
        photometric.rgb_to_hsv, photometric.hsv_to_rgb = now
    print(f"{args.images} VOC-sized synthetic images -> 512 crops, {args.threads} thread(s), {args.repeats} repeats")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, m in med.items():
        print(f"{name:>15}: median {m:.2f} ms per crop  ({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"arithmetic is {med['where/gather'] / med['arithmetic']:.2f}x as fast as where/gather per crop")
    cost_before, cost_now = med["where/gather"] - med["no photometric"], med["arithmetic"] - med["no photometric"]
    print(f"photometric's own cost: {cost_before:.2f} -> {cost_now:.2f} ms ({cost_before / cost_now:.1f}x less)")


if __name__ == "__main__":
    main()
