"""VOC's class names and colour map: the devkit's bit-interleaved palette, and names beyond VOC's 21."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vocseg.data.classes import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, class_names, voc_colormap, voc_palette


def _devkit_colormap(n: int) -> np.ndarray:
    """The VOC devkit's VOClabelcolormap.m, written independently: label bits 0, 1, 2 go to the top bit
    of r, g, b, bits 3, 4, 5 to the next bit down, and so on."""
    cmap = np.zeros((n, 3), dtype=np.int64)
    for label in range(n):
        for channel in range(3):
            value = 0
            for level in range(8):
                bit = (label >> (3 * level + channel)) & 1
                value += bit * 2 ** (7 - level)
            cmap[label, channel] = value
    return cmap


def test_colormap_is_the_devkits_bit_interleaving():
    assert np.array_equal(np.array(voc_colormap(256)), _devkit_colormap(256))


def test_colormap_known_colours():
    cmap = voc_colormap()
    assert len(cmap) == 256
    assert cmap[0] == (0, 0, 0)  # background
    assert cmap[1] == (128, 0, 0)  # aeroplane
    assert cmap[15] == (192, 128, 128)  # person
    assert cmap[20] == (0, 64, 128)  # tvmonitor
    assert cmap[IGNORE_INDEX] == (224, 224, 192)  # void
    assert len(set(cmap)) == 256  # every index its own colour


def test_colormap_of_n_is_the_first_n_colours():
    assert voc_colormap(5) == voc_colormap(256)[:5]
    assert voc_colormap(0) == []


def test_palette_is_the_flat_colormap_and_pil_reads_it_back():
    palette = voc_palette()
    assert len(palette) == 768
    assert palette == [v for rgb in _devkit_colormap(256).tolist() for v in rgb]
    img = Image.fromarray(np.array([[0, 1, 15, IGNORE_INDEX]], dtype=np.uint8), mode="L")
    img.putpalette(palette)
    assert np.array(img.convert("RGB"))[0].tolist() == [[0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192]]


def test_class_names_default_to_vocs_first_n():
    assert NUM_CLASSES == 21 and VOC_CLASSES[0] == "background" and VOC_CLASSES[-1] == "tvmonitor"
    assert class_names(21) == list(VOC_CLASSES)
    assert class_names(3) == ["background", "aeroplane", "bicycle"]
    assert class_names(1) == ["background"]


def test_class_names_beyond_voc_are_numbered():
    names = class_names(23)
    assert names[:21] == list(VOC_CLASSES)
    assert names[21:] == ["class_21", "class_22"]


@pytest.mark.parametrize("given", [["sky", "road", "car"], ("sky", "road", "car")])
def test_given_names_win(given):
    assert class_names(3, given) == ["sky", "road", "car"]
    assert class_names(5, given) == ["sky", "road", "car", "class_3", "class_4"]  # padded to num_classes


def test_an_empty_given_list_falls_back_to_vocs_names():
    assert class_names(2, []) == ["background", "aeroplane"]
    assert class_names(2, None) == ["background", "aeroplane"]
