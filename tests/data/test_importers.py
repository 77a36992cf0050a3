"""Polygon-annotation importers (vocseg.data.importers): small labelme and COCO files written here, with tiny
images, imported to VOC trees whose masks are checked pixel for pixel against masks worked out by hand (or, for
COCO's rasteriser and compressed RLE, recorded from pycocotools 2.0.11); class lists, the refusals (each naming
its file), and that VOCSegmentation reads what was written."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vocseg.data.classes import IGNORE_INDEX, voc_palette
from vocseg.data.importers import (
    ImportReport,
    coco_polygon_mask,
    decode_coco_rle,
    import_coco,
    import_labelme,
)
from vocseg.data.layout import read_class_names
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError

H, W = 12, 16  # every labelme test image: 16 wide, 12 tall


def _pixels(h: int, w: int) -> np.ndarray:
    ramp = (np.arange(w)[None, :, None] * 3 + np.arange(h)[:, None, None] * 5 + np.array([40, 90, 140])) % 256
    return ramp.astype(np.uint8)


def _image(path: Path, h: int = H, w: int = W, **save) -> Path:
    Image.fromarray(_pixels(h, w)).save(path, **save)
    return path


def _shape(label: str, points, kind: str = "polygon") -> dict:
    return {"label": label, "points": [list(map(float, p)) for p in points], "shape_type": kind, "group_id": None}


def _labelme(folder: Path, stem: str, shapes: list[dict], image: str | None = None, h=H, w=W, data=None) -> Path:
    """A labelme file ``stem.json`` in ``folder``; its image ``image`` (default ``stem.png``, written here
    unless ``data`` is given: then only embedded, as base64)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = image or f"{stem}.png"
    if data is None and not (folder / image).exists():
        _image(folder / image, h, w)
    raw = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image,
        "imageData": None if data is None else base64.b64encode(data).decode(),
        "imageHeight": h,
        "imageWidth": w,
    }
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(raw))
    return path


def _mask(out: Path, image_id: str) -> np.ndarray:
    with Image.open(out / "VOCdevkit/VOC2012/SegmentationClass" / f"{image_id}.png") as img:
        assert img.mode == "P" and img.getpalette() == voc_palette()[: len(img.getpalette())]
        return np.array(img)


def _expected(h: int = H, w: int = W) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


# ----------------------------------------------------------------------------- labelme: pixels


def test_square_polygon_overlap_and_ignore(tmp_path):
    """An axis-aligned square polygon covers its corners inclusive (PIL's polygon with its outline, as labelme);
    a later shape paints over an earlier one; __ignore__ is void."""
    src = tmp_path / "src"
    _labelme(
        src,
        "a",
        [
            _shape("dog", [(2, 2), (6, 2), (6, 6), (2, 6)]),
            _shape("cat", [(5, 5), (9, 5), (9, 8), (5, 8)]),  # over the dog's corner
            _shape("__ignore__", [(12, 0), (14, 0), (14, 2), (12, 2)]),
        ],
    )
    _labelme(
        src, "b", [_shape("cat", [(5, 5), (9, 5), (9, 8), (5, 8)]), _shape("dog", [(2, 2), (6, 2), (6, 6), (2, 6)])]
    )
    report = import_labelme(src, tmp_path / "out")
    assert report.classes == ["background", "cat", "dog"]  # background + the labels found, sorted

    a = _expected()
    a[2:7, 2:7] = 2  # dog: rows and columns 2..6
    a[5:9, 5:10] = 1  # cat, later: rows 5..8, columns 5..9, over the dog
    a[0:3, 12:15] = IGNORE_INDEX
    np.testing.assert_array_equal(_mask(tmp_path / "out", "a"), a)
    b = _expected()
    b[5:9, 5:10] = 1
    b[2:7, 2:7] = 2  # listed last: the dog wins the overlap here
    np.testing.assert_array_equal(_mask(tmp_path / "out", "b"), b)

    assert report.images == 2 and report.void_pixels == 9
    assert report.pixels == [int((a == 0).sum() + (b == 0).sum()), int((a == 1).sum() + (b == 1).sum()), 25 + 25 - 4]
    assert report.pixels_by_class["void (255)"] == 9


def test_rectangle_circle_point_line_and_ignore_aliases(tmp_path):
    src = tmp_path / "src"
    shapes = [
        _shape("box", [(8, 4), (3, 1)], "rectangle"),  # corners in either order: rows 1..4, columns 3..8
        _shape("ball", [(10, 7), (13, 7)], "circle"),  # centre (10, 7), radius 3
        _shape("_ignore_", [(0, 10), (1, 10), (1, 11), (0, 11)]),
        _shape("ignore", [(15, 11), (15, 11), (15, 11)]),  # a degenerate polygon: one pixel
    ]
    _labelme(src, "s", shapes)
    report = import_labelme(src, tmp_path / "out")
    assert report.classes == ["background", "ball", "box"]
    want = _expected()
    want[1:5, 3:9] = 2
    disc = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if dx * dx + dy * dy <= 12.25]  # |d| <= 3.5
    for dy, dx in disc:
        want[7 + dy, 10 + dx] = 1
    want[10:12, 0:2] = IGNORE_INDEX
    want[11, 15] = IGNORE_INDEX
    np.testing.assert_array_equal(_mask(tmp_path / "out", "s"), want)


def _labelme_reference(h: int, w: int, shapes: list[dict], values: dict[str, int]) -> np.ndarray:
    """labelme's own ``shapes_to_label`` (labelme/utils/shape.py, ``shape_to_mask`` with its defaults: 10 px lines,
    5 px points): one boolean mask per shape, assigned in order."""
    cls = np.zeros((h, w), np.int32)
    for s in shapes:
        mask = Image.fromarray(np.zeros((h, w), np.uint8))
        draw = ImageDraw.Draw(mask)
        xy = [tuple(p) for p in s["points"]]
        kind = s["shape_type"]
        if kind == "circle":
            (cx, cy), (px, py) = xy
            d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
            draw.ellipse([cx - d, cy - d, cx + d, cy + d], outline=1, fill=1)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = xy
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
        elif kind in ("line", "linestrip"):
            draw.line(xy=xy, fill=1, width=10)
        elif kind == "point":
            (cx, cy), r = xy[0], 5
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
        else:
            draw.polygon(xy=xy, outline=1, fill=1)
        cls[np.array(mask, dtype=bool)] = values[s["label"]]
    return cls.astype(np.uint8)


def test_every_shape_kind_as_labelme_draws_it(tmp_path):
    """Random shapes of every kind, with fractional and out-of-image points: the same pixels as labelme's
    mask-per-shape shapes_to_label run here with the same Pillow."""
    rng = np.random.default_rng(0)
    h, w = 40, 50
    kinds = {"polygon": 5, "rectangle": 2, "circle": 2, "line": 2, "linestrip": 4, "point": 1}
    shapes = []
    for i in range(30):
        kind = list(kinds)[i % len(kinds)]
        pts = rng.uniform(-5, 55, size=(kinds[kind], 2)).round(2)
        shapes.append(_shape(["a", "b", "__ignore__", "_background_"][i % 4], pts, kind))
    _labelme(tmp_path / "src", "r", shapes, h=h, w=w)
    report = import_labelme(tmp_path / "src", tmp_path / "out")
    assert report.classes == ["background", "a", "b"]
    want = _labelme_reference(h, w, shapes, {"a": 1, "b": 2, "__ignore__": IGNORE_INDEX, "_background_": 0})
    np.testing.assert_array_equal(_mask(tmp_path / "out", "r"), want)


# ----------------------------------------------------------------------------- labelme: images, classes, splits


def test_images_copied_reencoded_embedded_and_read_by_vocsegmentation(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    jpeg = _image(src / "photo.jpg", quality=90)
    _labelme(src, "j", [_shape("cat", [(1, 1), (4, 1), (4, 4)])], image="photo.jpg")  # a JPEG: copied
    _labelme(src, "p", [_shape("dog", [(1, 1), (4, 1), (4, 4)])])  # a PNG: re-encoded
    buf = io.BytesIO()
    Image.fromarray(_pixels(H, W)).save(buf, format="PNG")
    _labelme(src, "e", [], image="gone.png", data=buf.getvalue())  # imagePath missing: imageData
    _labelme(src, "sub", [_shape("cat", [(0, 0), (3, 0), (3, 3)])], image="..\\src\\photo.jpg")  # Windows path
    report = import_labelme(src, tmp_path / "out")
    voc = tmp_path / "out/VOCdevkit/VOC2012"
    assert (voc / "JPEGImages/j.jpg").read_bytes() == jpeg.read_bytes()
    assert (voc / "JPEGImages/sub.jpg").read_bytes() == jpeg.read_bytes()
    assert report.reencoded == 2
    for name in ("p", "e"):
        with Image.open(voc / "JPEGImages" / f"{name}.jpg") as img:
            assert img.format == "JPEG" and img.size == (W, H)
            assert np.abs(np.asarray(img, np.int16) - _pixels(H, W)).max() <= 12  # quality 95
    assert not _mask(tmp_path / "out", "e").any()  # no shapes: all background

    assert (voc / "class_names.txt").read_text() == "background\ncat\ndog\n"
    train = (voc / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    trainval = (voc / "ImageSets/Segmentation/trainval.txt").read_text().split()
    assert len(val) == 1 and sorted(train + val) == trainval == ["e", "j", "p", "sub"]
    assert (report.train, report.val) == (3, 1)

    for split in ("train", "val"):
        ds = VOCSegmentation(tmp_path / "out", split, num_classes=len(report.classes))
        for i in range(len(ds)):
            image, mask = ds[i]
            assert tuple(image.shape) == (3, H, W) and tuple(mask.shape) == (H, W)
            np.testing.assert_array_equal(mask.numpy(), _mask(tmp_path / "out", ds.ids[i]))


def test_exif_rotated_jpeg_is_read_upright(tmp_path):
    """labelme shows (and sizes) a JPEG with its EXIF orientation applied; so does the import, re-encoding it."""
    src = tmp_path / "src"
    src.mkdir()
    raw = np.zeros((8, 16, 3), np.uint8)
    raw[:, :8] = (250, 0, 0)  # left half red, right half blue as stored
    raw[:, 8:] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: stored left becomes the top
    Image.fromarray(raw).save(src / "r.jpg", exif=exif, quality=95)
    _labelme(src, "r", [_shape("x", [(0, 0), (7, 0), (7, 7)])], image="r.jpg", h=16, w=8)
    report = import_labelme(src, tmp_path / "out")
    assert report.reencoded == 1
    with Image.open(tmp_path / "out/VOCdevkit/VOC2012/JPEGImages/r.jpg") as img:
        assert img.size == (8, 16) and not img.getexif().get(0x0112)
        arr = np.asarray(img.convert("RGB"), np.int16)
    assert arr[:8, :, 0].mean() > 200 and arr[8:, :, 2].mean() > 200


def test_split_is_seeded_and_independent_of_listing(tmp_path):
    for run in ("one", "two"):
        src = tmp_path / f"src_{run}"
        names = [f"img{i:02d}" for i in range(10)]
        for name in names if run == "one" else reversed(names):
            _labelme(src, name, [])
        report = import_labelme(src, tmp_path / f"out_{run}")
        assert (report.train, report.val) == (8, 2)
    sets = "VOCdevkit/VOC2012/ImageSets/Segmentation"
    for split in ("train", "val", "trainval"):
        assert (tmp_path / "out_one" / sets / f"{split}.txt").read_text() == (
            tmp_path / "out_two" / sets / f"{split}.txt"
        ).read_text()


def test_given_class_list_labelme_labels_txt(tmp_path):
    """labelme's labels.txt as it is: __ignore__ dropped, _background_ first; the order fixes the indices."""
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nzebra\n\ncat\nunused\n")
    names = read_class_names(tmp_path / "labels.txt")
    _labelme(tmp_path / "src", "a", [_shape("cat", [(0, 0), (2, 0), (2, 2), (0, 2)])])
    report = import_labelme(tmp_path / "src", tmp_path / "out", class_names=names)
    assert report.classes == ["_background_", "zebra", "cat", "unused"]
    want = _expected()
    want[0:3, 0:3] = 2
    np.testing.assert_array_equal(_mask(tmp_path / "out", "a"), want)
    assert "unused" in str(report) and "zebra" in " ".join(report.notes)  # classes with no pixels are named
    # without a background name, background is put first
    report = import_labelme(tmp_path / "src", tmp_path / "out2", class_names=["cat"])
    assert report.classes == ["background", "cat"]


def test_report_table():
    report = ImportReport(Path("/x/VOC2012"), "labelme", 2, ["background", "cat"], [75, 20], 5, 1, 1)
    text = str(report)
    assert "imported 2 images (labelme) into /x/VOC2012: 1 train, 1 val; 2 classes" in text
    lines = text.splitlines()
    assert lines[2].split() == ["0", "background", "75", "75.00%"]
    assert lines[3].split() == ["1", "cat", "20", "20.00%"]
    assert lines[4].split() == ["255", "void", "5", "5.00%"]
    assert lines[-1] == "train on it: vocseg train --data-root /x/VOC2012"


# ----------------------------------------------------------------------------- labelme: refusals


def test_unknown_label_names_file_label_and_classes(tmp_path):
    path = _labelme(tmp_path / "src", "a", [_shape("horse", [(0, 0), (2, 0), (2, 2)])])
    with pytest.raises(VocsegError) as e:
        import_labelme(tmp_path / "src", tmp_path / "out", class_names=["background", "cat", "dog"])
    assert str(path) in str(e.value) and "'horse'" in str(e.value) and "background, cat, dog" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "problem",
    ["invalid json", "two-point polygon", "size disagrees", "no shapes list", "image missing", "unknown shape"],
)
def test_bad_labelme_file_is_refused_naming_it(tmp_path, problem):
    src = tmp_path / "src"
    _labelme(src, "good", [_shape("cat", [(0, 0), (2, 0), (2, 2)])])
    path = _labelme(src, "bad", [_shape("cat", [(0, 0), (2, 0), (2, 2)])])
    raw = json.loads(path.read_text())
    if problem == "invalid json":
        path.write_text(path.read_text()[:-5])
    elif problem == "two-point polygon":
        raw["shapes"].append(_shape("cat", [(0, 0), (5, 5)]))
    elif problem == "size disagrees":
        raw["imageHeight"] = H + 1
    elif problem == "no shapes list":
        del raw["shapes"]
    elif problem == "image missing":
        (src / "bad.png").unlink()
    elif problem == "unknown shape":
        raw["shapes"].append(_shape("cat", [(0, 0), (5, 5)], "spline"))
    if problem != "invalid json":
        path.write_text(json.dumps(raw))
    with pytest.raises(VocsegError) as e:
        import_labelme(src, tmp_path / "out")
    assert str(path) in str(e.value)
    expected = {
        "invalid json": "not valid JSON",
        "two-point polygon": "has 2 points; a polygon needs at least 3",
        "size disagrees": "16x13",
        "no shapes list": "not a labelme file",
        "image missing": "no image",
        "unknown shape": "unknown shape_type 'spline'",
    }[problem]
    assert expected in str(e.value)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_existing_tree_is_not_touched(tmp_path):
    _labelme(tmp_path / "src", "a", [])
    voc = tmp_path / "out/VOCdevkit/VOC2012"
    voc.mkdir(parents=True)
    (voc / "mine.txt").write_text("keep")
    with pytest.raises(VocsegError, match="already exists and is not empty"):
        import_labelme(tmp_path / "src", tmp_path / "out")
    assert [p.name for p in voc.iterdir()] == ["mine.txt"] and (voc / "mine.txt").read_text() == "keep"
    (voc / "mine.txt").unlink()  # an empty VOC2012 folder is fine
    import_labelme(tmp_path / "src", tmp_path / "out")
    assert (voc / "SegmentationClass/a.png").is_file()
    assert [p.name for p in voc.parent.iterdir()] == ["VOC2012"]  # no hidden work folder left


def test_too_many_classes(tmp_path):
    _labelme(tmp_path / "src", "a", [])
    with pytest.raises(VocsegError, match="256 classes .* at most 255"):
        import_labelme(tmp_path / "src", tmp_path / "out", class_names=[f"c{i}" for i in range(255)])


def test_failure_while_writing_leaves_nothing(tmp_path):
    """A PNG whose header is fine but whose pixels are cut short fails only when decoded, after writing began:
    the half-written tree is removed, and so are the folders the import created."""
    src = tmp_path / "src"
    _labelme(src, "a", [])
    _labelme(src, "b", [])
    data = (src / "b.png").read_bytes()
    (src / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(VocsegError, match="b.png.*cannot decode"):
        import_labelme(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- COCO

# pycocotools 2.0.11: mask.frPyObjects([TRIANGLE], 7, 9), decoded
TRIANGLE = [1.5, 0.8, 8.2, 3.0, 2.6, 6.4]
TRIANGLE_MASK = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ],
    bool,
)
# pycocotools 2.0.11: mask.encode of RLE_MASK, a compressed string
RLE_STRING = "5192K0000000<N"
RLE_MASK = np.zeros((7, 9), bool)
RLE_MASK[1:4, 2:7] = True
RLE_MASK[5, 0] = RLE_MASK[6, 8] = True


def test_coco_rasteriser_matches_pycocotools():
    np.testing.assert_array_equal(coco_polygon_mask(TRIANGLE, 7, 9), TRIANGLE_MASK)
    square = coco_polygon_mask([2, 2, 6, 2, 6, 6, 2, 6], 8, 8)  # COCO: a 4x4 box is 16 pixels
    want = np.zeros((8, 8), bool)
    want[2:6, 2:6] = True
    np.testing.assert_array_equal(square, want)
    from vocseg.data.importers import _rle_from_string

    np.testing.assert_array_equal(decode_coco_rle(_rle_from_string(RLE_STRING, "x"), 7, 9), RLE_MASK)


def _coco(tmp_path: Path, anns: list[dict], images: list[dict] | None = None, categories=None) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    _image(folder / "a.png", 8, 10)
    _image(folder / "b.jpg", 7, 9, quality=90)
    images = images or [
        {"id": 1, "file_name": "a.png", "height": 8, "width": 10},
        {"id": 2, "file_name": "b.jpg", "height": 7, "width": 9},
    ]
    categories = categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path, folder


def _ann(i: int, image: int, cat: int, seg, crowd: int = 0) -> dict:
    return {"id": i, "image_id": image, "category_id": cat, "segmentation": seg, "iscrowd": crowd}


def test_coco_polygons_overlap_crowd_rle_and_empty_image(tmp_path):
    anns = [
        _ann(10, 1, 3, [[2, 2, 6, 2, 6, 6, 2, 6]]),  # cat: rows and columns 2..5
        _ann(11, 1, 7, [[4, 4, 9, 4, 9, 8, 4, 8], [0, 6, 2, 6, 2, 8, 0, 8]]),  # dog, two parts, later: over the cat
        _ann(12, 1, 7, {"size": [8, 10], "counts": [9, 3, 68]}, crowd=1),  # column-major: column 1, rows 1..3
    ]
    path, folder = _coco(tmp_path, anns)
    report = import_coco(path, folder, tmp_path / "out")
    assert report.classes == ["background", "cat", "dog"]  # categories in id order
    want = _expected(8, 10)
    want[2:6, 2:6] = 1
    want[4:8, 4:9] = 2
    want[6:8, 0:2] = 2
    want[1:4, 1] = IGNORE_INDEX
    np.testing.assert_array_equal(_mask(tmp_path / "out", "a"), want)
    assert not _mask(tmp_path / "out", "b").any()  # no annotations: all background
    assert report.void_pixels == 3 and report.images == 2
    voc = tmp_path / "out/VOCdevkit/VOC2012"
    assert (voc / "JPEGImages/b.jpg").read_bytes() == (folder / "b.jpg").read_bytes()
    assert (voc / "class_names.txt").read_text() == "background\ncat\ndog\n"
    ds = VOCSegmentation(tmp_path / "out", "trainval", num_classes=3)
    assert len(ds) == 2 and tuple(ds[0][1].shape) == (8, 10)


def test_coco_compressed_rle_and_crowd_polygon(tmp_path):
    anns = [
        _ann(1, 2, 3, {"size": [7, 9], "counts": RLE_STRING}),  # an RLE object, not crowd: the cat
        _ann(2, 2, 7, [[6, 4, 9, 4, 9, 7, 6, 7]], crowd=1),  # a crowd polygon: void, over the cat's pixel
    ]
    path, folder = _coco(tmp_path, anns)
    import_coco(path, folder, tmp_path / "out")
    want = RLE_MASK.astype(np.uint8)
    want[4:7, 6:9] = IGNORE_INDEX
    np.testing.assert_array_equal(_mask(tmp_path / "out", "b"), want)


@pytest.mark.parametrize("problem", ["invalid json", "two-point polygon", "size disagrees", "unknown category"])
def test_bad_coco_file_is_refused_naming_it(tmp_path, problem):
    anns = [_ann(5, 1, 3, [[2, 2, 6, 2, 6, 6]])]
    images = None
    if problem == "two-point polygon":
        anns[0]["segmentation"] = [[2, 2, 6, 2, 6, 6], [1, 1, 3, 3]]
    elif problem == "size disagrees":
        images = [{"id": 1, "file_name": "a.png", "height": 8, "width": 11}]
    elif problem == "unknown category":
        anns[0]["category_id"] = 99
    path, folder = _coco(tmp_path, anns, images)
    if problem == "invalid json":
        path.write_text("{not json")
    with pytest.raises(VocsegError) as e:
        import_coco(path, folder, tmp_path / "out")
    assert str(path) in str(e.value)
    expected = {
        "invalid json": "not valid JSON",
        "two-point polygon": "annotation 5: polygon 1 has 2 points; a polygon needs at least 3",
        "size disagrees": "11x8",
        "unknown category": "category_id 99",
    }[problem]
    assert expected in str(e.value)
    assert not (tmp_path / "out").exists()


def test_coco_too_many_categories(tmp_path):
    path, folder = _coco(tmp_path, [], categories=[{"id": i, "name": f"c{i}"} for i in range(1, 256)])
    with pytest.raises(VocsegError, match="256 classes"):
        import_coco(path, folder, tmp_path / "out")


def test_cli_import_labelme_then_train_one_epoch(tmp_path, capsys, vocseg_cache, torch_global_state):
    """A new user's path: `vocseg import labelme SRC OUT`, then the printed train command on the result."""
    from vocseg.cli import main

    src = tmp_path / "labelme"
    src.mkdir()
    for i in range(6):
        _image(src / f"img{i}.png")
        _labelme(
            src,
            f"img{i}",
            [_shape("cat", [[2, 2], [20, 2], [20, 20], [2, 20]]), _shape("dog", [[24, 4], [40, 4], [40, 30]])],
            image=f"img{i}.png",
        )
    assert main(["import", "labelme", str(src), str(tmp_path / "data")]) == 0
    printed = capsys.readouterr().out
    assert "cat" in printed and "dog" in printed
    root = tmp_path / "data"
    args = ["train", "--model", "fcn", "--data-root", str(root)]  # the classes come from its class_names.txt
    assert (
        main(
            [
                *args,
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--image-size",
                "32",
                "--workers",
                "0",
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "best.pt").is_file()
    saved = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert saved["num_classes"] == 3 and saved["class_names"] == ["background", "cat", "dog"]
