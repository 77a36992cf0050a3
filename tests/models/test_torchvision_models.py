"""Tests of the torchvision segmentation models: pretrained weights from torch.hub's cache (made by the
test), the offline error, the auxiliary-head convention, agreement with torchvision's own forward, and
``pretrained_model``. No network is used."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torchvision

from helpers import IMAGENET_NORM, TORCHVISION_SEGMENTATION, assert_parameter_count
from vocseg.errors import VocsegError
from vocseg.models import create_model
from vocseg.models.torchvision_models import SPECS, pretrained_model

COCO = "COCO_WITH_VOC_LABELS_V1"
CHEAP = ["deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]  # small enough to save and load


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def randomise(model: torch.nn.Module, seed: int = 7) -> dict:
    """``model``'s state dict with values no fresh init matches."""
    torch.manual_seed(seed)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for _, b in model.named_buffers():
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)
    return model.state_dict()


def checkpoints(tmp_path) -> str:
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def file_name(weights) -> str:
    return os.path.basename(weights.url)


def coco(name: str):
    return torchvision.models.get_model_weights(name).COCO_WITH_VOC_LABELS_V1


def tv_model(name: str, aux: bool = True) -> torch.nn.Module:
    """torchvision's ``name`` with 21 classes, nothing pretrained (no download), aux head as asked where it has one."""
    extra = {"aux_loss": aux} if SPECS[name].has_aux_head else {}
    return torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=21, **extra)


def save_random_coco_weights(name: str, tmp_path) -> dict:
    """A random full state dict of ``name`` saved as torchvision's VOC-label weights file in the cache."""
    state = randomise(tv_model(name))
    torch.save(state, os.path.join(checkpoints(tmp_path), file_name(coco(name))))
    return state


def assert_state_equals(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


# ---------------------------------------------------------------- whole-model weights


def test_weights_file_names_are_torchvisions():
    assert file_name(coco("deeplabv3_resnet50")) == "deeplabv3_resnet50_coco-cd0a2569.pth"
    assert file_name(coco("lraspp_mobilenet_v3_large")) == "lraspp_mobilenet_v3_large-d234d4ea.pth"


@pytest.mark.parametrize("name", [*CHEAP, "deeplabv3_resnet50"])
def test_coco_weights_from_torch_home_cache(offline, tmp_path, name):
    state = save_random_coco_weights(name, tmp_path)
    model = create_model(name, weights=COCO)
    assert_state_equals(model.state_dict(), state)  # torchvision's keys, every tensor loaded
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []  # the cache was used: no network, no download, no hash check
    offline_keys = set(create_model(name, offline=True).state_dict())
    assert offline_keys == set(state)  # a checkpoint of the pretrained model reloads offline


def test_coco_weights_without_aux_head(offline, tmp_path):
    name = "deeplabv3_mobilenet_v3_large"
    state = save_random_coco_weights(name, tmp_path)
    model = create_model(name, weights=f"DeepLabV3_MobileNet_V3_Large_Weights.{COCO}", aux_loss=False)
    assert model.aux_classifier is None and not model.has_aux
    assert_state_equals(model.state_dict(), {k: v for k, v in state.items() if not k.startswith("aux_")})


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "lraspp_mobilenet_v3_large"])
def test_coco_weights_offline_without_cache_fail_fast(offline, tmp_path, name):
    start = time.perf_counter()
    with pytest.raises(VocsegError) as e:
        create_model(name, weights=COCO)
    assert time.perf_counter() - start < 5
    msg = str(e.value)
    folder = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints")
    assert file_name(coco(name)) in msg and folder in msg and coco(name).url in msg
    assert "weights=PATH" in msg and "pretrained_backbone=false" in msg
    assert not os.path.exists(os.path.join(folder, file_name(coco(name))))


def test_coco_weights_need_21_classes():
    with pytest.raises(VocsegError, match="num_classes=21"):
        create_model("lraspp_mobilenet_v3_large", num_classes=5, weights=COCO)


def test_unknown_weights_name_lists_valid_ones():
    with pytest.raises(VocsegError, match=COCO):
        create_model("fcn_resnet50", weights="IMAGENET_V9", pretrained_backbone=False)


@pytest.mark.parametrize("nested", [False, True])
def test_local_full_weights_file(offline, tmp_path, nested):
    name = "lraspp_mobilenet_v3_large"
    state = randomise(tv_model(name))
    path = tmp_path / "mine.pth"
    torch.save({"model": state} if nested else state, path)  # a vocseg checkpoint holds it under "model"
    model = create_model(name, weights=str(path))
    assert_state_equals(model.state_dict(), state)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []


def test_local_file_without_aux_head_suggests_aux_loss_false(tmp_path):
    name = "deeplabv3_mobilenet_v3_large"
    state = randomise(tv_model(name, aux=False))
    path = tmp_path / "no-aux.pth"
    torch.save(state, path)
    with pytest.raises(VocsegError, match="aux_loss=false") as e:
        create_model(name, weights=str(path))
    assert "no-aux.pth" in str(e.value)
    model = create_model(name, weights=str(path), aux_loss=False)
    assert_state_equals(model.state_dict(), state)


# ---------------------------------------------------------------- ImageNet backbone weights


@pytest.mark.parametrize(
    ("name", "arch", "strip"),
    [("lraspp_mobilenet_v3_large", "mobilenet_v3_large", "features."), ("fcn_resnet50", "resnet50", "")],
)
def test_backbone_weights_from_torch_home_cache(offline, tmp_path, name, arch, strip):
    """torchvision's ImageNet classifier file, cached, fills the backbone (its classifier head is dropped)."""
    weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
    state = randomise(torchvision.models.get_model(arch, weights=None))
    torch.save(state, os.path.join(checkpoints(tmp_path), file_name(weights)))
    model = create_model(name)  # pretrained_backbone=True is the default
    expected = {k.removeprefix(strip): v for k, v in state.items() if k.startswith(strip) and not k.startswith("fc.")}
    assert_state_equals(model.backbone.state_dict(), expected)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []


def test_backbone_weights_offline_error(offline, tmp_path):
    start = time.perf_counter()
    with pytest.raises(VocsegError) as e:
        create_model("deeplabv3_mobilenet_v3_large")
    assert time.perf_counter() - start < 5
    msg = str(e.value)
    assert "mobilenet_v3_large-8738ca79.pth" in msg and "pretrained_backbone=false" in msg
    assert os.path.join(str(tmp_path / "torch"), "hub", "checkpoints") in msg


def test_no_pretraining_has_no_input_normalization(offline):
    model = create_model("lraspp_mobilenet_v3_large", pretrained_backbone=False)
    assert model.input_normalization is None
    assert offline == []


# ---------------------------------------------------------------- forward and the auxiliary head


@pytest.mark.parametrize("name", CHEAP)
def test_forward_matches_torchvision(name):
    """At a size that needs no padding, the wrapper computes exactly torchvision's ``out``."""
    reference = tv_model(name).eval()
    state = randomise(reference)
    model = create_model(name, offline=True).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x)["out"])


def test_aux_head_convention():
    model = create_model("deeplabv3_mobilenet_v3_large", offline=True)
    assert model.has_aux
    model.train()
    out = model(torch.randn(2, 3, 45, 67))
    assert set(out) == {"out", "aux"} and all(v.shape == (2, 21, 45, 67) for v in out.values())
    model.eval()
    with torch.no_grad():
        assert isinstance(model(torch.randn(1, 3, 45, 67)), torch.Tensor)
    no_aux = create_model("deeplabv3_mobilenet_v3_large", offline=True, aux_loss=False).train()
    assert not no_aux.has_aux and isinstance(no_aux(torch.randn(2, 3, 45, 67)), torch.Tensor)


def test_aux_loss_defaults_and_errors():
    assert not create_model("lraspp_mobilenet_v3_large", offline=True).has_aux
    with pytest.raises(VocsegError, match="aux_loss=false"):
        create_model("lraspp_mobilenet_v3_large", offline=True, aux_loss=True)
    with pytest.raises(VocsegError, match="pretrained_backbone"):
        create_model("lraspp_mobilenet_v3_large", pretrained_backbone="no")


# ---------------------------------------------------------------- pretrained_model


def test_pretrained_model_for_scoring(offline, tmp_path):
    name = "deeplabv3_mobilenet_v3_large"
    state = save_random_coco_weights(name, tmp_path)
    model = pretrained_model(name, COCO)
    assert not model.training and not model.has_aux  # the aux head is not needed to score
    assert_state_equals(model.state_dict(), {k: v for k, v in state.items() if not k.startswith("aux_")})
    assert model.input_normalization == IMAGENET_NORM
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 21, 37, 53)
    assert offline == []


def test_pretrained_model_errors(offline, tmp_path):
    with pytest.raises(VocsegError, match="deeplabv3_resnet50"):  # lists the valid names
        pretrained_model("transfer", COCO)
    with pytest.raises(VocsegError) as e:
        pretrained_model("fcn_resnet50", COCO)
    assert "fcn_resnet50_coco-1167a1af.pth" in str(e.value)
    assert os.path.join(str(tmp_path / "torch"), "hub", "checkpoints") in str(e.value)


def test_weights_none_string_means_no_weights(offline):
    """``--model-arg weights=none`` arrives as the string "none"."""
    model = create_model("lraspp_mobilenet_v3_large", weights="none", pretrained_backbone=False)
    assert model.input_normalization is None


# ---------------------------------------------------------------- the CLI, without a checkpoint file


def test_evaluate_and_predict_torchvisions_weights_without_a_checkpoint(offline, tmp_path, tiny_voc, capsys):
    """`vocseg evaluate/predict --model NAME --weights COCO_WITH_VOC_LABELS_V1`: the weights file placed in
    TORCH_HOME is what scores the split (checked against the model built from the same state dict)."""
    import json

    import numpy as np
    from PIL import Image

    from vocseg.cli import main
    from vocseg.data.transforms import SegmentationPresetEval
    from vocseg.data.voc import VOCSegmentation
    from vocseg.metrics import ConfusionMatrix

    name = "lraspp_mobilenet_v3_large"
    state = save_random_coco_weights(name, tmp_path)
    argv = ["--model", name, "--weights", COCO, "--device", "cpu"]
    assert main(["evaluate", *argv, "--data-root", str(tiny_voc), "--json", "--amp", "none"]) == 0
    got = json.loads(capsys.readouterr().out)
    reference = tv_model(name)
    reference.load_state_dict(state)
    reference.eval()
    ds = VOCSegmentation(tiny_voc, "val", SegmentationPresetEval(*IMAGENET_NORM))
    cm = ConfusionMatrix(21)
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            cm.update(reference(x[None])["out"].argmax(1), y[None])
    assert got["mean_iou"] == pytest.approx(cm.compute()["mean_iou"], abs=1e-6)
    assert got["model"] == name and got["num_images"] == len(ds)

    image = tmp_path / "photo.png"
    Image.fromarray(np.full((41, 57, 3), 120, np.uint8)).save(image)
    assert main(["predict", *argv, str(image), "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (57, 41)
    assert offline == []


@pytest.mark.parametrize("name", TORCHVISION_SEGMENTATION)
def test_offline_build_has_the_parameters_of_the_voc_label_weights(name):
    # Built offline, the models have exactly the parameters of torchvision's VOC-label weights (21 classes,
    # auxiliary head included), so those weights and checkpoints load into them.
    expected = torchvision.models.get_model_weights(name).COCO_WITH_VOC_LABELS_V1.meta["num_params"]
    assert_parameter_count(name, expected, weights=None, pretrained_backbone=False)
