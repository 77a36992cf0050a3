"""Dataset fingerprint time on a VOC-sized split: cold (nothing cached) and cached.

    python benchmarks/bench_fingerprint.py [--n 10000] [--distinct 16] [--max-images 300] [--root DIR]

The split is ``--n`` ids of ~500x375 synthetic images (``render_sample``, long side 375-500): ``--distinct``
of them rendered, the rest hard links to those files (copies where links fail), written once under
``--root`` (default: the temp folder) and reused. Generation is not timed. The files are in the OS page
cache when timed (just written or read), so "cold" means no fingerprint cache, not a cold disk.
Prints the mask pass (every mask) and the sample pass (``--max-images`` images) apart, then the cached call.
Not a test: numbers depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from vocseg.data import fingerprint as fp
from vocseg.data.classes import voc_palette
from vocseg.data.synthetic import render_sample
from vocseg.data.voc import VOCSegmentation


def make_split(root: Path, n: int, distinct: int) -> Path:
    """``root/VOCdevkit/VOC2012`` with a train split of ``n`` ids; reused when its split file exists."""
    voc = root / "VOCdevkit" / "VOC2012"
    split = voc / "ImageSets" / "Segmentation" / "train.txt"
    if split.is_file():
        return voc
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"bench_{i:06d}" for i in range(n)]
    for i, name in enumerate(ids):
        jpg, png = voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClass" / f"{name}.png"
        if i < distinct:
            image, label = render_sample(0, i, 500)
            Image.fromarray(image).save(jpg, quality=90)
            mask = Image.fromarray(label)
            mask.putpalette(voc_palette())
            mask.save(png)
            continue
        src = ids[i % distinct]
        for path, source in ((jpg, jpg.with_stem(src)), (png, png.with_stem(src))):
            try:
                os.link(source, path)
            except OSError:
                shutil.copyfile(source, path)
    split.write_text("".join(f"{name}\n" for name in ids))  # last: it marks a complete tree
    return voc


def timed(f) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``f()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    f()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--distinct", type=int, default=16)
    p.add_argument("--max-images", type=int, default=fp.DEFAULT_MAX_IMAGES)
    p.add_argument("--root", type=Path, default=None)
    args = p.parse_args()
    root = args.root or Path(tempfile.gettempdir()) / f"vocseg-bench-fingerprint-{args.n}-{args.distinct}"
    t0 = time.perf_counter()
    ds = VOCSegmentation(make_split(root, args.n, args.distinct), "train")
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; split ready in "
          f"{time.perf_counter() - t0:.1f} s: {len(ds)} images under {root}")  # fmt: skip
    order = fp.sample_order(ds)
    n_sample = min(args.max_images, len(ds))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as compute_fingerprint runs them: with more, a busy machine slowed them 10-20x
    masks = timed(lambda: fp.mask_figures(ds, sorted(order)))
    sample = timed(lambda: fp.sample_figures(ds, sorted(order[: args.max_images])))
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["VOCSEG_CACHE"] = cache
        results = []
        cold = timed(lambda: results.append(fp.dataset_fingerprint(ds, max_images=args.max_images)))
        cached = timed(lambda: results.append(fp.dataset_fingerprint(ds, max_images=args.max_images)))
    assert results[0] == results[1]
    result = results[0]
    print("                                     wall s     CPU s   (CPU: this process, less sensitive to other load)")
    print(
        f"mask pass   ({len(ds):6d} masks):  {masks[0]:9.2f} {masks[1]:9.2f}   ({masks[1] / len(ds) * 1e3:.2f} ms/mask)"
    )
    print(
        f"sample pass ({n_sample:6d} images): {sample[0]:9.2f} {sample[1]:9.2f}   ({sample[1] / n_sample * 1e3:.1f} ms/image)"
    )
    print(f"dataset_fingerprint cold:         {cold[0]:9.2f} {cold[1]:9.2f}")
    print(f"dataset_fingerprint cached:       {cached[0]:9.2f} {cached[1]:9.2f}")
    print(f"finest_scale {result.finest_scale}, colour_separability {result.colour_separability:.3f}, "
          f"scale_separability {[round(v, 3) for v in result.scale_separability if v is not None]}")  # fmt: skip


if __name__ == "__main__":
    main()
