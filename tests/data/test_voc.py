"""The VOC reader (vocseg.data.voc) on small hand-made VOC trees: root resolution, splits, images, masks, and
which decoder reads what (torchvision.io for common 8-bit JPEG/PNG, PIL for the rest, same results), and bad
input (broken samples, decompression bombs, odd image modes, missing split files, wrong roots) named from the
reader and through the CLI, as listed in docs/reliability.md."""

from __future__ import annotations

import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from helpers import TRAIN_ARGS, cli
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
    "rgba.png": lambda p: _save(
        p, Image.fromarray(np.dstack([_rgb(), np.tile([0, 255], (13, 9))[:, :17].astype(np.uint8)]))
    ),
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
    "truncated jpeg": (
        "image",
        lambda p: _truncate(_save(p, Image.fromarray(_image(40, 50, 1)), quality=95)),
        "cannot be decoded",
    ),
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


def test_load_tensors_and_numpy_views(voc) -> None:
    voc_root, samples = voc
    ds = VOCSegmentation(voc_root, "train")
    image_t, mask_t = ds.load_tensors(0)
    assert type(image_t) is torch.Tensor and image_t.shape == (3, 23, 37) and mask_t.shape == (23, 37)
    image, mask = ds.load(0)
    assert image.shape == (23, 37, 3) and image.flags.c_contiguous and np.array_equal(mask, samples[ds.ids[0]][1])
    assert np.array_equal(image, image_t.permute(1, 2, 0).numpy())


# ----------------------------------------------------------------------------- bad input (docs/reliability.md)
# Each bad sample is checked on the reader, by checking that the good items still load, and through
# `vocseg train`, which must stop before the first step naming the file (no traceback, no checkpoint).


def _png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of zeros: tens of KB on disk, ``width * height`` pixels once decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _good_samples(n: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    samples = {}
    for i in range(n):
        h, w = 33 + i, 45 - i
        mask = np.zeros((h, w), np.uint8)
        mask[5:20, 6:30] = 1 + i
        mask[4, 6:30] = IGNORE_INDEX
        samples[f"img_{i}"] = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8), mask)
    return samples


def _corrupt(case: str, voc: Path) -> tuple[str, Path]:
    """Break image/mask ``img_2`` of a good tree; return (expected message part, the file it must name)."""
    image, mask = voc / "JPEGImages" / "img_2.jpg", voc / "SegmentationClass" / "img_2.png"
    if case == "truncated-jpeg":
        image.write_bytes(image.read_bytes()[: image.stat().st_size * 2 // 3])
        return "cannot be decoded (truncated or corrupt?)", image
    if case == "zero-byte-jpeg":
        image.write_bytes(b"")
        return "empty (zero-byte) file", image
    if case == "not-an-image":
        image.write_text("<html>404 not found</html>")
        return "cannot be decoded", image
    if case == "missing-mask":
        mask.unlink()
        return "not found", mask
    if case == "missing-image":
        image.unlink()
        return "not found", image
    if case == "size-mismatch":
        Image.fromarray(np.zeros((20, 21), np.uint8)).save(mask)
        return "but its mask", mask
    if case == "mask-values":
        bad = np.array(Image.open(mask))
        bad[0, :3] = (21, 30, 254)
        Image.fromarray(bad).save(mask)
        return "values [21, 30, 254] outside 0..20 and 255", mask
    if case == "decompression-bomb":
        _png_bomb(image, 20_000, 20_000)  # 400 M pixels, > 2 x MAX_IMAGE_PIXELS: PIL's own error
        return "too large to decode safely", image
    if case == "decompression-bomb-warning-size":
        _png_bomb(image, 10_000, 10_000)  # 100 M pixels: PIL would only warn; vocseg refuses too
        return "too large to decode safely", image
    raise AssertionError(case)


BAD_INPUTS = [
    "truncated-jpeg",
    "zero-byte-jpeg",
    "not-an-image",
    "missing-mask",
    "missing-image",
    "size-mismatch",
    "mask-values",
    "decompression-bomb",
    "decompression-bomb-warning-size",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
def test_bad_sample_error_names_the_file(case: str, make_voc, tmp_path: Path, capsys) -> None:
    samples = _good_samples()
    voc = make_voc(samples, {"train": list(samples), "val": list(samples)[:2]})
    expected, culprit = _corrupt(case, voc)
    # The reader, on the broken item:
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(VocsegError) as e:
        if case.startswith("missing"):
            ds.check()
        else:
            ds[2]
    assert expected in str(e.value) and str(culprit) in str(e.value)
    assert ds[1][0].shape[0] == 3  # the good items still load
    # Training stops before the first step, naming the file, with no traceback.
    rc, err = cli(
        [
            "train",
            *TRAIN_ARGS,
            "--data-root",
            voc.parent.parent,
            "--out",
            tmp_path / "run",
            "--epochs",
            1,
            "--workers",
            0,
        ],
        capsys,
    )
    assert rc == 2 and str(culprit) in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that is only a header claiming ``width * height`` pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)
    return path


@pytest.mark.parametrize("make", [_png_bomb, _png_header_only], ids=["valid-1-bit-png", "header-only"])
def test_decompression_bomb_is_refused_before_decoding(make, tmp_path: Path) -> None:
    """Every reader refuses on the header's size alone (well under a second, no 400 MB buffer)."""
    bomb = make(tmp_path / "bomb.png", 20_000, 20_000)
    assert bomb.stat().st_size < 200_000
    t0 = time.monotonic()
    for loader in (decode_image, decode_mask, load_image, load_mask):
        with pytest.raises(
            VocsegError, match=re.escape(f"too large to decode safely (over {MAX_IMAGE_PIXELS} pixels)")
        ) as e:
            loader(bomb)
        assert str(bomb) in str(e.value)
    assert time.monotonic() - t0 < 1.0


def _rgba(path: Path) -> np.ndarray:
    arr = np.zeros((6, 7, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[:3, ..., 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(arr).save(path)
    want = np.zeros((6, 7, 3), np.uint8)
    want[:3] = (200, 100, 50)  # transparent pixels become black, not their hidden colour
    return want


def _i16(path: Path) -> np.ndarray:
    Image.fromarray(np.array([[0, 65535, 32768], [1000, 20000, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    return np.repeat(np.array([[0, 255, 128], [4, 78, 255]], np.uint8)[..., None], 3, axis=2)  # scaled, not clipped


def _gray(path: Path) -> np.ndarray:
    Image.new("L", (9, 5), 77).save(path, quality=95)
    return np.full((5, 9, 3), 77, np.uint8)


def _cmyk(path: Path) -> np.ndarray:
    Image.new("CMYK", (9, 5), (0, 255, 255, 0)).save(path, quality=95)
    return np.broadcast_to(np.array([255, 0, 0], np.uint8), (5, 9, 3))


def _palette(path: Path) -> np.ndarray:
    img = Image.new("P", (4, 3), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(path)
    return np.broadcast_to(np.array([10, 200, 30], np.uint8), (3, 4, 3))


@pytest.mark.parametrize(
    "make,name,mode",
    [
        (_rgba, "rgba.png", "RGBA"),
        (_i16, "i16.png", "I;16"),
        (_gray, "gray.jpg", "L"),
        (_cmyk, "cmyk.jpg", "CMYK"),
        (_palette, "palette.png", "P"),
    ],
    ids=["rgba", "16-bit", "grayscale-jpeg", "cmyk-jpeg", "palette"],
)
def test_other_image_modes_are_converted_to_rgb(make, name: str, mode: str, tmp_path: Path, make_voc) -> None:
    path = tmp_path / name
    want = make(path)
    assert Image.open(path).mode == mode
    got = load_image(path)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 3  # JPEG rounding at most
    # And through the dataset (VOC names images .jpg whatever their format: PIL reads the content).
    mask = np.zeros(want.shape[:2], np.uint8)
    voc = make_voc({"odd": (np.zeros(want.shape, np.uint8), mask)})
    (voc / "JPEGImages" / "odd.jpg").write_bytes(path.read_bytes())  # replace the placeholder
    image, _ = VOCSegmentation(voc, "train")[0]
    assert tuple(image.shape) == (3, *want.shape[:2])


@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
@pytest.mark.parametrize("case", ["missing", "empty"])
def test_missing_and_empty_split_files_name_the_file(case: str, make_voc, tmp_path: Path, capsys) -> None:
    """From read_split and from `vocseg train` (which reads the val split): the file is named, and a missing
    one also lists the splits there are."""
    samples = _good_samples(2)
    voc = make_voc(samples, {"train": list(samples), "trainval": list(samples)})
    path = voc / "ImageSets" / "Segmentation" / "val.txt"
    if case == "missing":
        expected = f"split file not found: {path} (available splits: train, trainval)"
    else:
        path.write_text("\n  \n")  # only blank lines
        expected = f"split file is empty: {path}"
    with pytest.raises(VocsegError, match=re.escape(expected)):
        read_split(voc, "val")
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", voc, "--out", tmp_path / "run", "--epochs", 1], capsys)
    assert rc == 2 and expected in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
@pytest.mark.parametrize("case", ["missing", "empty-folder", "half-a-voc-tree"])
def test_wrong_dataset_root_names_the_path(case: str, tmp_path: Path, capsys) -> None:
    """From the reader and from the CLI (train and stats). A folder that holds no dataset gets the hint
    to run `vocseg download` (and the reader's message names both layouts it accepts)."""
    root = tmp_path / "no" / "such" / "folder" if case == "missing" else tmp_path / "photos"
    if case == "empty-folder":
        root.mkdir()
    elif case == "half-a-voc-tree":
        (root / "JPEGImages").mkdir(parents=True)
    expected = f"dataset root does not exist: {root}" if case == "missing" else f"no dataset under {root}"
    for open_root, message in (
        (resolve_voc_root, expected.replace("no dataset", "no VOC tree")),
        (VOCSegmentation, expected),
    ):
        with pytest.raises(VocsegError, match=re.escape(message)) as e:
            open_root(root)
        assert case == "missing" or "vocseg download" in str(e.value)
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", root, "--out", tmp_path / "run", "--epochs", 1], capsys)
    assert rc == 2 and expected in err and "Traceback" not in err
    rc, err = cli(["stats", "--data-root", root], capsys)
    assert rc == 2 and expected in err
