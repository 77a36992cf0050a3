"""The VOC reader (vocseg.data.voc) on small hand-made VOC trees: root resolution, splits, images, masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from vocseg.data.classes import IGNORE_INDEX, voc_colormap
from vocseg.data.voc import VOCSegmentation, load_image, load_mask, read_split, resolve_voc_root
from vocseg.errors import VocsegError

CMAP = np.array(voc_colormap(256), dtype=np.uint8)
# (height, width): odd sizes, none a multiple of 2 or 32, one portrait, one landscape, one a single row.
SIZES = {"2007_000032": (23, 37), "2007_000039": (41, 29), "2008_001234": (1, 17)}


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colours (JPEG keeps them within a few levels) so pixel values can be checked."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 216, size=3)
    ramp = (np.arange(w)[None, :, None] * 2 + np.arange(h)[:, None, None]) % 24
    return np.clip(base[None, None, :] + ramp, 0, 255).astype(np.uint8)


def _mask(h: int, w: int, seed: int) -> np.ndarray:
    """Background, two object classes, and a 255 (void) border around each object, like VOC's."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for cls in rng.choice(np.arange(1, 21), size=2, replace=False):
        y0, x0 = rng.integers(0, max(h - 1, 1)), rng.integers(0, max(w - 1, 1))
        y1, x1 = min(h, y0 + max(1, h // 2)), min(w, x0 + max(1, w // 2))
        mask[max(0, y0 - 1) : min(h, y1 + 1), max(0, x0 - 1) : min(w, x1 + 1)] = IGNORE_INDEX
        mask[y0:y1, x0:x1] = cls
    return mask


@pytest.fixture
def voc(make_voc) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A VOC tree with palette masks; returns (VOC2012 folder, id -> (image, mask) as written)."""
    samples = {name: (_image(h, w, i), _mask(h, w, i)) for i, (name, (h, w)) in enumerate(SIZES.items())}
    voc_root = make_voc(samples, {"train": list(SIZES)[:2], "val": list(SIZES)[2:], "trainval": list(SIZES)})
    return voc_root, samples


# ----------------------------------------------------------------------------- root resolution


def test_root_given_the_folder_holding_vocdevkit_vocdevkit_or_voc2012(voc) -> None:
    voc_root, _ = voc
    holder = voc_root.parent.parent
    assert resolve_voc_root(holder) == voc_root
    assert resolve_voc_root(holder / "VOCdevkit") == voc_root
    assert resolve_voc_root(voc_root) == voc_root
    assert resolve_voc_root(str(voc_root)) == voc_root  # plain strings too
    for given in (holder, holder / "VOCdevkit", voc_root):
        ds = VOCSegmentation(given, "train")
        assert ds.voc_root == voc_root
        assert ds.ids == list(SIZES)[:2]


def test_root_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(VocsegError, match="does not exist") as e:
        resolve_voc_root(missing)
    assert str(missing) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VocsegError, match="no VOC tree") as e:
        VOCSegmentation(empty, "train")
    assert str(empty) in str(e.value) and "vocseg download" in str(e.value)


# ----------------------------------------------------------------------------- splits


def test_split_ids_read_in_order(voc) -> None:
    voc_root, _ = voc
    assert read_split(voc_root, "train") == ["2007_000032", "2007_000039"]
    assert read_split(voc_root, "val") == ["2008_001234"]
    assert read_split(voc_root, "trainval") == list(SIZES)


def test_split_file_whitespace_crlf_and_blank_lines(voc) -> None:
    voc_root, _ = voc
    path = voc_root / "ImageSets" / "Segmentation" / "messy.txt"
    path.write_bytes(b"2007_000039\r\n\r\n  2007_000032  \r\n\n2008_001234")  # no final newline either
    assert read_split(voc_root, "messy") == ["2007_000039", "2007_000032", "2008_001234"]
    assert VOCSegmentation(voc_root, "messy").ids == ["2007_000039", "2007_000032", "2008_001234"]


def test_missing_split_lists_the_available_ones(voc) -> None:
    voc_root, _ = voc
    with pytest.raises(VocsegError, match="split file not found") as e:
        read_split(voc_root, "test")
    msg = str(e.value)
    assert str(voc_root / "ImageSets" / "Segmentation" / "test.txt") in msg
    assert "train, trainval, val" in msg


def test_explicit_ids_override_the_split_file(voc) -> None:
    voc_root, _ = voc
    ds = VOCSegmentation(voc_root, "train", ids=["2008_001234"])
    assert len(ds) == 1 and ds.ids == ["2008_001234"]
    assert ds.image_path(0) == voc_root / "JPEGImages" / "2008_001234.jpg"
    assert ds.mask_path(0) == voc_root / "SegmentationClass" / "2008_001234.png"


# ----------------------------------------------------------------------------- images and masks


def test_items_keep_odd_sizes_class_indices_and_void(voc) -> None:
    voc_root, samples = voc
    ds = VOCSegmentation(voc_root, "trainval")
    ds.check()
    assert len(ds) == 3
    for i, name in enumerate(ds.ids):
        image, mask = ds[i]
        want_image, want_mask = samples[name]
        h, w = SIZES[name]
        assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, h, w)
        assert mask.dtype == torch.uint8 and tuple(mask.shape) == (h, w)
        # Masks are exact class indices, 255 kept as void (not mapped to a class, not dropped).
        assert np.array_equal(mask.numpy(), want_mask)
        assert IGNORE_INDEX in want_mask and set(np.unique(want_mask)) >= {0, IGNORE_INDEX}
        # Images are the same pixels, up to JPEG's loss.
        diff = np.abs(image.permute(1, 2, 0).numpy().astype(int) - want_image.astype(int))
        assert diff.mean() < 4, name


def test_palette_png_is_read_as_indices_not_colours(voc) -> None:
    voc_root, samples = voc
    path = voc_root / "SegmentationClass" / "2007_000032.png"
    assert Image.open(path).mode == "P"
    assert np.array_equal(load_mask(path), samples["2007_000032"][1])


def test_rgb_coded_masks_map_through_the_palette(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, 15], [20, IGNORE_INDEX, 7, 0], [IGNORE_INDEX, 3, 3, 19]], np.uint8)
    rgb = CMAP[labels]
    assert tuple(rgb[1, 1]) == (224, 224, 192)  # VOC's void colour
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    assert Image.open(path).mode == "RGB"
    assert np.array_equal(load_mask(path), labels)
    rgba = np.concatenate([rgb, np.full((*labels.shape, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(load_mask(tmp_path / "rgba.png"), labels)


def test_rgb_mask_with_a_colour_outside_the_palette_is_refused(tmp_path: Path) -> None:
    rgb = CMAP[np.zeros((4, 5), np.uint8)]
    rgb[2, 3] = (1, 2, 3)
    path = tmp_path / "bad_colour.png"
    Image.fromarray(rgb).save(path)
    with pytest.raises(VocsegError, match=r"\(1, 2, 3\)") as e:
        load_mask(path)
    assert str(path) in str(e.value)


def test_grayscale_mask_is_read_as_indices(tmp_path: Path) -> None:
    labels = np.array([[0, 5, IGNORE_INDEX], [20, 1, 0]], np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(labels).save(path)
    assert Image.open(path).mode == "L"
    assert np.array_equal(load_mask(path), labels)


def test_num_classes_bounds_mask_values(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 2, IGNORE_INDEX]], np.uint8)
    path = tmp_path / "three.png"
    Image.fromarray(labels).save(path)
    assert np.array_equal(load_mask(path, num_classes=3), labels)
    with pytest.raises(VocsegError, match=r"values \[2\] outside 0..1 and 255"):
        load_mask(path, num_classes=2)


def test_load_image_returns_uint8_rgb(voc) -> None:
    voc_root, _ = voc
    arr = load_image(voc_root / "JPEGImages" / "2008_001234.jpg")
    assert arr.dtype == np.uint8 and arr.shape == (1, 17, 3)


def test_transforms_receive_image_and_mask_together(voc) -> None:
    voc_root, _ = voc
    seen = []

    def tf(image, mask):
        seen.append((type(image), type(mask), tuple(image.shape), tuple(mask.shape)))
        return image.float(), mask.long()

    ds = VOCSegmentation(voc_root, "val", transforms=tf)
    image, mask = ds[0]
    assert image.dtype == torch.float32 and mask.dtype == torch.int64
    assert seen == [(tv_tensors.Image, tv_tensors.Mask, (3, 1, 17), (1, 17))]


def test_synthetic_tree_reads_through_the_reader(tiny_voc: Path) -> None:
    ds = VOCSegmentation(tiny_voc, "val")
    assert len(ds) == 4
    ds.check()
    image, mask = ds[0]
    assert image.shape[-2:] == mask.shape
    assert IGNORE_INDEX in mask.unique().tolist()
