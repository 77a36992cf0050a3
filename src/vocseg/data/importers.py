"""Polygon annotations as people have them, turned into a VOC-format tree that :class:`~vocseg.data.voc.VOCSegmentation`
reads: labelme JSON files (:func:`import_labelme`) and COCO instance annotations (:func:`import_coco`).

Both write, under ``out``::

    out/VOCdevkit/VOC2012/JPEGImages/<id>.jpg                 the image (copied if a JPEG, else JPEG quality 95)
                         /SegmentationClass/<id>.png          palette PNG: class index per pixel, 255 = void
                         /ImageSets/Segmentation/{train,val,trainval}.txt   seeded 80/20 split (seed 0)
                         /class_names.txt                     one name a line, index 0 (background) first

Shapes are painted in the order they are listed (later over earlier), so an overlap takes the label of the
shape listed last. labelme's shapes are rasterised exactly as labelme's own ``shape_to_mask`` does (PIL's
ImageDraw, 10 px lines, 5 px points); COCO polygons exactly as pycocotools' ``annToMask`` does (its
5x-upsampled boundary walk, re-implemented here), and RLE masks (``counts`` as a list, or as COCO's compressed
string) are decoded column-major as pycocotools does. Void (255): labelme's ``__ignore__`` label (also
``_ignore_`` and ``ignore``), COCO's ``iscrowd: 1`` regions and any category named like that.

Every input is read and checked before anything is written, and the tree is built in a hidden sibling folder
that is renamed into place at the end: an error leaves nothing behind, and nothing that was there is replaced
(an existing non-empty ``VOC2012`` folder is refused). docs/import.md has the user's view.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import io
import json
import math
import os
import shlex
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..errors import VocsegError
from ..runtime.files import output_dir
from .classes import IGNORE_INDEX, voc_palette
from .layout import IMAGE_DIR, MASK_DIR, SPLIT_DIR, seeded_split
from .voc import MAX_IMAGE_PIXELS, _pil_rgb

__all__ = [
    "ImportReport",
    "import_labelme",
    "import_coco",
    "BACKGROUND_LABELS",
    "IGNORE_LABELS",
]

BACKGROUND_LABELS = frozenset({"_background_", "background"})  # class 0
IGNORE_LABELS = frozenset({"__ignore__", "_ignore_", "ignore"})  # void (255); labelme's __ignore__ is class -1
MAX_CLASSES = IGNORE_INDEX  # indices 0..254; 255 is void
JPEG_QUALITY = 95
# labelme's shape_to_mask defaults (labelme/utils/shape.py)
LABELME_LINE_WIDTH, LABELME_POINT_RADIUS = 10, 5
_EXIF_ORIENTATION = 0x0112


# ----------------------------------------------------------------------------- the report


@dataclass
class ImportReport:
    """What an import wrote: the ``VOC2012`` folder, how many images (and how they were split), the classes
    (index = position) and the pixels of each class, with void (255) counted apart."""

    root: Path
    source: str  # "labelme" or "coco"
    images: int
    classes: list[str]
    pixels: list[int]  # per class index, aligned with ``classes``
    void_pixels: int
    train: int = 0
    val: int = 0
    reencoded: int = 0  # images written as new JPEGs (not JPEG already, or EXIF-rotated)
    notes: list[str] = field(default_factory=list)

    @property
    def pixels_by_class(self) -> dict[str, int]:
        """Class name -> pixels, and ``"void (255)"`` last."""
        return {**dict(zip(self.classes, self.pixels)), "void (255)": self.void_pixels}

    def __str__(self) -> str:
        total = max(1, sum(self.pixels) + self.void_pixels)
        width = max(14, *(len(c) for c in self.classes))
        lines = [
            f"imported {self.images} images ({self.source}) into {self.root}: "
            f"{self.train} train, {self.val} val; {len(self.classes)} classes",
            f"  {'index':>5}  {'class':<{width}} {'pixels':>14} {'share':>7}",
        ]
        for i, (name, n) in enumerate(zip(self.classes, self.pixels)):
            lines.append(f"  {i:>5}  {name:<{width}} {n:>14,} {n / total:7.2%}")
        lines.append(f"  {IGNORE_INDEX:>5}  {'void':<{width}} {self.void_pixels:>14,} {self.void_pixels / total:7.2%}")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"train on it: {self.train_command()}")
        return "\n".join(lines)

    def train_command(self) -> str:
        """The ``vocseg train`` command for this dataset (its class_names.txt gives the classes)."""
        return f"vocseg train --data-root {shlex.quote(str(self.root))}"


# ----------------------------------------------------------------------------- class lists


def _given_classes(given: Sequence[str]) -> list[str]:
    """``class_names`` as given, with ignore names dropped and background put first (added if missing)."""
    names = [str(n).strip() for n in given if str(n).strip() not in IGNORE_LABELS]
    seen: set[str] = set()
    for n in names:
        if not n:
            raise VocsegError("class_names has an empty name")
        if n in seen:
            raise VocsegError(f"class_names lists {n!r} twice")
        seen.add(n)
    backgrounds = [i for i, n in enumerate(names) if n in BACKGROUND_LABELS]
    if len(backgrounds) > 1 or (backgrounds and backgrounds[0] != 0):
        raise VocsegError(
            f"class_names: the background ({' / '.join(sorted(BACKGROUND_LABELS))}) must be listed once and first "
            f"(it is class 0, the label of every unannotated pixel); got {names}"
        )
    return names if backgrounds else ["background", *names]


def _check_class_count(classes: Sequence[str], where: str) -> None:
    if len(classes) > MAX_CLASSES:
        raise VocsegError(
            f"{where}: {len(classes)} classes (background included) do not fit a VOC mask: at most {MAX_CLASSES} "
            f"(indices 0..{MAX_CLASSES - 1}; {IGNORE_INDEX} is void)"
        )


# ----------------------------------------------------------------------------- images


@dataclass
class _Image:
    """Where a sample's image comes from (a file, or bytes embedded in the annotation), and what it is."""

    where: str  # named in errors
    path: Path | None = None
    data: bytes | None = None
    orient: bool = True  # apply the EXIF orientation (image files, as labelme and OpenCV read them)
    height: int = 0
    width: int = 0
    copy: bool = False  # a JPEG whose stored pixels are the ones annotated: copied byte for byte

    def _open(self) -> Image.Image:
        return Image.open(io.BytesIO(self.data) if self.data is not None else self.path)

    def probe(self) -> None:
        """Size and format from the header, without decoding the pixels."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with self._open() as img:
                    w, h, fmt = img.width, img.height, img.format
                    turn = img.getexif().get(_EXIF_ORIENTATION, 1) if self.orient and fmt in ("JPEG", "MPO") else 1
        except FileNotFoundError:
            raise VocsegError(f"{self.where}: image not found") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise VocsegError(
                f"{self.where}: image too large to decode safely (over {MAX_IMAGE_PIXELS} pixels)"
            ) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise VocsegError(f"{self.where}: cannot read the image: {e}") from None
        if w * h > MAX_IMAGE_PIXELS:
            raise VocsegError(f"{self.where}: image too large to decode safely ({w}x{h} > {MAX_IMAGE_PIXELS} pixels)")
        turn = turn if turn in range(2, 9) else 1
        self.width, self.height = (h, w) if turn in (5, 6, 7, 8) else (w, h)
        self.copy = fmt == "JPEG" and turn == 1

    def write(self, target: Path) -> bool:
        """Write the image as ``target`` (a JPEG); True if it was re-encoded, False if copied."""
        if self.copy and self.path is not None:
            shutil.copyfile(self.path, target)
            return False
        if self.copy:
            target.write_bytes(self.data or b"")
            return False
        try:
            with self._open() as img:
                img.load()
                if self.orient:
                    img = ImageOps.exif_transpose(img)
                rgb = _pil_rgb(img)  # as vocseg's reader sees any mode: alpha composited on black, 16-bit scaled
        except (OSError, SyntaxError, ValueError) as e:
            raise VocsegError(f"{self.where}: cannot decode the image (truncated or corrupt?): {e}") from None
        if rgb.shape[:2] != (self.height, self.width):  # a header that lied
            raise VocsegError(
                f"{self.where}: image decodes to {rgb.shape[1]}x{rgb.shape[0]}, not {self.width}x{self.height}"
            )
        Image.fromarray(rgb).save(target, format="JPEG", quality=JPEG_QUALITY)
        return True


def _check_size(image: _Image, height: Any, width: Any, where: str) -> None:
    """The annotation's declared size (None: not given) against the image's."""
    for declared, actual in ((height, image.height), (width, image.width)):
        if declared is None:
            continue
        if not isinstance(declared, int) or isinstance(declared, bool) or declared != actual:
            raise VocsegError(
                f"{where}: the annotation says the image is {width}x{height} (width x height) but "
                f"{image.where} is {image.width}x{image.height}: the annotation belongs to another image "
                f"(or the image was resized or rotated after annotating)"
            )


# ----------------------------------------------------------------------------- the output tree


@dataclass
class _Sample:
    id: str
    where: str  # the annotation it comes from, named in errors
    image: _Image
    paint: Callable[[], np.ndarray]  # -> uint8 (H, W) class indices, 255 void


def _check_out(out: Path) -> Path:
    """``out/VOCdevkit/VOC2012``, refused if it holds anything; nothing is created yet."""
    root = out / "VOCdevkit" / "VOC2012"
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise VocsegError(f"{root} already exists and is not empty; refusing to overwrite it (choose another folder)")
    output_dir(out, "dataset folder", create=False)
    return root


def _check_ids(samples: Sequence[_Sample]) -> None:
    seen: dict[str, str] = {}
    for s in samples:
        if not s.id or s.id != s.id.strip() or any(c in s.id for c in "\n\r/\\"):
            raise VocsegError(f"{s.where}: {s.id!r} cannot be an image id (a file name without spaces around it)")
        if s.id in seen:
            raise VocsegError(f"{s.where} and {seen[s.id]} would both be written as image id {s.id!r}")
        seen[s.id] = s.where


def _write_tree(out: Path, samples: Sequence[_Sample], classes: list[str], source: str) -> ImportReport:
    """Write every sample into a hidden folder beside ``VOC2012``, then rename it into place. On any error the
    hidden folder goes, and so do the folders above it that this call created (left empty)."""
    root = out / "VOCdevkit" / "VOC2012"
    created = [p for p in (out, out / "VOCdevkit") if not p.exists()]
    output_dir(root.parent, "dataset folder")
    n = 0
    while (tmp := root.parent / f".VOC2012.importing-{os.getpid()}-{n}").exists():
        n += 1
    try:
        for sub in (IMAGE_DIR, MASK_DIR, SPLIT_DIR):
            output_dir(tmp / sub, "dataset folder")
        counts = np.zeros(256, np.int64)
        reencoded = 0
        palette = voc_palette()
        for s in samples:
            reencoded += s.image.write(tmp / IMAGE_DIR / f"{s.id}.jpg")
            mask = s.paint()
            counts += np.bincount(mask.reshape(-1), minlength=256)
            png = Image.fromarray(mask)  # mode "L"; putpalette makes it "P", as VOC's own masks
            png.putpalette(palette)
            png.save(tmp / MASK_DIR / f"{s.id}.png", format="PNG")
        train, val = seeded_split([s.id for s in samples])
        for name, ids in (("train", train), ("val", val), ("trainval", sorted(train + val))):
            (tmp / SPLIT_DIR / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        (tmp / "class_names.txt").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        if root.is_dir():
            root.rmdir()  # empty (checked); rename does not replace a folder everywhere
        os.rename(tmp, root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty
        if isinstance(e, OSError):  # disk full, permissions, VOC2012 filled meanwhile: one line, no traceback
            raise VocsegError(f"writing the dataset into {root} failed (nothing was kept): {e}") from None
        raise
    unused = [c for i, c in enumerate(classes) if i and not counts[i]]
    notes = [f"classes with no pixels: {', '.join(unused)}"] if unused else []
    if not val:
        notes.append("one image: val.txt is empty (add images, or validate on train)")
    return ImportReport(
        root,
        source,
        len(samples),
        classes,
        [int(c) for c in counts[: len(classes)]],
        int(counts[IGNORE_INDEX]),
        len(train),
        len(val),
        reencoded,
        notes,
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise VocsegError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise VocsegError(f"{what} {path} is a folder, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VocsegError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise VocsegError(f"cannot read {path}: {e}") from None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ----------------------------------------------------------------------------- labelme

# shape_type -> the number of points labelme requires (min, max); None: no bound
_LABELME_POINTS: dict[str, tuple[int, int | None]] = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "oriented_rectangle": (4, 4),
    "mask": (2, 2),
}


@dataclass
class _Shape:
    label: str
    kind: str
    points: list[tuple[float, float]]
    mask: np.ndarray | None = None  # shape_type "mask": bool (h, w) inside the box points[0]..points[1]


def _labelme_shapes(raw: dict, where: str) -> list[_Shape]:
    shapes = raw.get("shapes")
    if not isinstance(shapes, list):
        raise VocsegError(f'{where} is not a labelme file: no "shapes" list')
    out = []
    for i, s in enumerate(shapes):
        at = f"{where}: shape {i}"
        if not isinstance(s, dict) or not isinstance(s.get("label"), str) or not s["label"].strip():
            raise VocsegError(f"{at} has no label")
        kind = s.get("shape_type") or "polygon"  # labelme: None means polygon
        at = f"{at} ({kind} {s['label']!r})"
        if kind not in _LABELME_POINTS:
            raise VocsegError(f"{at}: unknown shape_type {kind!r}; known: {', '.join(_LABELME_POINTS)}")
        pts = s.get("points")
        if not isinstance(pts, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(_finite(v) for v in p) for p in pts
        ):
            raise VocsegError(f"{at}: points must be a list of [x, y] numbers")
        lo, hi = _LABELME_POINTS[kind]
        if len(pts) < lo or (hi is not None and len(pts) > hi):
            need = f"at least {lo}" if hi is None else (str(lo) if lo == hi else f"{lo} to {hi}")
            raise VocsegError(f"{at} has {len(pts)} points; a {kind} needs {need}")
        mask = np.asarray(_b64_image(s.get("mask"), at)) > 0 if kind == "mask" else None
        out.append(_Shape(s["label"], kind, [(float(x), float(y)) for x, y in pts], mask))
    return out


def _b64_image(text: Any, where: str) -> Image.Image:
    """A base64 image (labelme's imageData, a mask shape's mask), decoded (a ``data:...;base64,`` prefix is fine)."""
    if not isinstance(text, str):
        raise VocsegError(f"{where}: expected a base64-encoded image")
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=False)
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except (binascii.Error, ValueError, OSError, SyntaxError) as e:
        raise VocsegError(f"{where}: the base64 image cannot be decoded: {e}") from None


def _paint_labelme(height: int, width: int, shapes: Sequence[_Shape], values: Sequence[int]) -> np.ndarray:
    """labelme's ``shapes_to_label``: each shape as ``shape_to_mask`` draws it, later ones over earlier ones
    (drawing each shape's value straight onto one canvas gives the same pixels as its mask-then-assign)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for shape, v in zip(shapes, values):
        xy = shape.points
        if shape.kind == "circle":
            (cx, cy), (px, py) = xy
            d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
            draw.ellipse([(cx - d, cy - d), (cx + d, cy + d)], outline=v, fill=v)
        elif shape.kind == "rectangle":
            (x0, y0), (x1, y1) = xy
            draw.rectangle([(min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))], outline=v, fill=v)
        elif shape.kind in ("line", "linestrip"):
            draw.line(xy=xy, fill=v, width=LABELME_LINE_WIDTH)
        elif shape.kind == "point":
            (cx, cy), r = xy[0], LABELME_POINT_RADIUS
            draw.ellipse([(cx - r, cy - r), (cx + r, cy + r)], outline=v, fill=v)
        elif shape.kind == "mask":
            assert shape.mask is not None
            arr = np.array(canvas)
            (x1, y1), _ = np.asarray(xy).astype(int)
            m = shape.mask[max(0, -y1) :, max(0, -x1) :]
            y1, x1 = max(0, y1), max(0, x1)
            m = m[: height - y1, : width - x1]
            arr[y1 : y1 + m.shape[0], x1 : x1 + m.shape[1]][m] = v
            canvas = Image.fromarray(arr)
            draw = ImageDraw.Draw(canvas)
        else:  # polygon, oriented_rectangle
            draw.polygon(xy=xy, outline=v, fill=v)
    return np.array(canvas, dtype=np.uint8)


def import_labelme(src: Path, out: Path, *, class_names: list[str] | None = None) -> ImportReport:
    """Every labelme JSON file directly in ``src`` (``*.json``, sorted; the image id is the file's stem) to a
    VOC-format tree under ``out``; see the module docstring for the layout.

    The image is ``imagePath`` (relative to the JSON file, EXIF orientation applied as labelme does), or the
    embedded ``imageData`` where that file is missing. Classes: ``class_names`` (labelme's ``labels.txt`` as it
    is: ignore names are dropped, background is put first if missing; a shape with another label is an error),
    else background and the sorted labels found."""
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise VocsegError(f"labelme folder not found: {src}" if not src.exists() else f"{src} is not a folder")
    files = sorted(p for p in src.glob("*.json") if p.is_file())
    if not files:
        raise VocsegError(f"no labelme files (*.json) in {src}")
    _check_out(out)
    given = _given_classes(class_names) if class_names is not None else None

    parsed: list[tuple[Path, list[_Shape], _Image]] = []
    for path in files:
        raw = _read_json(path, "labelme file")
        if not isinstance(raw, dict):
            raise VocsegError(f"{path} is not a labelme file: a JSON object is expected")
        shapes = _labelme_shapes(raw, str(path))
        image = _labelme_image(raw, path)
        _check_size(image, raw.get("imageHeight"), raw.get("imageWidth"), str(path))
        parsed.append((path, shapes, image))

    found = {s.label for _, shapes, _ in parsed for s in shapes} - IGNORE_LABELS - BACKGROUND_LABELS
    classes = given if given is not None else ["background", *sorted(found)]
    _check_class_count(classes, str(src))
    index = {name: i for i, name in enumerate(classes)}
    index.update({name: 0 for name in BACKGROUND_LABELS})
    index.update({name: IGNORE_INDEX for name in IGNORE_LABELS})
    samples = []
    for path, shapes, image in parsed:
        for s in shapes:
            if s.label not in index:
                raise VocsegError(
                    f"{path}: label {s.label!r} is not in the class list ({', '.join(classes)}; "
                    f"{' / '.join(sorted(IGNORE_LABELS))} mark void)"
                )
        values = [index[s.label] for s in shapes]
        paint = functools.partial(_paint_labelme, image.height, image.width, shapes, values)
        samples.append(_Sample(path.stem, str(path), image, paint))
    _check_ids(samples)
    return _write_tree(out, samples, classes, "labelme")


def _labelme_image(raw: dict, path: Path) -> _Image:
    rel = raw.get("imagePath")
    candidate = None
    if isinstance(rel, str) and rel:
        candidate = path.parent / PureWindowsPath(rel).as_posix()  # labelme on Windows writes backslashes
    if candidate is not None and candidate.is_file():
        image = _Image(where=f"{candidate} (imagePath of {path})", path=candidate)
    elif raw.get("imageData"):
        data = raw["imageData"]
        if not isinstance(data, str):
            raise VocsegError(f"{path}: imageData is not a base64 string")
        text = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
        try:
            blob = base64.b64decode(text)
        except (binascii.Error, ValueError) as e:
            raise VocsegError(f"{path}: imageData is not valid base64: {e}") from None
        # labelme stores the image already oriented and reads imageData without EXIF rotation
        image = _Image(where=f"the imageData of {path}", data=blob, orient=False)
    else:
        missing = f"{candidate} (its imagePath) does not exist" if candidate else "it has no imagePath"
        raise VocsegError(f"{path}: no image: {missing} and it has no imageData")
    image.probe()
    return image


# ----------------------------------------------------------------------------- COCO


def coco_polygon_mask(xy: Sequence[float], height: int, width: int) -> np.ndarray:
    """One COCO polygon ``[x0, y0, x1, y1, ...]`` as pycocotools rasterises it (``rleFrPoly``): the outline
    walked on a 5x grid, its crossings of pixel columns snapped down, and each column filled between
    crossings. Returns bool (height, width)."""
    scale = 5.0
    p = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    x = np.trunc(scale * p[:, 0] + 0.5).astype(np.int64)  # C's (int) truncates toward zero
    y = np.trunc(scale * p[:, 1] + 0.5).astype(np.int64)
    xs, ys, xe, ye = x, y, np.roll(x, -1), np.roll(y, -1)
    dx, dy = np.abs(xe - xs), np.abs(ye - ys)
    along_x = dx >= dy
    n = np.where(along_x, dx, dy) + 1  # points per edge, both ends included
    edge = np.repeat(np.arange(len(x)), n)
    t = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)  # 0..n-1 within each edge, from its start
    xs, ys, xe, ye, dx, dy, along_x = (a[edge] for a in (xs, ys, xe, ye, dx, dy, along_x))
    # pycocotools steps from the lower end (of x, or of y for steep edges) with t counted from the edge's
    # start: a flipped edge uses s and the origin of the swapped ends.
    flip = (along_x & (xs > xe)) | (~along_x & (ys > ye))
    x0, y0 = np.where(flip, xe, xs), np.where(flip, ye, ys)
    x1, y1 = np.where(flip, xs, xe), np.where(flip, ys, ye)
    run = np.where(along_x, dx, dy)
    tt = np.where(flip, run - t, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(along_x, (y1 - y0) / np.where(dx == 0, 1, dx), (x1 - x0) / np.where(dy == 0, 1, dy))
    s = np.where(run == 0, 0.0, s)  # a repeated vertex: one point (C computes 0/0 there, never used)
    u = np.where(along_x, tt + x0, np.trunc(x0 + s * tt + 0.5).astype(np.int64))
    v = np.where(along_x, np.trunc(y0 + s * tt + 0.5).astype(np.int64), tt + y0)
    # where the walk crosses from one upsampled column to the next: a column boundary if it is a whole pixel
    j = np.nonzero(u[1:] != u[:-1])[0] + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = (np.minimum(v[j], v[j - 1]).astype(np.float64) + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0, height))
    pos = xd[keep].astype(np.int64) * height + yd[keep].astype(np.int64)  # column-major pixel index
    toggles = np.bincount(pos, minlength=height * width + 1)[: height * width]
    inside = (np.cumsum(toggles) & 1).astype(bool)  # repeated crossings cancel in pairs, as the RLE merge does
    return inside.reshape(width, height).T


def _rle_from_string(s: str, where: str) -> list[int]:
    """COCO's compressed RLE string (``rleFrString``): each count in 5-bit groups, one character (48 + 6 bits)
    per group, bit 5 = more groups follow, the last group's bit 4 the sign; from the third count on, a count is
    stored as the difference from the one two before it."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise VocsegError(f"{where}: the compressed RLE string ends inside a count")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise VocsegError(f"{where}: the compressed RLE string has {s[p]!r}, outside COCO's alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise VocsegError(f"{where}: the compressed RLE string decodes to a negative count")
        counts.append(x)
    return counts


_Segment = tuple[str, Any]  # ("poly", [polygon, ...]) or ("rle", counts): checked, ready to paint


def _coco_segment(seg: Any, height: int, width: int, where: str) -> _Segment:
    """An annotation's ``segmentation`` checked (and a compressed RLE string decoded), before anything is written."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or [height, width] != size:
            raise VocsegError(f"{where}: RLE size {size} is not the image's [height, width] = {[height, width]}")
        if isinstance(counts, str):
            counts = _rle_from_string(counts, where)
        elif not (
            isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        ):
            raise VocsegError(f"{where}: RLE counts must be a list of non-negative integers or a compressed string")
        if sum(counts) != height * width:
            raise VocsegError(
                f"{where}: RLE counts add up to {sum(counts)}, not {height}x{width} = {height * width} pixels"
            )
        return "rle", counts
    if not isinstance(seg, list) or not seg:
        raise VocsegError(f"{where} has no segmentation (polygons or RLE): a detection-only file?")
    for i, poly in enumerate(seg):
        if not isinstance(poly, list) or not all(_finite(v) for v in poly):
            raise VocsegError(f"{where}: polygon {i} must be a flat list of numbers [x0, y0, x1, y1, ...]")
        if len(poly) % 2:
            raise VocsegError(f"{where}: polygon {i} has an odd number of coordinates ({len(poly)})")
        if len(poly) < 6:
            raise VocsegError(f"{where}: polygon {i} has {len(poly) // 2} points; a polygon needs at least 3")
    return "poly", seg


def decode_coco_rle(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """Uncompressed COCO RLE counts (runs of 0, 1, 0, ... in column-major order, as pycocotools) to bool
    (height, width). ``sum(counts)`` must be ``height * width``."""
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, np.asarray(counts, dtype=np.int64)).reshape(width, height).T


def _segment_mask(segment: _Segment, height: int, width: int) -> np.ndarray:
    kind, data = segment
    if kind == "rle":
        return decode_coco_rle(data, height, width)
    mask = np.zeros((height, width), bool)
    for poly in data:  # the parts of one object: their union, as pycocotools' annToMask
        mask |= coco_polygon_mask(poly, height, width)
    return mask


def _coco_id(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def import_coco(annotations: Path, images: Path, out: Path) -> ImportReport:
    """A COCO instance-annotation file (``images``, ``annotations``, ``categories``) and the folder its
    ``file_name`` paths are relative to, to a VOC-format tree under ``out``; see the module docstring for the
    layout.

    Classes: background, then the categories in id order (a category named background is class 0, one named
    ignore is void). Objects are painted in annotation order; ``iscrowd: 1`` regions are void (255); images
    without annotations are all background. The image id is ``file_name`` without its extension (folders joined
    with ``_``). Images are read with their EXIF orientation applied (as labelme, OpenCV and detectron2 do)."""
    annotations, images, out = (Path(p).expanduser() for p in (annotations, images, out))
    if not images.is_dir():
        raise VocsegError(f"image folder not found: {images}" if not images.exists() else f"{images} is not a folder")
    _check_out(out)
    raw = _read_json(annotations, "COCO annotation file")
    where = str(annotations)
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in ("images", "categories")):
        raise VocsegError(f'{where} is not a COCO annotation file: it needs "images" and "categories" lists')
    anns = raw.get("annotations") or []
    if not isinstance(anns, list):
        raise VocsegError(f'{where}: "annotations" must be a list')

    classes, value = _coco_classes(raw["categories"], where)
    by_id = _coco_images(raw["images"], images, where)
    objects = _coco_objects(anns, by_id, value, where)

    samples = []
    for key, (entry, image) in by_id.items():
        stem = PureWindowsPath(entry["file_name"]).with_suffix("").as_posix().strip("/").replace("/", "_")
        paint = functools.partial(_paint_coco, image.height, image.width, objects[key])
        samples.append(_Sample(stem, f"{where}: image {key} ({entry['file_name']})", image, paint))
    _check_ids(samples)
    return _write_tree(out, samples, classes, "coco")


def _coco_classes(categories: list, where: str) -> tuple[list[str], dict[int, int]]:
    """Class names (background first, then categories in id order) and each category id's mask value."""
    for c in categories:
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise VocsegError(f'{where}: every category needs an integer "id" and a "name"; got {c!r}')
    classes, value = ["background"], {}
    for c in sorted(categories, key=lambda c: c["id"]):
        if c["id"] in value:
            raise VocsegError(f"{where}: category id {c['id']} is listed twice")
        name = c["name"]
        if name in BACKGROUND_LABELS:
            value[c["id"]] = 0
        elif name in IGNORE_LABELS:
            value[c["id"]] = IGNORE_INDEX
        elif name in classes:
            raise VocsegError(f"{where}: two categories are named {name!r}; class names must be unique")
        else:
            value[c["id"]] = len(classes)
            classes.append(name)
    _check_class_count(classes, where)
    return classes, value


def _coco_images(entries: list, images: Path, where: str) -> dict[Any, tuple[dict, _Image]]:
    """Each listed image, probed and its size checked, by id."""
    by_id: dict[Any, tuple[dict, _Image]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _coco_id(entry.get("id")) or not isinstance(entry.get("file_name"), str):
            raise VocsegError(f'{where}: every image needs an "id" and a "file_name"; got {entry!r}')
        if entry["id"] in by_id:
            raise VocsegError(f"{where}: image id {entry['id']} is listed twice")
        path = images / PureWindowsPath(entry["file_name"]).as_posix()
        image = _Image(where=f"{path} (image {entry['id']} of {where})", path=path)
        image.probe()
        _check_size(image, entry.get("height"), entry.get("width"), f"{where}: image {entry['id']}")
        by_id[entry["id"]] = (entry, image)
    if not by_id:
        raise VocsegError(f"{where} lists no images")
    return by_id


def _coco_objects(anns: list, by_id: dict, value: dict[int, int], where: str) -> dict[Any, list[tuple[int, _Segment]]]:
    """Each image's objects in annotation order, as (mask value, segment); crowd regions are void."""
    objects: dict[Any, list[tuple[int, _Segment]]] = {k: [] for k in by_id}  # image id -> (value, segment)
    for i, a in enumerate(anns):
        at = f"{where}: annotation {a.get('id', f'#{i}') if isinstance(a, dict) else f'#{i}'}"
        if not isinstance(a, dict):
            raise VocsegError(f"{at} is not an object")
        if not _coco_id(a.get("image_id")) or a["image_id"] not in by_id:
            raise VocsegError(f'{at} refers to image id {a.get("image_id")!r}, which is not in "images"')
        if not _coco_id(a.get("category_id")) or a["category_id"] not in value:
            raise VocsegError(f'{at} has category_id {a.get("category_id")!r}, which is not in "categories"')
        image = by_id[a["image_id"]][1]
        segment = _coco_segment(a.get("segmentation"), image.height, image.width, at)
        objects[a["image_id"]].append((IGNORE_INDEX if a.get("iscrowd") else value[a["category_id"]], segment))
    return objects


def _paint_coco(height: int, width: int, objects: Sequence[tuple[int, _Segment]]) -> np.ndarray:
    label = np.zeros((height, width), np.uint8)
    for v, segment in objects:  # annotation order: later objects over earlier ones
        label[_segment_mask(segment, height, width)] = v
    return label
