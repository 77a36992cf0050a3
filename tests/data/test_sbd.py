"""SBD (vocseg.data.sbd) on small hand-made SBD and VOC trees: .mat -> palette PNG, train_aug, offline download."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.data import download, sbd
from vocseg.data.classes import IGNORE_INDEX, voc_palette
from vocseg.data.voc import load_mask, read_split
from vocseg.errors import VocsegError

scipy_io = pytest.importorskip("scipy.io")
scipy_sparse = pytest.importorskip("scipy.sparse")

H, W = 19, 27  # odd sizes, not multiples of 2 or 32
VOC_TRAIN = ["2007_000032", "2007_000039"]
VOC_VAL = ["2007_000033", "2008_000001"]
SBD_TRAIN = ["2007_000032", "2007_000033", "2008_000002"]  # 2007_000033 is VOC val: must not reach train_aug
SBD_VAL = ["2008_000003", "2008_000004"]
VOC_ONLY_JPEG = "2008_000003"  # VOC has this JPEG but no mask for it
EXPECTED_AUG = ["2007_000032", "2007_000039", "2008_000002", "2008_000003", "2008_000004"]


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _voc_mask(seed: int) -> np.ndarray:
    """A VOC-style mask: one object with a 255 (void) border."""
    mask = np.zeros((H, W), np.uint8)
    mask[3:12, 4:20] = IGNORE_INDEX
    mask[4:11, 5:19] = 1 + seed % 20
    return mask


def _sbd_labels(seed: int) -> np.ndarray:
    """SBD-style labels: several classes, no void."""
    rng = np.random.default_rng(100 + seed)
    labels = np.zeros((H, W), np.uint8)
    for cls in rng.choice(np.arange(1, 21), size=3, replace=False):
        y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
        labels[y : y + 5, x : x + 7] = cls
    return labels


def _write_mat(path: Path, labels: np.ndarray) -> None:
    """A ``cls/<id>.mat`` in SBD's structure: GTcls with Segmentation, Boundaries (20x1 cell of sparse), CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = scipy_sparse.csc_matrix((labels == c + 1).astype(np.uint8))
    present = np.array([[c] for c in np.unique(labels) if c > 0], dtype=np.uint8)
    scipy_io.savemat(
        str(path), {"GTcls": {"Segmentation": labels, "Boundaries": boundaries, "CategoriesPresent": present}}
    )


def _make_sbd(dataset: Path) -> dict[str, np.ndarray]:
    """SBD's ``dataset`` folder; returns id -> labels written."""
    (dataset / "cls").mkdir(parents=True)
    (dataset / "img").mkdir()
    labels = {}
    for i, image_id in enumerate(SBD_TRAIN + SBD_VAL):
        labels[image_id] = _sbd_labels(i)
        _write_mat(dataset / "cls" / f"{image_id}.mat", labels[image_id])
        Image.fromarray(_image(50 + i)).save(dataset / "img" / f"{image_id}.jpg", quality=95)
    (dataset / "train.txt").write_text("".join(f"{i}\n" for i in SBD_TRAIN))
    (dataset / "val.txt").write_text("".join(f"{i}\n" for i in SBD_VAL))
    return labels


@pytest.fixture
def trees(tmp_path: Path, make_voc) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """(folder holding VOCdevkit and benchmark_RELEASE, VOC2012 folder, SBD labels); VOC has one extra JPEG."""
    root = tmp_path / "data"
    samples = {name: (_image(i), _voc_mask(i)) for i, name in enumerate(VOC_TRAIN + VOC_VAL)}
    voc_root = make_voc(samples, {"train": VOC_TRAIN, "val": VOC_VAL}, root=root)
    Image.fromarray(_image(999)).save(voc_root / "JPEGImages" / f"{VOC_ONLY_JPEG}.jpg", quality=95)
    labels = _make_sbd(root / "benchmark_RELEASE" / "dataset")
    return root, voc_root, labels


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


# ----------------------------------------------------------------------------- conversion


def test_png_labels_equal_the_mat_labels_and_voc_masks_are_kept(trees) -> None:
    root, voc_root, labels = trees
    counts = sbd.convert_sbd(root, root)  # roots given as the folder holding both trees
    aug = voc_root / "SegmentationClassAug"
    sbd_only = sorted(set(labels) - set(VOC_TRAIN + VOC_VAL))
    for image_id in sbd_only:
        png = Image.open(aug / f"{image_id}.png")
        assert png.mode == "P" and png.getpalette()[: 3 * 256] == voc_palette()
        np.testing.assert_array_equal(np.array(png), labels[image_id])  # kept as they are: no 255 added
        np.testing.assert_array_equal(load_mask(aug / f"{image_id}.png"), labels[image_id])
    for image_id in VOC_TRAIN + VOC_VAL:  # VOC's own mask wins, byte for byte, with its void border
        voc_png = voc_root / "SegmentationClass" / f"{image_id}.png"
        assert (aug / f"{image_id}.png").read_bytes() == voc_png.read_bytes()
    assert counts.sbd_masks == len(sbd_only) and counts.voc_masks == 4 and counts.kept == 0
    umask = os.umask(0)
    os.umask(umask)
    assert (aug / f"{sbd_only[0]}.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temp file's 0600


def test_sbd_jpegs_are_copied_only_where_voc_lacks_them(trees) -> None:
    root, voc_root, _ = trees
    voc_jpegs_before = {p.name: p.read_bytes() for p in (voc_root / "JPEGImages").iterdir()}
    counts = sbd.convert_sbd(root / "benchmark_RELEASE" / "dataset", voc_root)
    sbd_img = root / "benchmark_RELEASE" / "dataset" / "img"
    copied = {"2008_000002.jpg", "2008_000004.jpg"}
    assert counts.images_copied == len(copied)
    for name in copied:
        assert (voc_root / "JPEGImages" / name).read_bytes() == (sbd_img / name).read_bytes()
    for name, data in voc_jpegs_before.items():  # VOC's JPEGs, including 2008_000003, untouched
        assert (voc_root / "JPEGImages" / name).read_bytes() == data
    assert not list((voc_root / "JPEGImages").glob(".*"))  # no temporary files left behind


def test_bad_mat_files_are_errors_naming_the_file(trees) -> None:
    root, voc_root, labels = trees
    cls = root / "benchmark_RELEASE" / "dataset" / "cls"
    bad = labels["2008_000002"].copy()
    bad[0, 0] = 33
    _write_mat(cls / "2008_000002.mat", bad)
    with pytest.raises(VocsegError, match="outside 0..20") as e:
        sbd.convert_sbd(root, voc_root)
    assert str(cls / "2008_000002.mat") in str(e.value)
    scipy_io.savemat(str(cls / "2008_000002.mat"), {"other": np.zeros((2, 2))})
    with pytest.raises(VocsegError, match="GTcls") as e:
        sbd.read_sbd_mask(cls / "2008_000002.mat")
    assert "2008_000002.mat" in str(e.value)


def test_a_mask_of_another_size_than_its_image_is_an_error(trees) -> None:
    root, voc_root, _ = trees
    mat = root / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000003.mat"
    _write_mat(mat, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(VocsegError, match="2008_000003") as e:
        sbd.convert_sbd(root, voc_root)
    assert f"{W}x{H + 1}" in str(e.value) and f"{W}x{H}" in str(e.value)


# ----------------------------------------------------------------------------- train_aug


def test_train_aug_is_the_union_minus_voc_val() -> None:
    ids = sbd.train_aug_ids(["b", "a"], ["a", "c", "v1"], ["d"], ["v1", "v2"])
    assert ids == ["a", "b", "c", "d"]


def test_make_train_aug_writes_the_sorted_union_without_any_voc_val_image(trees) -> None:
    root, voc_root, _ = trees
    sbd.convert_sbd(root, voc_root)
    assert read_split(voc_root, "sbd_train") == SBD_TRAIN and read_split(voc_root, "sbd_val") == SBD_VAL
    assert sbd.make_train_aug(voc_root) == len(EXPECTED_AUG)
    ids = read_split(voc_root, "train_aug")
    assert ids == EXPECTED_AUG
    assert not set(ids) & set(VOC_VAL)
    for image_id in ids:  # every id readable: a JPEG and a mask, VOC's where it has one
        assert (voc_root / "JPEGImages" / f"{image_id}.jpg").is_file()
        folder = "SegmentationClass" if image_id in VOC_TRAIN else "SegmentationClassAug"
        assert sbd.find_mask(voc_root, image_id) == voc_root / folder / f"{image_id}.png"


def test_make_train_aug_without_conversion_names_the_missing_masks(trees) -> None:
    root, voc_root, _ = trees
    split_dir = voc_root / "ImageSets" / "Segmentation"
    for name, ids in (("sbd_train", SBD_TRAIN), ("sbd_val", SBD_VAL)):
        (split_dir / f"{name}.txt").write_text("\n".join(ids))
    with pytest.raises(VocsegError, match="2008_000002"):
        sbd.make_train_aug(voc_root)
    assert not (split_dir / "train_aug.txt").exists()


def test_a_different_existing_train_aug_is_not_overwritten(trees) -> None:
    root, voc_root, _ = trees
    sbd.convert_sbd(root, voc_root)
    mine = voc_root / "ImageSets" / "Segmentation" / "train_aug.txt"
    mine.write_text("2007_000032\n")
    with pytest.raises(VocsegError, match="not overwriting") as e:
        sbd.make_train_aug(voc_root)
    assert str(mine) in str(e.value)
    assert mine.read_text() == "2007_000032\n"


# ----------------------------------------------------------------------------- download and prepare


def test_offline_download_fails_at_once_naming_archive_md5_url_and_folder(tmp_path: Path, monkeypatch) -> None:
    def unreachable(url: str, timeout: float = 5.0) -> None:
        raise OSError("network is unreachable")

    def no_download(*args, **kwargs):
        raise AssertionError("download_url must not be tried when the host is unreachable")

    monkeypatch.setattr(download, "_check_reachable", unreachable)
    monkeypatch.setattr(download, "download_url", no_download)
    with pytest.raises(VocsegError) as e:
        sbd.download_sbd(tmp_path)
    msg = str(e.value)
    info = sbd.sbd_archive_info()
    assert info["filename"] == "benchmark.tgz" and info["md5"] == "82b4d87ceb2ed10f6038a1cba92111cb"
    for part in (info["filename"], info["md5"], info["url"], str(tmp_path / "benchmark.tgz"), "vocseg download --sbd"):
        assert part in msg


def test_a_corrupt_archive_is_named_and_left_in_place(tmp_path: Path) -> None:
    archive = tmp_path / "benchmark.tgz"
    archive.write_bytes(b"not the archive")
    with pytest.raises(VocsegError, match="md5") as e:
        sbd.download_sbd(tmp_path)
    assert str(archive) in str(e.value)
    assert archive.read_bytes() == b"not the archive"


def _fake_archive(trees_root: Path, tmp_path: Path) -> tuple[Path, str]:
    """benchmark.tgz holding the test's SBD tree (as benchmark_RELEASE/dataset), and its md5."""
    archive = tmp_path / "benchmark.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(trees_root / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_prepare_sbd_end_to_end_and_an_idempotent_rerun(trees, tmp_path: Path, monkeypatch) -> None:
    root, voc_root, labels = trees
    archive, md5 = _fake_archive(root, tmp_path)
    import shutil

    shutil.rmtree(root / "benchmark_RELEASE")
    archive.rename(root / "benchmark.tgz")
    monkeypatch.setattr(
        sbd,
        "sbd_archive_info",
        lambda: {"url": "https://example.invalid/benchmark.tgz", "filename": "benchmark.tgz", "md5": md5},
    )
    monkeypatch.setattr(download, "_check_reachable", lambda *a, **k: pytest.fail("archive present: no network needed"))
    summary = sbd.prepare_sbd(root, progress=False)
    assert summary.train_aug_size == len(EXPECTED_AUG) and summary.voc_root == voc_root
    assert summary.sbd_root == root / "benchmark_RELEASE" / "dataset"
    assert "train_aug" in str(summary) and "10,582" in str(summary)  # a non-VOC size is pointed out
    np.testing.assert_array_equal(
        np.array(Image.open(voc_root / "SegmentationClassAug" / "2008_000004.png")), labels["2008_000004"]
    )

    # A user's own edit of a converted mask survives a re-run; nothing else changes either.
    edited = voc_root / "SegmentationClassAug" / "2008_000002.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(edited)
    before = _snapshot(root)
    again = sbd.prepare_sbd(root, progress=False)
    assert _snapshot(root) == before
    assert again.counts.kept == len(set(labels) | set(VOC_TRAIN + VOC_VAL))
    assert again.counts.sbd_masks == again.counts.voc_masks == again.counts.images_copied == 0
    assert again.train_aug_size == summary.train_aug_size


def test_prepare_sbd_without_voc_says_to_download_voc_first(tmp_path: Path) -> None:
    with pytest.raises(VocsegError, match="vocseg download --root") as e:
        sbd.prepare_sbd(tmp_path, progress=False)
    assert str(tmp_path) in str(e.value)


def test_resolve_sbd_root_accepts_each_level(trees) -> None:
    root, _, _ = trees
    dataset = root / "benchmark_RELEASE" / "dataset"
    for given in (root, root / "benchmark_RELEASE", dataset):
        assert sbd.resolve_sbd_root(given) == dataset
    with pytest.raises(VocsegError, match="no SBD dataset"):
        sbd.resolve_sbd_root(root / "VOCdevkit")
