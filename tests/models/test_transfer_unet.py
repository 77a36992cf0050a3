"""Tests of ``transfer_unet`` beyond the shared model contract: encoder weights (cache, local file, offline
error), freeze_encoder, the ASPP variant's shapes and dilation, argument errors. No network is used."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.nn.functional as F
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

R50_FILE = "resnet50-0676ba61.pth"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ---------------------------------------------------------------- encoder weights


def test_local_weights_file_loads_into_encoder(offline, tmp_path):
    state = random_resnet_state()
    path = tmp_path / "my-resnet18.pth"
    torch.save(state, path)
    model = create_model("transfer_unet", encoder="resnet18", weights=str(path))  # pretrained=True is ignored
    assert_encoder_equals(model, state)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []


def test_local_weights_with_aspp_keep_the_weights(offline, tmp_path):
    """Dilating layer4 for ASPP changes no parameter: the file loads as it is."""
    state = random_resnet_state(seed=5)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": state}, path)  # nested under "state_dict" works too
    model = create_model("transfer_unet", encoder="resnet18", weights=str(path), aspp=True)
    assert_encoder_equals(model, state)


def test_pretrained_weights_from_torch_home_cache(offline, tmp_path):
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = random_resnet_state(seed=11)
    torch.save(state, checkpoints / R18_FILE)
    model = create_model("transfer_unet", encoder="resnet18")
    assert_encoder_equals(model, state)
    assert model.input_normalization == IMAGENET_NORM
    assert offline == []  # the cache was used: no network


def test_offline_without_cache_names_file_and_folder(offline, tmp_path):
    start = time.perf_counter()
    with pytest.raises(VocsegError) as e:
        create_model("transfer_unet", encoder="resnet18")
    assert time.perf_counter() - start < 5
    msg = str(e.value)
    folder = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints")
    assert R18_FILE in msg and folder in msg and R18.url in msg
    assert "weights=PATH" in msg and "pretrained=false" in msg
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / R18_FILE).exists()


@pytest.mark.parametrize(("encoder", "file"), [("resnet34", "resnet34-b627a593.pth"), ("resnet50", R50_FILE)])
def test_offline_error_names_the_encoders_file(offline, encoder, file):
    kwargs = {} if encoder == "resnet34" else {"encoder": encoder}  # resnet34 is the default
    with pytest.raises(VocsegError, match=file):
        create_model("transfer_unet", **kwargs)


def test_wrong_weights_file_is_named(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(random_resnet_state(), path)
    with pytest.raises(VocsegError, match="r18.pth"):  # resnet18 weights for a resnet50 encoder
        create_model("transfer_unet", encoder="resnet50", weights=str(path))


def test_no_pretraining_has_no_input_normalization():
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False)
    assert model.input_normalization is None


def test_offline_build_keeps_the_state_dict_keys(offline, tmp_path):
    """A checkpoint of a pretrained model reloads into one built offline."""
    path = tmp_path / "r18.pth"
    torch.save(random_resnet_state(), path)
    pretrained = create_model("transfer_unet", encoder="resnet18", weights=str(path), aspp=True)
    rebuilt = create_model("transfer_unet", encoder="resnet18", aspp=True, offline=True)
    rebuilt.load_state_dict(pretrained.state_dict())


# ---------------------------------------------------------------- freeze_encoder


def test_freeze_encoder():
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False, freeze_encoder=True)
    assert_frozen_encoder(model)
    assert all(p.grad is not None for p in model.decoder.parameters())


# ---------------------------------------------------------------- ASPP and decoder shapes


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
def test_aspp_runs_layer4_at_one_sixteenth(encoder):
    channels = {"resnet18": (64, 64, 128, 256, 512), "resnet50": (64, 256, 512, 1024, 2048)}[encoder]
    plain = create_model("transfer_unet", encoder=encoder, pretrained=False).eval()
    aspp = create_model("transfer_unet", encoder=encoder, pretrained=False, aspp=True).eval()
    assert plain.stride == 32 and aspp.stride == 16
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        plain_feats, aspp_feats = plain.encode(x), aspp.encode(x)
        pooled = aspp.aspp(aspp_feats[-1])
    sizes = [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]
    assert [tuple(f.shape[1:]) for f in plain_feats] == [(c, *hw) for c, hw in zip(channels, sizes)]
    assert [tuple(f.shape[-2:]) for f in aspp_feats] == [*sizes[:4], sizes[3]]  # layer4 stays at 1/16
    assert pooled.shape == (1, 256, 4, 6)


def test_aspp_dilation_matches_torchvision_resnet50():
    """The in-place dilation of layer4 is torchvision's replace_stride_with_dilation for Bottleneck blocks."""
    model = create_model("transfer_unet", encoder="resnet50", pretrained=False, aspp=True).eval()
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True]).eval()
    reference.load_state_dict(model.encoder.state_dict(), strict=False)  # no fc in the encoder
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model.encode(x)[-1]
        ref = reference.layer4(
            reference.layer3(
                reference.layer2(reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))))
            )
        )
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
@pytest.mark.parametrize("aspp", [False, True])
def test_output_size_for_odd_inputs(upsample, aspp):
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False, aspp=aspp, upsample=upsample)
    model.eval()
    for shape in [(1, 3, 8, 13), (2, 3, 97, 131), (1, 3, 333, 517)]:
        with torch.no_grad():
            out = model(torch.randn(*shape))
        assert out.shape == (shape[0], 21, *shape[2:])


@pytest.mark.parametrize("aspp", [False, True])
def test_decoder_channels_set_each_block_width(aspp):
    widths = (128, 64, 32, 16)
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False, aspp=aspp, decoder_channels=widths)
    assert [block.convs[1][0].out_channels for block in model.decoder] == list(widths)
    assert model.classifier.in_channels == 16
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 70, 90)).shape == (1, 21, 70, 90)


def test_aspp_trains_with_a_batch_of_one():
    """The image-pooling branch has no BN, so a single image still trains (DeepLabV3's BN there cannot)."""
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False, aspp=True).train()
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert model.aspp.pool[1].weight.grad is not None


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"encoder": "vgg16"}, "resnet50"),
        ({"upsample": "bicubic"}, "nearest"),
        ({"aspp": "yes"}, "aspp"),
        ({"freeze_encoder": 1}, "freeze_encoder"),
        ({"decoder_channels": [128, 64, 32]}, r"decoder_channels must be 4 positive integers .*\[128, 64, 32\]"),
        ({"decoder_channels": [128, 64, 0, 16]}, "decoder_channels"),
        ({"decoder_channels": "128,64,32,16"}, "decoder_channels"),
    ],
)
def test_bad_arguments_are_named(kwargs, expected):
    with pytest.raises(VocsegError, match=expected):
        create_model("transfer_unet", pretrained=False, **kwargs)


# ---------------------------------------------------------------- the auxiliary head (aux=true)


def test_aux_head_adds_a_training_output_and_leaves_the_logits_alone():
    """The aux head is built after everything else, so the same seed gives the same main path: in eval mode
    a model with ``aux`` computes exactly the logits of one without; in training it adds the aux head's
    logits: its FCN head on layer3, on the 1/16 grid of the padded input (``aux_stride``)."""
    x = torch.randn(2, 3, 70, 90)  # not a multiple of 32: both outputs are cropped back
    torch.manual_seed(0)
    plain = create_model("transfer_unet", encoder="resnet18", pretrained=False).eval()
    torch.manual_seed(0)
    aux = create_model("transfer_unet", encoder="resnet18", pretrained=False, aux=True).eval()
    assert aux.has_aux and not plain.has_aux and plain.aux_head is None
    with torch.no_grad():
        torch.testing.assert_close(aux(x), plain(x), rtol=0, atol=0)
        aux.train()
        aux.aux_head.dropout.eval()  # dropout off, so the hand-computed reference below can match
        out = aux(x)
        layer3 = aux.encode(aux.pad_input(x))[3]  # batch-statistics BN, as in the forward above
        expected = aux.aux_head(layer3)
    assert set(out) == {"out", "aux"} and out["out"].shape == (2, 21, 70, 90) and aux.aux_stride == 16
    assert out["aux"].shape == (2, 21, 6, 6)  # 96 / 16: the padded input's grid
    torch.testing.assert_close(out["aux"], expected, rtol=1e-5, atol=1e-6)
    assert aux.aux_head.conv[0].in_channels == 256 and aux.aux_head.conv[0].out_channels == 64


def test_aux_loss_reaches_the_encoder_but_not_the_decoder():
    model = create_model("transfer_unet", encoder="resnet18", pretrained=False, aux=True).train()
    out = model(torch.randn(2, 3, 64, 64))
    F.cross_entropy(out["aux"], torch.randint(0, 21, (2, 4, 4))).backward()
    assert model.encoder.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert model.encoder.layer4[0].conv1.weight.grad is None  # layer4 is after layer3
    assert all(p.grad is None for p in model.decoder.parameters())


def test_aux_must_be_a_bool():
    with pytest.raises(VocsegError, match="aux"):
        create_model("transfer_unet", encoder="resnet18", pretrained=False, aux="yes")


# ---------------------------------------------------------------- parameter counts


def decoder_rows(stages=(64, 64, 128, 256, 512), aspp=False, widths=(256, 128, 64, 32)):
    """transfer_unet without its encoder: [ASPP], decoder blocks at 1/16 .. 1/2, classifier."""
    *skips, deepest = stages
    rows, cin = [], deepest
    if aspp:  # 1x1 and three atrous 3x3 branches, bias-free image-pooling conv, 1x1 projection of 5 x 256
        rows += [("conv_nobias", deepest, 256, 1), ("bn", 256, 256, 0)]
        rows += [r for _ in range(3) for r in (("conv_nobias", deepest, 256, 3), ("bn", 256, 256, 0))]
        rows += [("conv", deepest, 256, 1), ("conv_nobias", 5 * 256, 256, 1), ("bn", 256, 256, 0)]
        cin = 256
    for skip, cout in zip(reversed(skips), widths):
        rows += [
            ("conv_nobias", cin + skip, cout, 3),
            ("bn", cout, cout, 0),
            ("conv_nobias", cout, cout, 3),
            ("bn", cout, cout, 0),
        ]
        cin = cout
    return rows + [("conv", cin, 21, 1)]


TV = torchvision.models
R50_STAGES = (64, 256, 512, 1024, 2048)
EXPECTED_PARAMS = {
    "resnet34": ({}, resnet_without_fc(TV.ResNet34_Weights.IMAGENET1K_V1) + table_count(decoder_rows())),
    "resnet18-aspp": (
        {"encoder": "resnet18", "aspp": True},
        resnet_without_fc(R18) + table_count(decoder_rows(aspp=True)),
    ),
    "resnet18-narrow": (
        {"encoder": "resnet18", "decoder_channels": [128, 64, 32, 16]},
        resnet_without_fc(R18) + table_count(decoder_rows(widths=(128, 64, 32, 16))),
    ),
    "resnet50-aspp": (
        {"encoder": "resnet50", "aspp": True},
        resnet_without_fc(TV.ResNet50_Weights.IMAGENET1K_V1, 2048) + table_count(decoder_rows(R50_STAGES, aspp=True)),
    ),
}


@pytest.mark.parametrize("key", sorted(EXPECTED_PARAMS))
def test_parameter_count(key):
    kwargs, expected = EXPECTED_PARAMS[key]
    assert_parameter_count("transfer_unet", expected, pretrained=False, **kwargs)
