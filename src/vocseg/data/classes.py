"""PASCAL VOC 2012 class names and its colour map (palette)."""

from __future__ import annotations

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)
IGNORE_INDEX = 255


def voc_colormap(n: int = 256) -> list[tuple[int, int, int]]:
    """VOC's bit-interleaved colour map: index i -> (r, g, b); 255 (void) is (224, 224, 192)."""
    cmap = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap.append((r, g, b))
    return cmap


def voc_palette() -> list[int]:
    """Flat 768-entry palette for ``PIL.Image.putpalette``."""
    return [v for rgb in voc_colormap(256) for v in rgb]


def class_names(num_classes: int, given: list[str] | None = None) -> list[str]:
    """``given``, else VOC's names for the first classes, and ``class_<i>`` beyond VOC's 21."""
    names = list(given) if given else list(VOC_CLASSES[:num_classes])
    return names + [f"class_{i}" for i in range(len(names), num_classes)]
