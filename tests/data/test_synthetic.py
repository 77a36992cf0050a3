"""Tests for the built-in synthetic VOC-format dataset (vocseg.data.synthetic)."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vocseg.data.synthetic as synthetic
from vocseg.data.classes import IGNORE_INDEX, NUM_CLASSES, voc_palette
from vocseg.data.synthetic import default_dataset_root, generate_synthetic_voc
from vocseg.errors import VocsegError

N_TRAIN, N_VAL, MAX_SIDE = 20, 10, 160
IDS = [f"synth_{i:06d}" for i in range(N_TRAIN + N_VAL)]


def _make(out: Path, seed: int = 0, workers: int = 2) -> Path:
    return generate_synthetic_voc(out, n_train=N_TRAIN, n_val=N_VAL, seed=seed, max_side=MAX_SIDE, workers=workers)


@pytest.fixture(scope="module")
def voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 30-image dataset shared by the read-only checks (generated with 2 worker processes)."""
    return _make(tmp_path_factory.mktemp("synth"))


def _mask(root: Path, name: str) -> np.ndarray:
    return np.array(Image.open(root / "SegmentationClass" / f"{name}.png"))


def _masks(root: Path) -> list[np.ndarray]:
    return [_mask(root, name) for name in IDS]


def test_tree_and_splits(voc: Path) -> None:
    assert voc.parts[-2:] == ("VOCdevkit", "VOC2012")
    sets = voc / "ImageSets" / "Segmentation"
    assert (sets / "train.txt").read_text().split() == IDS[:N_TRAIN]
    assert (sets / "val.txt").read_text().split() == IDS[N_TRAIN:]
    assert (sets / "trainval.txt").read_text().split() == IDS
    assert sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg")) == IDS
    assert sorted(p.stem for p in (voc / "SegmentationClass").glob("*.png")) == IDS


def test_masks_and_images(voc: Path) -> None:
    palette = voc_palette()
    for name in IDS:
        mask = Image.open(voc / "SegmentationClass" / f"{name}.png")
        image = Image.open(voc / "JPEGImages" / f"{name}.jpg")
        assert mask.mode == "P"
        assert mask.getpalette()[: len(palette)] == palette
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == mask.size
        w, h = image.size
        assert w % 32 and h % 32, f"{name} is {w}x{h}"
        assert 0.75 * MAX_SIDE - 1 <= max(w, h) <= MAX_SIDE
        values = set(np.unique(np.array(mask)).tolist())
        assert values <= set(range(NUM_CLASSES)) | {IGNORE_INDEX}
        assert values - {0, IGNORE_INDEX}, f"{name} has no object"


def test_sizes_never_multiple_of_32() -> None:
    for max_side in (64, 256, 500):
        for i in range(300):
            h, w = synthetic._image_size(np.random.default_rng([0, i]), max_side)
            assert h % 32 and w % 32
            assert 0.75 * max_side - 1 <= max(h, w) <= max_side
            assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_void_band_separates_labels(voc: Path) -> None:
    masks = _masks(voc)
    for mask in masks:
        assert (mask == IGNORE_INDEX).any()
        # No two 4-adjacent non-void pixels carry different labels: 255 always separates them.
        for a, b in ((mask[:, :-1], mask[:, 1:]), (mask[:-1], mask[1:])):
            clash = (a != b) & (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not clash.any()
    # And the band is thin: overall, far more object pixels survive than become void.
    void = sum(int((m == IGNORE_INDEX).sum()) for m in masks)
    objects = sum(int(((m > 0) & (m < NUM_CLASSES)).sum()) for m in masks)
    assert 3 * void < objects, (void, objects)


def test_background_fraction_and_class_coverage(voc: Path) -> None:
    masks = _masks(voc)
    bg = sum(int((m == 0).sum()) for m in masks) / sum(m.size for m in masks)
    assert 0.55 <= bg <= 0.85, bg
    present = set().union(*(np.unique(m).tolist() for m in masks)) - {0, IGNORE_INDEX}
    assert len(present) >= 15, sorted(present)


def test_class_colour_varies(voc: Path) -> None:
    """A class is not one colour: the same class shows clearly different hues in different images."""
    hues: dict[int, list[float]] = {}
    for name in IDS:
        mask = _mask(voc, name)
        image = np.array(Image.open(voc / "JPEGImages" / f"{name}.jpg"))
        for cls in set(np.unique(mask).tolist()) - {0, IGNORE_INDEX}:
            pix = image[mask == cls]
            if len(pix) < 50:
                continue
            h, s, _ = colorsys.rgb_to_hsv(*(np.median(pix, axis=0) / 255))
            if s > 0.2:  # hue is meaningless for greys
                hues.setdefault(cls, []).append(h)

    def spread(hs: list[float]) -> float:  # largest circular hue distance between two instances
        return max(min(abs(a - b), 1 - abs(a - b)) for a in hs for b in hs)

    spreads = {cls: spread(hs) for cls, hs in hues.items() if len(hs) >= 2}
    assert sum(s >= 0.1 for s in spreads.values()) >= 4, spreads


def test_deterministic_and_worker_independent(voc: Path, tmp_path: Path) -> None:
    serial = _make(tmp_path / "serial", seed=0, workers=1)
    other = _make(tmp_path / "other", seed=1, workers=2)
    for name in IDS:
        png = f"SegmentationClass/{name}.png"
        jpg = f"JPEGImages/{name}.jpg"
        assert (voc / png).read_bytes() == (serial / png).read_bytes()
        assert np.array_equal(np.array(Image.open(voc / jpg)), np.array(Image.open(serial / jpg)))
    assert any(
        (voc / f"SegmentationClass/{n}.png").read_bytes() != (other / f"SegmentationClass/{n}.png").read_bytes()
        for n in IDS
    )
    assert sum(_mask(voc, n).shape != _mask(other, n).shape for n in IDS) > len(IDS) // 2


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    root.mkdir(parents=True)
    generate_synthetic_voc(tmp_path, n_train=2, n_val=1, max_side=64, workers=1)  # empty tree: fine
    with pytest.raises(VocsegError, match="VOC2012"):
        generate_synthetic_voc(tmp_path, n_train=2, n_val=1, max_side=64, workers=1)
    user = tmp_path / "user"
    (user / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (user / "VOCdevkit" / "VOC2012" / "notes.txt").write_text("mine")
    with pytest.raises(VocsegError) as err:
        generate_synthetic_voc(user, n_train=2, n_val=1, max_side=64, workers=1)
    assert str(user / "VOCdevkit" / "VOC2012") in str(err.value)
    assert (user / "VOCdevkit" / "VOC2012" / "notes.txt").read_text() == "mine"


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(VocsegError):
        generate_synthetic_voc(tmp_path, n_train=0, n_val=0)
    with pytest.raises(VocsegError, match="max_side"):
        generate_synthetic_voc(tmp_path, n_train=1, n_val=0, max_side=16)


@pytest.fixture
def small_default(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Shrink the default dataset and record every generation (the output folder it wrote to)."""
    monkeypatch.setattr(synthetic, "DEFAULT_SYNTHETIC", dict(n_train=4, n_val=2, seed=3, max_side=64))
    calls: list[Path] = []
    real = synthetic.generate_synthetic_voc

    def counting(out: str | Path, **kw: int) -> Path:
        calls.append(Path(out))
        return real(out, **kw)

    monkeypatch.setattr(synthetic, "generate_synthetic_voc", counting)
    return calls


def test_default_dataset_root_generates_once(tmp_path: Path, small_default: list[Path]) -> None:
    root = default_dataset_root(tmp_path)
    assert root == tmp_path / f"synthetic-v{synthetic.GENERATOR_VERSION}-4-2-s3-64"
    trainval = root / "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt"
    assert trainval.read_text().split() == [f"synth_{i:06d}" for i in range(6)]
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # temporary folder renamed away
    mtime = trainval.stat().st_mtime_ns
    assert default_dataset_root(tmp_path) == root
    assert len(small_default) == 1 and trainval.stat().st_mtime_ns == mtime


def test_default_dataset_root_env_var(
    tmp_path: Path, small_default: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    assert default_dataset_root().parent == tmp_path / "cache"


def test_default_dataset_root_interrupted(
    tmp_path: Path, small_default: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(out: str | Path, **kw: int) -> Path:
        (Path(out) / "VOCdevkit").mkdir()
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(synthetic, "generate_synthetic_voc", broken)
        with pytest.raises(KeyboardInterrupt):
            default_dataset_root(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left to be mistaken for a dataset
    assert synthetic._is_complete(default_dataset_root(tmp_path))


def test_default_dataset_root_race(tmp_path: Path, small_default: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process finishes first: ours is discarded and theirs is returned."""
    counting = synthetic.generate_synthetic_voc
    final = tmp_path / f"synthetic-v{synthetic.GENERATOR_VERSION}-4-2-s3-64"

    def racing(out: str | Path, **kw: int) -> Path:
        result = counting(out, **kw)
        counting(final, **kw)  # the other process's copy lands first
        os.utime(final / "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt", ns=(1, 1))
        return result

    monkeypatch.setattr(synthetic, "generate_synthetic_voc", racing)
    assert default_dataset_root(tmp_path) == final
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    assert (final / "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt").stat().st_mtime_ns == 1


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate_synthetic_voc(tmp_path, n_train=2, n_val=1, max_side=64, workers=1, progress=True)
    assert "3/3" in capsys.readouterr().err
