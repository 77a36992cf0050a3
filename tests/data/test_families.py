"""Tests for the synthetic dataset families (vocseg.data.families): every family writes a complete, readable,
deterministic VOC tree, and each one has the structure it is built around, measured on the written data
against a family without it (the control shows the measure can fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

import vocseg.data.families as families
from vocseg.data.classes import IGNORE_INDEX, VOC_CLASSES
from vocseg.data.families import FAMILIES, family_names, generate_family
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError

NAMES = ["builtin", "shape_texture", "small_objects", "few", "imbalanced", "photo_background"]
N_TRAIN, N_VAL, MAX_SIDE = 6, 3, 64


def _prefix(name: str) -> str:
    return "synth" if name == "builtin" else name


def _ids(name: str, n: int) -> list[str]:
    return [f"{_prefix(name)}_{i:06d}" for i in range(n)]


def _tiny(name: str, out: Path, seed: int = 0, workers: int = 1) -> Path:
    return generate_family(name, out, n_train=N_TRAIN, n_val=N_VAL, seed=seed, workers=workers, max_side=MAX_SIDE)


@pytest.fixture(scope="module", params=NAMES)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(family, its VOC2012 folder) for a 6 train / 3 val tree at long side <= 64, generated in this process."""
    return request.param, _tiny(request.param, tmp_path_factory.mktemp(request.param))


def _sample(name: str, out: Path, n: int, max_side: int, workers: int = 2) -> VOCSegmentation:
    root = generate_family(name, out, n_train=n, n_val=0, workers=workers, max_side=max_side)
    return VOCSegmentation(root, "trainval", num_classes=FAMILIES[name].num_classes)


def _decoded(ds: VOCSegmentation) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image (H, W, 3), mask (H, W)) uint8 of every item."""
    return [(im.permute(1, 2, 0).numpy(), m.numpy()) for im, m in map(ds.decode, range(len(ds)))]


# ----------------------------------------------------------------------------- registry and trees


def test_registry() -> None:
    assert family_names() == NAMES == list(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.num_classes == len(family.class_names) >= 2
        assert family.class_names[0] == "background" and len(set(family.class_names)) == family.num_classes
        assert family.n_val > 0 and family.description
        assert family.n_train >= 300 or name == "few", name
        assert family.max_side == (500 if name == "small_objects" else 192), name
    assert FAMILIES["few"].n_train < 100
    assert FAMILIES["builtin"].class_names == VOC_CLASSES
    assert [FAMILIES[n].num_classes for n in NAMES] == [21, 9, 21, 9, 11, 11]


def test_tree_is_complete_and_readable(tiny: tuple[str, Path]) -> None:
    name, root = tiny
    k = FAMILIES[name].num_classes
    assert root.parts[-2:] == ("VOCdevkit", "VOC2012")
    ids = _ids(name, N_TRAIN + N_VAL)
    sets = root / "ImageSets" / "Segmentation"
    assert (sets / "train.txt").read_text().split() == ids[:N_TRAIN]
    assert (sets / "val.txt").read_text().split() == ids[N_TRAIN:]
    assert (sets / "trainval.txt").read_text().split() == ids
    assert (root / "class_names.txt").read_text().splitlines() == list(FAMILIES[name].class_names)
    assert len((root / "class_names.txt").read_text().splitlines()) == k

    foreground = 0
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        ds = VOCSegmentation(root.parent.parent, split, num_classes=k)
        assert len(ds) == n
        for i in range(n):
            image, mask = ds.decode(i)
            assert image.dtype == mask.dtype == torch.uint8
            assert image.ndim == 3 and image.shape[0] == 3 and image.shape[1:] == mask.shape
            assert 0.75 * MAX_SIDE - 1 <= max(mask.shape) <= MAX_SIDE and all(s % 32 for s in mask.shape)
            values = set(mask.unique().tolist())
            assert values <= set(range(k)) | {IGNORE_INDEX}, (name, values)
            foreground += bool(values - {0, IGNORE_INDEX})
    assert foreground >= (N_TRAIN + N_VAL) // 2, name


def test_deterministic_and_worker_independent(tiny: tuple[str, Path], tmp_path: Path) -> None:
    name, root = tiny
    again = _tiny(name, tmp_path / "again", workers=2)
    other = _tiny(name, tmp_path / "other", seed=1, workers=2)
    for stem in _ids(name, N_TRAIN + N_VAL):
        for rel in (f"JPEGImages/{stem}.jpg", f"SegmentationClass/{stem}.png"):
            assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    first = _ids(name, 1)[0]
    assert (root / f"JPEGImages/{first}.jpg").read_bytes() != (other / f"JPEGImages/{first}.jpg").read_bytes()


# ----------------------------------------------------------------------------- per-family structure


def _nearest_centroid_accuracy(samples: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Leave-one-out accuracy of telling an object's class from its mean colour alone: one feature per
    (image, class present), classified by the nearest class-mean of the other features."""
    feats, labels = [], []
    for image, mask in samples:
        for cls in set(np.unique(mask).tolist()) - {0, IGNORE_INDEX}:
            pixels = image[mask == cls]
            if len(pixels) >= 20:
                feats.append(pixels.astype(np.float64).mean(axis=0))
                labels.append(cls)
    x, y = np.array(feats), np.array(labels)
    assert len(y) >= 100 and len(set(y.tolist())) >= 6, len(y)
    correct = 0
    for j in range(len(y)):
        rest = np.arange(len(y)) != j
        classes = sorted(set(y[rest].tolist()))
        centroids = np.array([x[rest & (y == c)].mean(axis=0) for c in classes])
        correct += classes[int(np.argmin(np.linalg.norm(centroids - x[j], axis=1)))] == y[j]
    return correct / len(y)


def test_shape_texture_colour_does_not_tell_classes(tmp_path: Path) -> None:
    """Chance is 1/8. On 100 images: shape_texture ~0.12; few, whose classes come in hue pairs, ~0.45."""
    shape_texture = _nearest_centroid_accuracy(_decoded(_sample("shape_texture", tmp_path / "st", 100, 96)))
    control = _nearest_centroid_accuracy(_decoded(_sample("few", tmp_path / "few", 100, 96)))
    assert shape_texture < 0.25 < 0.35 < control, (shape_texture, control)


def test_small_objects_cover_a_few_percent(tmp_path: Path) -> None:
    """Each object is its own region of the mask (objects never touch), whose labelled interior is at most
    3% of the image and whose extent with its void band is at least 0.2%: the drawn area lies between."""
    for _, mask in _decoded(_sample("small_objects", tmp_path, 8, FAMILIES["small_objects"].max_side)):
        assert 375 - 1 <= max(mask.shape) <= 500
        regions, n = ndimage.label(mask != 0)
        assert 3 <= n <= 8, n
        extent = np.bincount(regions.ravel())[1:] / mask.size
        interior = np.bincount(regions.ravel(), weights=((mask != 0) & (mask != IGNORE_INDEX)).ravel())[1:] / mask.size
        assert extent.min() >= 0.002 and interior.max() <= 0.03, (extent.min(), interior.max())
        assert (mask == 0).mean() > 0.7


def _pixel_share_ratio(samples: list[tuple[np.ndarray, np.ndarray]], k: int) -> float:
    counts = sum(np.bincount(mask.ravel(), minlength=256) for _, mask in samples)[1:k]
    return counts.max() / max(counts.min(), 1)


def test_imbalanced_pixel_shares(tmp_path: Path) -> None:
    """Most / least frequent foreground class in pixels, on 150 images: ~200-700 over seeds (100 expected
    at full size; the void band takes more of the rare thin shapes here); few's uniform draws: 6-12."""
    ratio = _pixel_share_ratio(_decoded(_sample("imbalanced", tmp_path / "imb", 150, 80)), 11)
    control = _pixel_share_ratio(_decoded(_sample("few", tmp_path / "few", 150, 80)), 9)
    assert ratio >= 30 > control, (ratio, control)


def test_few_defaults(tmp_path: Path) -> None:
    root = generate_family("few", tmp_path, max_side=48, workers=2)
    assert len((root / "ImageSets/Segmentation/train.txt").read_text().split()) == FAMILIES["few"].n_train < 100
    assert len((root / "ImageSets/Segmentation/val.txt").read_text().split()) == FAMILIES["few"].n_val


def _background_detail(samples: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Median over images of the mean gradient magnitude of the (3x3-smoothed, grey) background, away from
    objects: the detail a photograph has at every scale and the built-in smooth backgrounds lack."""
    values = []
    for image, mask in samples:
        grey = ndimage.uniform_filter(image.astype(np.float32).mean(axis=2), 3)
        inside = ndimage.binary_erosion(mask == 0, iterations=3)
        gy, gx = np.gradient(grey)
        values.append(float(np.hypot(gx, gy)[inside].mean()))
    return float(np.median(values))


def test_photo_background_is_photographic(tmp_path: Path) -> None:
    """On 40 images: ~10 for photo_background, ~3 for builtin."""
    photo = _background_detail(_decoded(_sample("photo_background", tmp_path / "photo", 40, 96)))
    control = _background_detail(_decoded(_sample("builtin", tmp_path / "builtin", 40, 96)))
    assert photo >= 2 * control, (photo, control)


def test_photo_background_comes_from_the_photos(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same images with a flat grey image in place of matplotlib's: the background detail goes."""
    real = families._photos()
    assert [im.size for im in real] == [(512, 600), (403, 344)]  # grace_hopper.jpg, the Jacksboro relief

    def render(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [families.render_family_sample("photo_background", 0, i, 96) for i in range(n)]

    with_photos = _background_detail(render(20))
    monkeypatch.setattr(families, "_photos", lambda: (Image.new("RGB", (400, 300), (120, 120, 120)),))
    assert _background_detail(render(20)) * 3 < with_photos


# ----------------------------------------------------------------------------- errors


def test_unknown_family_lists_the_names(tmp_path: Path) -> None:
    for call in (lambda: generate_family("nope", tmp_path), lambda: families.render_family_sample("nope", 0, 0)):
        with pytest.raises(VocsegError, match="nope") as err:
            call()
        assert all(name in str(err.value) for name in NAMES)
    assert not (tmp_path / "VOCdevkit").exists()


@pytest.mark.parametrize("name", ["builtin", "shape_texture"])
def test_refuses_a_non_empty_folder(name: str, tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    root.mkdir(parents=True)
    generate_family(name, tmp_path, n_train=2, n_val=1, max_side=48, workers=1)  # an empty tree: fine
    with pytest.raises(VocsegError, match="VOC2012"):
        generate_family(name, tmp_path, n_train=2, n_val=1, max_side=48, workers=1)
    user = tmp_path / "user"
    (user / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (user / "VOCdevkit" / "VOC2012" / "notes.txt").write_text("mine")
    with pytest.raises(VocsegError) as err:
        generate_family(name, user, n_train=2, n_val=1, max_side=48, workers=1)
    assert str(user / "VOCdevkit" / "VOC2012") in str(err.value)
    assert [p.name for p in (user / "VOCdevkit" / "VOC2012").iterdir()] == ["notes.txt"]


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    for kwargs, match in (
        (dict(n_train=0, n_val=0), "at least one image"),
        (dict(n_train=-1), "n_train"),
        (dict(max_side=16), "max_side"),
        (dict(seed=-1), "seed"),
        (dict(workers=0), "workers"),
    ):
        with pytest.raises(VocsegError, match=match):
            generate_family("few", tmp_path, **kwargs)
    assert not (tmp_path / "VOCdevkit").exists()


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_family("shape_texture", tmp_path, n_train=2, n_val=1, max_side=48, workers=1, progress=True)
    assert "3/3" in capsys.readouterr().err


def test_synth_command_writes_a_family(tmp_path, capsys):
    from helpers import cli

    rc, _ = cli(["synth", tmp_path / "f", "--family", "imbalanced", "--train", 4, "--val", 2, "--max-side", 64,
                 "--workers", 1], capsys)  # fmt: skip
    assert rc == 0
    voc = tmp_path / "f" / "VOCdevkit" / "VOC2012"
    assert len((voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 4
    assert len((voc / "class_names.txt").read_text().split()) == FAMILIES["imbalanced"].num_classes
    rc, err = cli(["synth", tmp_path / "g", "--family", "nope"], capsys)
    assert rc == 2 and "unknown dataset family 'nope'; choose one of: builtin, shape_texture" in err
