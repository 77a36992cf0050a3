"""Training data pipeline per image: vocseg's (torchvision.io decode + ``SegmentationPresetTrain``) against a
PIL pipeline written like torchvision's references/segmentation, same transforms, same images, one run.

    python benchmarks/bench_pipeline.py [--repeats 5] [--images 160] [--crop 128]

Both pipelines: decode JPEG image + palette PNG mask, random rescale 0.5-2.0x (bilinear image, nearest
mask), pad to the crop size (image 0, mask 255) and random crop, random horizontal and vertical flip,
uint8 -> float in [0, 1], normalise; output a float (3, crop, crop) image and an int64 (crop, crop) mask.
Image sets: the built-in synthetic dataset (long side up to 192 px) and VOC-sized 500x375 JPEGs
written to a temporary folder. "vocseg, RAM cache" is the same with images decoded once beforehand
(``cache: auto``/``ram``): the transforms alone. One torch thread, as in a DataLoader worker. Repeats interleave the
pipelines and the medians are printed. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import RandomCrop as V1RandomCrop
from torchvision.transforms import functional as TF

from vocseg.data.cache import apply_cache
from vocseg.data.classes import voc_palette
from vocseg.data.synthetic import default_dataset_root
from vocseg.data.transforms import SegmentationPresetTrain
from vocseg.data.voc import VOCSegmentation

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- the PIL reference


class RefTrain:
    """torchvision references/segmentation's train transforms on PIL images (``transforms.py`` there:
    RandomResize, RandomHorizontalFlip, RandomCrop with ``pad_if_smaller``, PILToTensor,
    ToDtype(float, scale=True), Normalize), with vocseg's relative 0.5-2.0x scale and a vertical flip
    added so both pipelines do the same work."""

    def __init__(self, crop: int, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        self.crop, self.scale = crop, scale

    @staticmethod
    def _pad_if_smaller(img: Image.Image, size: int, fill: int) -> Image.Image:
        ow, oh = img.size
        if min(ow, oh) < size:
            img = TF.pad(img, [0, 0, max(size - ow, 0), max(size - oh, 0)], fill=fill)
        return img

    def __call__(self, image: Image.Image, target: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        s = random.uniform(*self.scale)
        size = [max(1, round(image.height * s)), max(1, round(image.width * s))]
        image = TF.resize(image, size, antialias=True)  # PIL bilinear
        target = TF.resize(target, size, interpolation=InterpolationMode.NEAREST)
        image = self._pad_if_smaller(image, self.crop, 0)
        target = self._pad_if_smaller(target, self.crop, 255)
        top, left, h, w = V1RandomCrop.get_params(image, (self.crop, self.crop))
        image, target = TF.crop(image, top, left, h, w), TF.crop(target, top, left, h, w)
        if random.random() < 0.5:
            image, target = TF.hflip(image), TF.hflip(target)
        if random.random() < 0.5:
            image, target = TF.vflip(image), TF.vflip(target)
        x = TF.pil_to_tensor(image)
        y = torch.as_tensor(np.array(target), dtype=torch.int64)
        x = TF.convert_image_dtype(x, torch.float32)
        return TF.normalize(x, MEAN, STD), y


def reference_item(paths: tuple[Path, Path], tf: RefTrain) -> tuple[torch.Tensor, torch.Tensor]:
    image = Image.open(paths[0]).convert("RGB")  # as torchvision.datasets.VOCSegmentation reads them
    target = Image.open(paths[1])
    return tf(image, target)


# ----------------------------------------------------------------------------- image sets


def write_voc_sized(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 500x375 JPEGs (quality 90) with palette masks, as a VOC tree; returns the VOC2012 folder."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:375, 0:500]
    ids = []
    for i in range(n):
        # Smooth gradients plus noise: JPEG sizes close to photos' (~60-100 KB), not flat colour.
        base = (xx * rng.uniform(0.2, 0.8) + yy * rng.uniform(0.2, 0.8))[..., None] + rng.uniform(0, 255, 3)
        img = np.clip(base % 256 + rng.normal(0, 20, (375, 500, 3)), 0, 255).astype(np.uint8)
        mask = ((xx // 50 + yy // 50 + i) % 21).astype(np.uint8)
        mask[(xx % 50 == 0) | (yy % 50 == 0)] = 255
        name = f"voc_{i:04d}"
        Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        m = Image.fromarray(mask, mode="L").convert("P")
        m.putpalette(voc_palette())
        m.save(voc / "SegmentationClass" / f"{name}.png")
        ids.append(name)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return voc


# ----------------------------------------------------------------------------- timing


def time_per_image(fn: Callable[[int], object], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t0) / n


def bench_set(name: str, root: Path, n: int, crop: int, repeats: int) -> None:
    ids = VOCSegmentation(root, "train").ids[:n]
    ds = VOCSegmentation(root, "train", SegmentationPresetTrain(MEAN, STD, crop_size=crop), ids=ids)
    cached = apply_cache(VOCSegmentation(root, "train", ds.transforms, ids=ids), "ram")
    n = len(ds)
    paths = [(ds.image_path(i), ds.mask_path(i)) for i in range(n)]
    ref = RefTrain(crop)
    pipelines: dict[str, Callable[[int], object]] = {
        "PIL reference": lambda i: reference_item(paths[i], ref),
        "vocseg": lambda i: ds[i],
        "vocseg, RAM cache": lambda i: cached[i],
        "  decode only (PIL)": lambda i: (
            np.array(Image.open(paths[i][0]).convert("RGB")),
            np.array(Image.open(paths[i][1])),
        ),
        "  decode only (vocseg)": lambda i: ds.decode(i),
    }
    times: dict[str, list[float]] = {k: [] for k in pipelines}
    for fn in pipelines.values():  # warm-up: file cache, allocator, lazy imports
        time_per_image(fn, min(n, 20))
    for r in range(repeats):
        order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))  # interleave, alternate order
        for key in order:
            times[key].append(time_per_image(pipelines[key], n))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{name}: {n} images, crop {crop}, median of {repeats} interleaved repeats")
    print(f"{'pipeline':<24} {'ms/img':>8} {'img/s':>8} {'vs PIL':>8}")
    for key, sec in med.items():
        base = med["PIL reference"] if "decode" not in key else med["  decode only (PIL)"]
        print(f"{key:<24} {sec * 1e3:8.3f} {1 / sec:8.0f} {base / sec:7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--crop", type=int, default=128)
    args = p.parse_args()
    torch.set_num_threads(1)  # as in a DataLoader worker
    torch.manual_seed(0)
    random.seed(0)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, torch "
        f"{torch.__version__}, torchvision {torchvision.__version__}, Pillow {Image.__version__}"
    )
    bench_set("synthetic (built-in, long side <= 192 px)", default_dataset_root(), args.images, args.crop, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        voc = write_voc_sized(Path(tmp), args.images)
        bench_set("VOC-sized 500x375 JPEGs", voc, args.images, args.crop, args.repeats)


if __name__ == "__main__":
    main()
