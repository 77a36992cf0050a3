"""vocseg.models.transfer: the pretrained ResNet encoder of Table 3's model: ImageNet weights from the
torch hub cache or a file, an actionable error offline, a frozen encoder (all without a network)."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torchvision

from helpers import (
    IMAGENET_NORM,
    R18,
    R18_FILE,
    assert_encoder_equals,
    assert_frozen_encoder,
    assert_parameter_count,
    random_resnet_state,
    resnet_without_fc,
    table_count,
)
from vocseg.errors import VocsegError
from vocseg.models import create_model


def test_unknown_encoder():
    with pytest.raises(VocsegError, match="resnet18"):
        create_model("transfer", encoder="vgg16", pretrained=False)


def test_pretrained_weights_from_torch_home_cache(offline, tmp_path):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = random_resnet_state()
    torch.save(state, checkpoints / R18_FILE)
    model = create_model("transfer", encoder="resnet18", pretrained=True)
    assert_encoder_equals(model, state)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []  # the cache was used: no network, no download, no hash check


def test_pretrained_offline_without_cache_fails_fast(offline, tmp_path):
    start = time.perf_counter()
    with pytest.raises(VocsegError) as e:
        create_model("transfer", encoder="resnet18", pretrained=True)
    assert time.perf_counter() - start < 5
    msg = str(e.value)
    folder = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints")
    assert R18_FILE in msg and folder in msg and R18.url in msg
    assert "pretrained=false" in msg and "pretrained: false" in msg
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / R18_FILE).exists()


def test_resnet34_is_the_default_encoder(offline):
    with pytest.raises(VocsegError, match="resnet34-b627a593.pth"):
        create_model("transfer")


def test_weights_path_takes_precedence(offline, tmp_path):
    state = random_resnet_state(seed=3)
    path = tmp_path / "my-resnet18.pth"
    torch.save(state, path)
    model = create_model("transfer", encoder="resnet18", weights=str(path))  # pretrained=True is ignored
    assert_encoder_equals(model, state)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []


def test_weights_path_missing(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(VocsegError, match="nope.pth"):
        create_model("transfer", encoder="resnet18", weights=str(path))


def test_weights_path_wrong_keys(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(VocsegError, match="wrong.pth"):
        create_model("transfer", encoder="resnet18", weights=str(path))
    r18 = tmp_path / "r18.pth"
    torch.save(random_resnet_state(), r18)
    with pytest.raises(VocsegError, match="r18.pth"):  # resnet18 weights for a resnet34 encoder
        create_model("transfer", encoder="resnet34", weights=str(r18))


def test_no_pretraining_has_no_input_normalization():
    model = create_model("transfer", encoder="resnet18", pretrained=False)
    assert model.input_normalization is None


def test_freeze_encoder():
    model = create_model("transfer", encoder="resnet18", pretrained=False, freeze_encoder=True)
    assert_frozen_encoder(model)
    model.eval()
    assert not model.training


# Table 3's decoder and classifier; the encoder is torchvision's ResNet without its fc head.
TABLE_3_DECODER = [
    *[
        r
        for cin, cout in [(512, 256), (256, 128), (128, 64), (64, 32), (32, 16)]
        for r in (("deconv", cin, cout, 3), ("bn", cout, cout, 0))
    ],
    ("conv", 16, 21, 1),
]


@pytest.mark.parametrize(
    "encoder, weights",
    [("resnet34", torchvision.models.ResNet34_Weights.IMAGENET1K_V1), ("resnet18", R18)],
)
def test_parameter_count_matches_table_3(encoder, weights):
    expected = resnet_without_fc(weights) + table_count(TABLE_3_DECODER)
    assert_parameter_count("transfer", expected, pretrained=False, encoder=encoder)
