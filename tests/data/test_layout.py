"""Image/mask folders as a dataset (data/layout.py): found, split, checked, and usable by every command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers import FOLDER_CLASSES as CLASSES
from helpers import TRAIN_ARGS, cli, folder_sample, make_folders
from vocseg.config import Config
from vocseg.data.builder import resolve_data_root, with_dataset_classes
from vocseg.data.layout import FOLDERS, VOC, read_class_names, resolve_layout, seeded_split
from vocseg.data.voc import VOCSegmentation
from vocseg.errors import VocsegError


def test_folders_found_read_and_split_once(tmp_path):
    """images/ + masks/ with classes.txt: the classes, a seeded 80/20 split written once to splits/, pixels exact."""
    root = make_folders(tmp_path / "data")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    layout = resolve_layout(root)
    assert layout.kind == FOLDERS and layout.class_names == CLASSES
    train, val = layout.read_split("train"), layout.read_split("val")
    assert (train, val) == seeded_split([f"im{i:02d}" for i in range(10)]) and len(val) == 2
    assert sorted(train + val) == layout.read_split("trainval")
    written = (root / "splits" / "train.txt").read_text()
    # A new image later does not move the old ones: the split was written once.
    image, mask = folder_sample(99)
    Image.fromarray(image).save(root / "images" / "new.png")
    Image.fromarray(mask).save(root / "masks" / "new.png")
    assert resolve_layout(root).read_split("train") == train and (root / "splits" / "train.txt").read_text() == written
    ds = VOCSegmentation(root, "train", num_classes=3)
    got_image, got_mask = ds.decode(0)
    want_image, want_mask = folder_sample(int(train[0][2:]))
    assert torch.equal(got_image, torch.from_numpy(want_image).permute(2, 0, 1))
    assert torch.equal(got_mask, torch.from_numpy(want_mask))


@pytest.mark.parametrize("palette", [True, False], ids=["palette", "grayscale"])
def test_mmseg_folders_with_split_subfolders(tmp_path, palette):
    """img_dir/{train,val} + ann_dir/{train,val} (mmsegmentation's custom layout): the sub-folders are the splits."""
    root = tmp_path / "data"
    make_folders(root, 4, images="img_dir", masks="ann_dir", sub="train", palette=palette)
    make_folders(root, 2, images="img_dir", masks="ann_dir", sub="val", palette=palette)
    layout = resolve_layout(root)
    assert layout.read_split("val") == ["val/im00", "val/im01"] and len(layout.read_split("train")) == 4
    assert torch.equal(VOCSegmentation(root, "val", num_classes=3).decode(1)[1], torch.from_numpy(folder_sample(1)[1]))


def test_dataset_yaml_names_folders_suffix_classes_and_colours(tmp_path):
    """dataset.yaml: other folder names, a mask suffix, classes as a mapping and colours for RGB-coded masks."""
    root = tmp_path / "data"
    colours = [[0, 0, 0], [10, 200, 30], [250, 5, 90]]
    (root / "pics").mkdir(parents=True)
    (root / "labels_rgb").mkdir()
    image, mask = folder_sample(3)
    Image.fromarray(image).save(root / "pics" / "a.jpg", quality=95)
    rgb = np.array(colours + [[0, 0, 0]] * 252 + [[224, 224, 192]], np.uint8)[mask]
    Image.fromarray(rgb).save(root / "labels_rgb" / "a_mask.png")
    (root / "splits").mkdir()
    for split in ("train", "val"):
        (root / "splits" / f"{split}.txt").write_text("a\n")
    spec = {"images": "pics", "masks": "labels_rgb", "mask_suffix": "_mask.png", "colours": colours}
    spec["classes"] = {0: "background", 1: "disc", 2: "square"}
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    layout = resolve_layout(root)
    assert layout.class_names == CLASSES and layout.image_path("a") == root / "pics" / "a.jpg"
    assert torch.equal(VOCSegmentation(root, "train", num_classes=3).decode(0)[1], torch.from_numpy(mask))
    Image.fromarray(np.full_like(rgb, 7)).save(root / "labels_rgb" / "a_mask.png")
    with pytest.raises(VocsegError, match=r"a_mask\.png has colour \(7, 7, 7\), which is not in the dataset's class"):
        VOCSegmentation(root, "train", num_classes=3).decode(0)
    (root / "dataset.yaml").write_text("images: pics\nmask: labels\n")
    with pytest.raises(VocsegError, match=r"dataset\.yaml: unknown keys \['mask'\]; valid keys: classes, colours"):
        resolve_layout(root)


@pytest.mark.parametrize("fault", ["image-without-mask", "mask-without-image", "value", "size"])
def test_bad_folders_name_the_file(tmp_path, fault):
    root = make_folders(tmp_path / "data", 3)
    if fault == "image-without-mask":
        (root / "masks" / "im01.png").unlink()
        expected = f"image {root / 'images' / 'im01.png'} has no mask: expected {root / 'masks' / 'im01.png'}"
    elif fault == "mask-without-image":
        shutil.copy(root / "masks" / "im01.png", root / "masks" / "stray.png")
        expected = f"mask {root / 'masks' / 'stray.png'} has no image"
    elif fault == "value":
        Image.fromarray(np.full((40, 48), 7, np.uint8)).save(root / "masks" / "im00.png")
        expected = f"mask {root / 'masks' / 'im00.png'} has values [7] outside 0..2 and 255"
    else:
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "im00.png")
        expected = f"image {root / 'images' / 'im00.png'} is 48x40 but its mask {root / 'masks' / 'im00.png'} is 10x10"
    with pytest.raises(VocsegError) as e:
        ds = VOCSegmentation(root, "trainval", num_classes=3)
        for i in range(len(ds)):
            ds.decode(i)
    assert expected in str(e.value)


def test_voc_tree_class_list_and_config(tiny_voc, tmp_path):
    """A VOC tree's class_names.txt (what `vocseg import` writes) and a folder's classes.txt set the config's
    classes; a config naming other classes or another count is refused by name."""
    voc = tmp_path / "voc"
    shutil.copytree(tiny_voc, voc)
    assert resolve_layout(voc).kind == VOC and resolve_layout(voc).class_names is None
    cfg = Config(data_root=str(voc))
    assert with_dataset_classes(cfg) is cfg
    names = [f"c{i}" for i in range(21)]
    (voc / "VOCdevkit" / "VOC2012" / "class_names.txt").write_text("\n".join(names))
    assert with_dataset_classes(cfg).class_names == names
    root = make_folders(tmp_path / "data", 3)
    (root / "classes.txt").write_text("\n".join(CLASSES))
    cfg = Config(data_root=str(root))
    assert (with_dataset_classes(cfg).num_classes, with_dataset_classes(cfg).class_names) == (3, CLASSES)
    with pytest.raises(VocsegError, match="config num_classes is 5 but the dataset at .* lists 3 classes"):
        with_dataset_classes(Config(data_root=str(root), num_classes=5))
    with pytest.raises(VocsegError, match=r"config class_names \['background', 'x', 'y'\] differ from the dataset's"):
        with_dataset_classes(Config(data_root=str(root), num_classes=3, class_names=["background", "x", "y"]))
    assert read_class_names(root / "classes.txt") == CLASSES and resolve_data_root(str(root)).root == root


@pytest.mark.slow
@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
def test_stats_train_evaluate_compare_on_folders(tmp_path, capsys):
    """The commands work on image/mask folders unchanged: stats names the dataset's classes, train takes its
    classes, evaluate and compare read the runs."""
    root = make_folders(tmp_path / "data", 8)
    (root / "classes.txt").write_text("\n".join(CLASSES))
    assert main_json(["stats", "--data-root", str(root), "--json"], capsys)["class_names"] == CLASSES
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"run{seed}"
        args = [*TRAIN_ARGS, "--data-root", root, "--out", run, "--epochs", 1, "--seed", seed]
        assert cli(["train", *args], capsys)[0] == 0
        runs.append(run)
    saved = torch.load(runs[0] / "best.pt", weights_only=True)
    assert saved["class_names"] == CLASSES and saved["num_classes"] == 3
    result = main_json(["evaluate", str(runs[0] / "best.pt"), "--split", "val", "--json"], capsys)
    assert result["num_images"] == len(resolve_layout(root).read_split("val"))
    assert cli(["compare", *runs, "--out", tmp_path / "cmp"], capsys)[0] == 0
    assert "square" in (tmp_path / "cmp" / "report.md").read_text()


def main_json(argv: list[str], capsys) -> dict:
    from vocseg.cli import main

    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
