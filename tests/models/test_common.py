"""vocseg.models.common: Xavier init, padding to a multiple and cropping back, against torch's own ops."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vocseg.models.common import count_parameters, crop_to, pad_to_multiple, xavier_init


def test_xavier_init_bounds_convs_and_zeroes_their_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ConvTranspose2d(64, 32, 4, bias=False))
    bn_before = model[1].weight.clone()
    xavier_init(model)
    for conv in (model[0], model[2]):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot and Bengio (2010), uniform
        w = conv.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(-a, a) has sd a / sqrt(3)
    assert torch.equal(model[0].bias, torch.zeros(64)) and model[2].bias is None
    assert torch.equal(model[1].weight, bn_before)  # norms keep their own init


@pytest.mark.parametrize("h, w", [(32, 32), (33, 47), (1, 63)])
def test_pad_to_multiple_pads_bottom_right_with_zeros(h, w):
    x = torch.randn(2, 3, h, w)
    y = pad_to_multiple(x, 32)
    assert y.shape[-2] % 32 == 0 and y.shape[-1] % 32 == 0
    assert y.shape[-2] - h < 32 and y.shape[-1] - w < 32
    assert torch.equal(y[..., :h, :w], x)  # the image stays at the top left, pixel for pixel
    assert y[..., h:, :].abs().sum() == 0 and y[..., :, w:].abs().sum() == 0


def test_crop_to_equals_slicing_and_undoes_the_pad():
    x = torch.randn(1, 4, 40, 50)
    torch.testing.assert_close(crop_to(x, 33, 47), x[..., :33, :47], rtol=0, atol=0)
    torch.testing.assert_close(crop_to(pad_to_multiple(x, 32), 40, 50), x, rtol=0, atol=0)


def test_count_parameters():
    assert count_parameters(nn.Conv2d(3, 8, 3)) == 3 * 8 * 9 + 8
    assert count_parameters(nn.Sequential()) == 0
