"""FLOPs per training image (vocseg.models.flops) against hand counts, and on every registered model.

The reference is the textbook count of a convolution, a multiply-add being 2 FLOPs:
forward 2 * Cin/groups * Cout * k * k * Hout * Wout per image; its input gradient and its weight gradient
cost as much again each; the layer seeing the image needs no input gradient. Everything runs on the
``meta`` device (shapes only), so the whole file takes seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vocseg.models import count_gflops, create_model, list_models
from vocseg.models.flops import TrainingFlops, training_flops


def conv_flops(cin: int, cout: int, k: int, hout: int, wout: int, groups: int = 1) -> int:
    """The hand count of one convolution's forward, per image."""
    return 2 * (cin // groups) * cout * k * k * hout * wout


class TinyNet(nn.Module):
    """A stem, a depthwise conv and a strided 1x1 classifier, upsampled back: three counts by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.classifier = nn.Conv2d(8, 21, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(F.relu(self.depthwise(F.relu(self.stem(x)))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_single_conv_matches_the_hand_count():
    s = 32
    flops = training_flops(nn.Conv2d(3, 16, 5, padding=2), image_size=s, batch=3)
    fwd = conv_flops(3, 16, 5, s, s)
    assert flops == TrainingFlops(forward=fwd, backward=fwd)  # the image needs no gradient: weights only


def test_tiny_net_matches_the_hand_count():
    s = 48
    stem, dw, cls = conv_flops(3, 8, 3, s, s), conv_flops(8, 8, 3, s, s, groups=8), conv_flops(8, 21, 1, s // 2, s // 2)
    flops = training_flops(TinyNet(), image_size=s)
    assert flops.forward == stem + dw + cls
    # stem: weight gradient only; depthwise and classifier: input and weight gradients. torch's own formula
    # counts the depthwise weight gradient 8 (= groups) times over; vocseg's replaces it.
    assert flops.backward == stem + 2 * dw + 2 * cls
    assert flops.total == flops.forward + flops.backward


def test_a_module_is_counted_on_a_meta_copy():
    model = TinyNet().eval()
    training_flops(model, image_size=16)
    assert not model.training and model.stem.weight.device.type == "cpu" and model.stem.weight.grad is None


MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_at_64(name):
    flops = training_flops(name, image_size=64)
    with torch.device("meta"):
        eval_gflops = count_gflops(create_model(name, offline=True), 64)
    assert flops.forward > 0
    # Backward = 2x forward less the first layer's input gradient (never needed): 1.95-2.0 for these nets
    assert 1.9 < flops.backward_ratio <= 2.0
    # The training forward adds the auxiliary heads (torchvision's FCN/DeepLabV3) to the eval forward
    assert flops.forward >= eval_gflops * 1e9 * (1 - 1e-9)


@pytest.mark.parametrize("name", ["fcn", "lraspp_mobilenet_v3_large"])  # plain convs; grouped convs and pooling
def test_per_image_whatever_the_batch(name):
    assert training_flops(name, image_size=64, batch=4) == training_flops(name, image_size=64)


def test_pixel_count_scaling_and_model_kwargs():
    # strong.yaml's model: ResNet-50 U-Net + ASPP + aux head. Its convs scale with the pixel count, exactly
    # at sizes that are multiples of the total stride (32).
    kwargs = {"encoder": "resnet50", "aspp": True, "aux": True}
    small, big = training_flops("transfer_unet", 64, **kwargs), training_flops("transfer_unet", 128, **kwargs)
    assert big.forward == pytest.approx(4 * small.forward, rel=1e-3)
    plain = training_flops("transfer_unet", 64, encoder="resnet50")
    assert small.forward > plain.forward  # ASPP and the aux head cost FLOPs
