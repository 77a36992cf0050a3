"""Reader for PASCAL VOC 2012's segmentation tree and any dataset laid out like it or as image/mask folders.

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                            /SegmentationClass/<id>.png      palette PNG: class index per pixel, 255 = void
                            /ImageSets/Segmentation/<split>.txt

or DIR/images/<id>.<jpg|png> + DIR/masks/<id>.png (data/layout.py finds the files of either).

Decoding: each file is read once into memory, its header parsed here (size, format, channels), then
8-bit RGB/grayscale JPEGs and 8-bit RGB/grayscale/palette PNGs are decoded by ``torchvision.io``
(libjpeg-turbo / libpng straight into a uint8 CHW tensor, the same pixels as PIL's; docs/benchmarks.md,
section (b), compares the pipelines). Everything else (CMYK JPEG, 16-bit, alpha or transparency, sub-8-bit
PNGs, other formats) and anything torchvision refuses goes through PIL, whose error is then the one
reported, naming the file. torchvision keeps palette PNGs as indices (``ImageReadMode.UNCHANGED``), so masks are exact.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_jpeg, decode_png

from ..errors import VocsegError
from .classes import IGNORE_INDEX, NUM_CLASSES, voc_colormap
from .layout import IMAGE_DIR, MASK_DIR, SPLIT_DIR, DatasetLayout, find_voc_tree, resolve_layout

# PIL refuses images above 2x this many pixels and only warns above 1x; we refuse both (see load_image).
MAX_IMAGE_PIXELS = 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS


# torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call; the
# decoders still work, and a build without them raises RuntimeError, which falls back to PIL.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> stored channels (palette: 1 index)
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def resolve_voc_root(root: str | Path) -> Path:
    """Return the ``VOC2012`` folder given it, its parent ``VOCdevkit``, or the folder holding ``VOCdevkit``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise VocsegError(f"dataset root does not exist: {root}")
    voc = find_voc_tree(root)
    if voc is not None:
        return voc
    raise VocsegError(
        f"no VOC tree under {root}: expected {root}/VOCdevkit/VOC2012/{{{IMAGE_DIR},{MASK_DIR},{SPLIT_DIR}}} "
        f"(or pass the VOC2012 folder itself); run `vocseg download --root {root}` to fetch VOC 2012"
    )


def read_split(root: str | Path | DatasetLayout, split: str) -> list[str]:
    """Image ids of ``split`` of the dataset at ``root`` (either layout; see data/layout.py)."""
    return (root if isinstance(root, DatasetLayout) else resolve_layout(root)).read_split(split)


# ----------------------------------------------------------------------------- headers


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's first bytes say: enough to size a cache, refuse a bomb and pick a decoder."""

    format: str  # "jpeg" or "png"
    width: int
    height: int
    channels: int  # JPEG components; PNG channels as stored (a palette PNG has 1: the index)
    bit_depth: int  # JPEG sample precision; PNG bits per channel
    palette: bool = False
    transparency: bool = False  # a PNG tRNS chunk: PIL composites such images on black


def _png_header(data: bytes) -> ImageHeader | None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    channels = _PNG_CHANNELS.get(colour)
    if channels is None:
        return None
    transparency, i = False, 8
    while i + 8 <= len(data):  # tRNS, if any, comes before the first IDAT
        length, tag = struct.unpack(">I4s", data[i : i + 8])
        if tag == b"tRNS":
            transparency = True
            break
        if tag in (b"IDAT", b"IEND"):
            break
        i += 12 + length
    return ImageHeader("png", width, height, channels, depth, colour == 3, transparency)


def _jpeg_header(data: bytes) -> ImageHeader | None:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            i += 2
            continue
        if marker in _JPEG_SOF:
            if i + 10 > n:
                return None
            depth, height, width, comps = struct.unpack(">BHHB", data[i + 4 : i + 10])
            return ImageHeader("jpeg", width, height, comps, depth)
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header: malformed
            return None
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def parse_header(data: bytes) -> ImageHeader | None:
    """The header of a JPEG or PNG held in ``data`` (the file's start suffices); None for other formats
    or a header that cannot be parsed (PIL then decides)."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_header(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_header(data)
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image from its header, without decoding it (PIL's lazy open for
    formats parsed here only partly). Cheap: reads the first 4 KiB, more only for JPEGs with a large
    EXIF block before the frame header."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4096)
            hdr = parse_header(head)
            if hdr is None and head.startswith(b"\xff\xd8"):
                hdr = parse_header(head + f.read())
        if hdr is not None and hdr.width and hdr.height:
            return hdr.height, hdr.width
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise VocsegError(f"cannot read the size of {path}: {e}") from None


# ----------------------------------------------------------------------------- reading and decoding


def _read_checked(path: Path, what: str) -> bytes:
    """The whole file, read once (both the header parser and the decoder work from these bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VocsegError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise VocsegError(f"{what} not found: {path} is a folder") from None
    except OSError as e:
        raise VocsegError(f"{what} {path} cannot be read: {e}") from None
    if not data:
        raise VocsegError(f"{what} is an empty (zero-byte) file: {path}")
    return data


def _check_pixels(hdr: ImageHeader | None, path: Path, what: str) -> None:
    # Checked on the header, before any decoder allocates the pixels of a decompression bomb.
    if hdr is not None and hdr.width * hdr.height > MAX_IMAGE_PIXELS:
        raise VocsegError(
            f"{what} {path} is too large to decode safely (over {MAX_IMAGE_PIXELS} pixels): "
            f"{hdr.width}x{hdr.height} = {hdr.width * hdr.height} pixels"
        )


def _tv_decode(data: bytes, hdr: ImageHeader, mode: ImageReadMode) -> Tensor | None:
    """torchvision's decode of ``data``, or None where it fails (PIL then decodes, or names the error)."""
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # bytearray: frombuffer wants a writable buffer
    try:
        out = decode_jpeg(buf, mode=mode) if hdr.format == "jpeg" else decode_png(buf, mode=mode)
    except RuntimeError:
        return None
    want = 1 if mode == ImageReadMode.UNCHANGED else 3
    if out.dtype != torch.uint8 or tuple(out.shape) != (want, hdr.height, hdr.width):
        return None
    return out


def _tv_reads_image(hdr: ImageHeader | None) -> bool:
    """Formats torchvision decodes to the same RGB as PIL's ``convert("RGB")``. Not: CMYK/YCCK JPEG
    (PIL's Adobe inversion rules), 12-bit, alpha or tRNS (PIL composites on black), 16-bit and
    sub-8-bit PNGs (torchvision returns uint16 or unexpanded packed indices)."""
    if hdr is None or hdr.bit_depth != 8:
        return False
    if hdr.format == "jpeg":
        return hdr.channels in (1, 3)
    return hdr.channels in (1, 3) and not hdr.transparency


def _open_checked(path: Path, what: str, data: bytes | None = None) -> Image.Image:
    """PIL's decode (the fallback), with every failure a VocsegError naming ``path``."""
    import io

    try:
        with warnings.catch_warnings():
            # Above MAX_IMAGE_PIXELS PIL only warns; a segmentation image that large is a decompression bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data) if data is not None else path)
            img.load()  # force the decode now so a truncated file fails here, naming the file
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VocsegError(
            f"{what} {path} is too large to decode safely (over {MAX_IMAGE_PIXELS} pixels): {e}"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VocsegError(f"{what} {path} cannot be decoded (truncated or corrupt?): {e}") from None
    return img


def _pil_rgb(img: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 RGB (H, W, 3)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits instead of letting PIL clip at 255.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black so transparent pixels do not carry arbitrary hidden colours.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.array(img.convert("RGB"))


def decode_image(path: str | Path) -> Tensor:
    """Decode any image PIL reads (JPEG, PNG; RGB, grayscale, CMYK, RGBA, 16-bit) to a uint8 RGB
    tensor (3, H, W), through torchvision.io where it gives PIL's result (see the module docstring).
    The tensor is a channels-first view of interleaved (H, W, 3) memory, as both decoders write it."""
    path = Path(path)
    data = _read_checked(path, "image")
    hdr = parse_header(data)
    _check_pixels(hdr, path, "image")
    if _tv_reads_image(hdr):
        out = _tv_decode(data, hdr, ImageReadMode.RGB)
        if out is not None:
            return out
    rgb = _pil_rgb(_open_checked(path, "image", data))
    return torch.from_numpy(rgb).permute(2, 0, 1)  # like torchvision's: a (3, H, W) view of (H, W, 3) memory


def load_image(path: str | Path) -> np.ndarray:
    """Decode any image PIL reads (JPEG, PNG; RGB, grayscale, CMYK, RGBA, 16-bit) to uint8 RGB (H, W, 3)."""
    return np.ascontiguousarray(decode_image(path).permute(1, 2, 0).numpy())


Colours = Sequence[tuple[int, int, int]] | None  # a dataset's class colours; None: VOC's colour map


@functools.lru_cache(maxsize=8)
def _colour_lut(colours: tuple[tuple[int, int, int], ...] | None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted 24-bit colour codes and their class indices, for a vectorised lookup of RGB-coded masks. A
    dataset's own colours map to their positions; VOC's void colour (224, 224, 192) stays void."""
    pairs = list(enumerate(voc_colormap(256))) if colours is None else list(enumerate(colours))
    if colours is not None:
        pairs.append((IGNORE_INDEX, voc_colormap(256)[IGNORE_INDEX]))
    codes = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in reversed(pairs)}  # a repeated colour: its first class
    order = sorted(codes)
    return np.array(order, dtype=np.int64), np.array([codes[c] for c in order], dtype=np.int64)


def _rgb_to_indices(rgb: np.ndarray, path: Path, colours: Colours = None) -> np.ndarray:
    """An RGB-coded mask (H, W, 3) mapped back through the class colours (VOC's by default) to indices (H, W)."""
    lut_codes, lut_index = _colour_lut(None if colours is None else tuple(tuple(c) for c in colours))
    rgb = rgb.astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.clip(np.searchsorted(lut_codes, codes), 0, len(lut_codes) - 1)
    found = lut_codes[pos] == codes
    if not found.all():
        bad = tuple(int(v) for v in rgb[~found][0])
        where = "VOC's colour map" if colours is None else "the dataset's class colours"
        raise VocsegError(f"mask {path} has colour {bad}, which is not in {where}")
    return lut_index[pos].astype(np.uint8)


def _tv_mask(data: bytes, hdr: ImageHeader | None, path: Path, colours: Colours) -> Tensor | None:
    """8-bit palette/grayscale PNGs as stored indices, 8-bit RGB PNGs through the colour map; None
    for anything else (PIL then reads it)."""
    if hdr is None or hdr.format != "png" or hdr.bit_depth != 8:
        return None
    if hdr.channels == 1:  # palette (tRNS or not: UNCHANGED never applies the palette) or grayscale
        out = _tv_decode(data, hdr, ImageReadMode.UNCHANGED)
        return None if out is None else out[0]
    if hdr.channels == 3 and not hdr.transparency:
        out = _tv_decode(data, hdr, ImageReadMode.RGB)
        return None if out is None else torch.from_numpy(_rgb_to_indices(out.permute(1, 2, 0).numpy(), path, colours))
    return None


def _pil_mask(img: Image.Image, path: Path, colours: Colours) -> Tensor:
    if img.mode in ("P", "L"):
        return torch.from_numpy(np.array(img, dtype=np.uint8))
    if img.mode in ("RGB", "RGBA"):
        return torch.from_numpy(_rgb_to_indices(np.asarray(img.convert("RGB")), path, colours))
    raise VocsegError(f"mask {path} has unsupported mode {img.mode!r}; expected a palette (P) or grayscale PNG")


def _check_mask_values(mask: Tensor, path: Path, num_classes: int) -> None:
    # One histogram pass: cheaper than building boolean masks, and it lists the offending values.
    counts = torch.bincount(mask.reshape(-1), minlength=256)
    counts[IGNORE_INDEX] = 0
    bad = counts[num_classes:].nonzero().reshape(-1) + num_classes
    if bad.numel():
        raise VocsegError(
            f"mask {path} has values {bad.tolist()[:10]} outside 0..{num_classes - 1} and {IGNORE_INDEX} (void)"
        )


def decode_mask(path: str | Path, num_classes: int = NUM_CLASSES, colours: Colours = None) -> Tensor:
    """Decode a mask to a uint8 tensor of class indices (H, W): palette/grayscale PNGs are read as
    indices, RGB PNGs are mapped back through ``colours`` (VOC's colour map by default). Values must be
    0..num_classes-1 or 255."""
    path = Path(path)
    data = _read_checked(path, "mask")
    hdr = parse_header(data)
    _check_pixels(hdr, path, "mask")
    mask = _tv_mask(data, hdr, path, colours)
    if mask is None:
        mask = _pil_mask(_open_checked(path, "mask", data), path, colours)
    _check_mask_values(mask, path, num_classes)
    return mask


def load_mask(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Decode a VOC mask to uint8 class indices (H, W): palette/grayscale PNGs are read as indices,
    RGB PNGs are mapped back through VOC's colour map. Values must be 0..num_classes-1 or 255."""
    return decode_mask(path, num_classes).numpy()


class VOCSegmentation(Dataset):
    """VOC-format segmentation split. Items are ``transforms(image, mask)``; without transforms,
    ``(tv_tensors.Image uint8 (3,H,W), tv_tensors.Mask uint8 (H,W))``.

    ``cache`` (set by :func:`vocseg.data.cache.apply_cache`) holds every item decoded; items then
    come from RAM instead of disk. Cached tensors are shared, so transforms must not modify their
    inputs in place (torchvision's never do).
    """

    def __init__(
        self,
        root: str | Path | DatasetLayout,
        split: str = "train",
        transforms: Callable | None = None,
        ids: Sequence[str] | None = None,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        self.layout = root if isinstance(root, DatasetLayout) else resolve_layout(root)
        self.voc_root = self.layout.root  # the dataset's root: VOC2012, or the folder holding images/ and masks/
        self.split = split
        self.ids = list(ids) if ids is not None else self.layout.read_split(split)
        self.transforms = transforms
        self.num_classes = num_classes
        # Every item decoded (a data.cache.DecodedCache, indexed like the dataset), set by apply_cache.
        self.cache: Sequence[tuple[Tensor, Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, i: int) -> Path:
        return self.layout.image_path(self.ids[i])

    @functools.cached_property
    def mask_sizes(self) -> list[tuple[int, int]]:
        """``(height, width)`` of each sample from its mask's header (a mask is as large as its image), read
        once: evaluation loaders are built for every validation pass."""
        return [image_size(self.mask_path(i)) for i in range(len(self))]

    def mask_path(self, i: int) -> Path:
        """The mask of item ``i`` (for VOC ids of train_aug without their own: SegmentationClassAug's)."""
        return self.layout.mask_path(self.ids[i])

    def _decode_mask(self, i: int) -> Tensor:
        return decode_mask(self.mask_path(i), self.num_classes, self.layout.colours)

    def decode(self, i: int) -> tuple[Tensor, Tensor]:
        """Item ``i`` decoded from disk (never the cache): ``(image uint8 (3,H,W), mask uint8 (H,W))``,
        checked for matching sizes."""
        image = decode_image(self.image_path(i))
        mask = self._decode_mask(i)
        if image.shape[1:] != mask.shape:
            raise VocsegError(
                f"image {self.image_path(i)} is {image.shape[2]}x{image.shape[1]} but its mask "
                f"{self.mask_path(i)} is {mask.shape[1]}x{mask.shape[0]}"
            )
        return image, mask

    def load_tensors(self, i: int) -> tuple[Tensor, Tensor]:
        """``(image uint8 (3,H,W), mask uint8 (H,W))``: from the cache when there is one, else decoded."""
        if self.cache is not None:
            return self.cache[i]
        return self.decode(i)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(image uint8 (H,W,3), mask uint8 (H,W))`` numpy arrays, checked for matching sizes."""
        image, mask = self.load_tensors(i)
        # Copies: the tensors may be views into the shared cache, which callers must not be able to edit.
        return image.permute(1, 2, 0).numpy().copy(), mask.numpy().copy()

    def mask_digests(self) -> list[str]:
        """A short hash of each mask's size and pixels: what ``compare`` checks to pair two runs' images, so
        that two test sets with the same ids but other pictures are told apart."""
        digests = []
        for i in range(len(self)):
            mask = self.cache[i][1] if self.cache is not None else self._decode_mask(i)
            h = hashlib.blake2b(digest_size=8)
            h.update(repr(tuple(mask.shape)).encode())
            h.update(mask.contiguous().numpy().tobytes())
            digests.append(h.hexdigest())
        return digests

    def __getitem__(self, i: int):
        image, mask = self.load_tensors(i)
        image_t, mask_t = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transforms is not None:
            return self.transforms(image_t, mask_t)
        return image_t, mask_t

    def check(self) -> None:
        """Verify that every listed image and mask exists (fail before training starts, naming the file)."""
        for i in range(len(self)):
            for path, what in ((self.image_path(i), "image"), (self.mask_path(i), "mask")):
                if not path.is_file():
                    raise VocsegError(f"{what} for id {self.ids[i]!r} of split {self.split!r} not found: {path}")
