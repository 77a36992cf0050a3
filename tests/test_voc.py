"""The VOC reader (vocseg.data.voc) on small hand-made VOC trees: root resolution, splits, images, masks, and
which decoder reads what (torchvision.io for common 8-bit JPEG/PNG, PIL for the rest, same results)."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from vocseg.data import voc as voc_mod
from vocseg.data.classes import IGNORE_INDEX, voc_colormap, voc_palette
from vocseg.data.voc import (
    MAX_IMAGE_PIXELS,
    VOCSegmentation,
    decode_image,
    decode_mask,
    image_size,
    load_image,
    load_mask,
    read_split,
    resolve_voc_root,
)
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


# ----------------------------------------------------------------------------- decoding: torchvision and PIL


def _save(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, **kw)
    return path


def _pil_rgb_reference(path: Path) -> np.ndarray:
    """What the reader returned before torchvision decoding (PIL, composited on black where transparent)."""
    img = Image.open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(arr / (65535.0 if arr.max() > 255 else 255.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
    return np.array(img.convert("RGB"))


@pytest.fixture
def no_pil(monkeypatch):
    """Fail if the reader falls back to PIL."""

    def refuse(path, what, data=None):
        raise AssertionError(f"PIL fallback used for {path}")

    monkeypatch.setattr(voc_mod, "_open_checked", refuse)


@pytest.fixture
def pil_calls(monkeypatch) -> list[Path]:
    """Paths the reader handed to PIL."""
    calls: list[Path] = []
    real = voc_mod._open_checked

    def spy(path, what, data=None):
        calls.append(path)
        return real(path, what, data)

    monkeypatch.setattr(voc_mod, "_open_checked", spy)
    return calls


def _rgb(h: int = 13, w: int = 17) -> np.ndarray:
    return _image(h, w, seed=5)


FAST_IMAGES = {
    "rgb.jpg": lambda p: _save(p, Image.fromarray(_rgb()), quality=90),
    "gray.jpg": lambda p: _save(p, Image.fromarray(_rgb()[..., 0]), quality=90),
    "progressive.jpg": lambda p: _save(p, Image.fromarray(_rgb()), quality=80, progressive=True),
    "444.jpg": lambda p: _save(p, Image.fromarray(_rgb()), quality=95, subsampling=0),
    "rgb.png": lambda p: _save(p, Image.fromarray(_rgb())),
    "gray.png": lambda p: _save(p, Image.fromarray(_rgb()[..., 1])),
    "palette.png": lambda p: _save(p, Image.fromarray(_rgb()).convert("P")),
}


@pytest.mark.parametrize("name", list(FAST_IMAGES))
def test_common_images_decode_through_torchvision_like_pil(name: str, tmp_path: Path, no_pil) -> None:
    path = FAST_IMAGES[name](tmp_path / name)
    got, want = load_image(path), _pil_rgb_reference(path)
    assert got.dtype == np.uint8 and got.shape == want.shape == (13, 17, 3)
    # Both use libjpeg(-turbo); identical in the wheels measured, a few levels apart at most elsewhere.
    assert np.abs(got.astype(int) - want.astype(int)).max() <= (3 if name.endswith(".jpg") else 0)
    tensor = decode_image(path)
    assert tensor.shape == (3, 13, 17) and np.array_equal(tensor.permute(1, 2, 0).numpy(), got)


def _la(p: Path) -> Path:
    return _save(p, Image.fromarray(np.stack([_rgb()[..., 0], np.full((13, 17), 128, np.uint8)], -1), mode="LA"))


def _palette_with_transparency(p: Path) -> Path:
    img = Image.fromarray(_rgb()).convert("P")
    img.info["transparency"] = 3
    return _save(p, img, transparency=3)


FALLBACK_IMAGES = {
    "cmyk.jpg": lambda p: _save(p, Image.new("CMYK", (17, 13), (0, 255, 255, 0)), quality=95),
    "i16.png": lambda p: _save(p, Image.fromarray((np.arange(13 * 17, dtype=np.uint16) * 300).reshape(13, 17))),
    "rgba.png": lambda p: _save(p, Image.fromarray(np.dstack([_rgb(), np.tile([0, 255], (13, 9))[:, :17].astype(np.uint8)]))),
    "la.png": _la,
    "palette_trns.png": _palette_with_transparency,
    "bilevel.png": lambda p: _save(p, Image.fromarray(_rgb()[..., 0] > 100)),
    "gif_named.jpg": lambda p: _save(p, Image.fromarray(_rgb()).convert("P"), format="GIF"),
    "bmp_named.jpg": lambda p: _save(p, Image.fromarray(_rgb()), format="BMP"),
}


@pytest.mark.parametrize("name", list(FALLBACK_IMAGES))
def test_other_images_fall_back_to_pil_with_the_same_result(name: str, tmp_path: Path, pil_calls) -> None:
    path = FALLBACK_IMAGES[name](tmp_path / name)
    got = load_image(path)
    assert pil_calls == [path]
    assert got.dtype == np.uint8 and np.array_equal(got, _pil_rgb_reference(path))


def test_palette_masks_keep_indices_and_void_through_torchvision(voc, no_pil) -> None:
    voc_root, samples = voc
    for name, (_, want) in samples.items():
        path = voc_root / "SegmentationClass" / f"{name}.png"
        got = decode_mask(path)
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)
        assert np.array_equal(got.numpy(), np.array(Image.open(path)))  # PIL's indices exactly


def test_synthetic_masks_equal_pil_exactly(tiny_voc: Path, no_pil) -> None:
    ds = VOCSegmentation(tiny_voc, "train")
    for i in range(len(ds)):
        assert np.array_equal(load_mask(ds.mask_path(i)), np.array(Image.open(ds.mask_path(i))))


def _palette_mask(labels: np.ndarray, bits: int | None = None, transparency: int | None = None) -> Image.Image:
    img = Image.fromarray(labels, mode="L").convert("P")
    img.putpalette(voc_palette()[: 3 * (2**bits if bits else 256)])
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


def test_low_bit_depth_palette_mask_falls_back_to_pil(tmp_path: Path, pil_calls) -> None:
    # torchvision returns sub-8-bit palette PNGs as packed bytes, not indices: PIL must read them.
    labels = (np.arange(7 * 9).reshape(7, 9) % 16).astype(np.uint8)
    path = _save(tmp_path / "four_bit.png", _palette_mask(labels, bits=4), bits=4)
    assert Image.open(path).mode == "P"
    assert np.array_equal(load_mask(path, num_classes=16), labels) and pil_calls == [path]


def test_palette_mask_with_transparency_keeps_indices(tmp_path: Path, no_pil) -> None:
    labels = np.array([[0, 1, 255], [3, 255, 0]], np.uint8)
    path = _save(tmp_path / "trns.png", _palette_mask(labels, transparency=255), transparency=255)
    assert np.array_equal(load_mask(path), labels)


def test_rgb_mask_through_torchvision(tmp_path: Path, no_pil) -> None:
    labels = np.array([[0, 1, 2, 15], [20, IGNORE_INDEX, 7, 0]], np.uint8)
    path = _save(tmp_path / "rgb_mask.png", Image.fromarray(CMAP[labels]))
    assert np.array_equal(load_mask(path), labels)


def test_image_size_from_headers(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010E] = "x" * 20_000  # ImageDescription: pushes the frame header past the first 4 KiB
    big_exif = _save(tmp_path / "exif.jpg", Image.fromarray(_rgb(31, 47)), quality=90, exif=exif)
    assert big_exif.read_bytes().find(b"\xff\xc0") > 4096
    assert image_size(big_exif) == (31, 47)
    assert image_size(_save(tmp_path / "a.png", Image.fromarray(_rgb(5, 8)))) == (5, 8)
    assert image_size(_save(tmp_path / "g.gif", Image.fromarray(_rgb(6, 9)).convert("P"), format="GIF")) == (6, 9)
    with pytest.raises(VocsegError) as e:
        image_size(tmp_path / "missing.jpg")
    assert str(tmp_path / "missing.jpg") in str(e.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


BROKEN = {
    "truncated jpeg": ("image", lambda p: _truncate(_save(p, Image.fromarray(_image(40, 50, 1)), quality=95)), "cannot be decoded"),
    "truncated png": ("mask", lambda p: _truncate(_save(p, _palette_mask(_mask(40, 50, 1)))), "cannot be decoded"),
    "html": ("image", lambda p: p.write_text("<html>404 not found</html>"), "cannot be decoded"),
    "zero bytes": ("mask", lambda p: p.write_bytes(b""), "empty (zero-byte) file"),
    "missing": ("image", lambda p: None, "not found"),
    "folder": ("mask", lambda p: p.mkdir(), "not found"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_decode_errors_name_the_file(case: str, tmp_path: Path) -> None:
    what, make, message = BROKEN[case]
    path = tmp_path / ("x.jpg" if what == "image" else "x.png")
    make(path)
    with pytest.raises(VocsegError, match=re.escape(message)) as e:
        (decode_image if what == "image" else decode_mask)(path)
    assert str(path) in str(e.value) and what in str(e.value)


def test_oversized_header_is_refused_before_decoding(tmp_path: Path) -> None:
    # A PNG header claiming 20000 x 20000 pixels with no pixel data: refused on the header alone.
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 3, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    for decode in (decode_image, decode_mask):
        with pytest.raises(VocsegError, match=f"too large to decode safely \\(over {MAX_IMAGE_PIXELS} pixels\\)") as e:
            decode(path)
        assert str(path) in str(e.value)


def test_load_tensors_and_numpy_views(voc) -> None:
    voc_root, samples = voc
    ds = VOCSegmentation(voc_root, "train")
    image_t, mask_t = ds.load_tensors(0)
    assert type(image_t) is torch.Tensor and image_t.shape == (3, 23, 37) and mask_t.shape == (23, 37)
    image, mask = ds.load(0)
    assert image.shape == (23, 37, 3) and image.flags.c_contiguous and np.array_equal(mask, samples[ds.ids[0]][1])
    assert np.array_equal(image, image_t.permute(1, 2, 0).numpy())
