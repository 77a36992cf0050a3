"""vocseg.models.fcn: the paper's baseline FCN against Table 1 (parameters, stage order, sizes at each stage)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import assert_parameter_count, table_count
from vocseg.models import create_model

ENCODER = [(3, 32), (32, 64), (64, 128), (128, 256), (256, 512)]
DECODER = [(512, 512), (512, 256), (256, 128), (128, 64), (64, 32)]
TABLE_1 = [  # Conv -> ReLU -> BN x5, Deconv -> ReLU -> BN x5, a 1x1 classifier
    *[r for cin, cout in ENCODER for r in (("conv", cin, cout, 3), ("relu", cout, cout, 0), ("bn", cout, cout, 0))],
    *[r for cin, cout in DECODER for r in (("deconv", cin, cout, 3), ("relu", cout, cout, 0), ("bn", cout, cout, 0))],
    ("conv", 32, 21, 1),
]


def test_parameter_count_matches_table_1():
    assert_parameter_count("fcn", table_count(TABLE_1))


def test_stages_are_conv_relu_bn_in_table_1s_order():
    model = create_model("fcn", num_classes=21)
    for stages, layer, channels in ((model.encoder, nn.Conv2d, ENCODER), (model.decoder, nn.ConvTranspose2d, DECODER)):
        assert [[type(m) for m in s] for s in stages] == [[layer, nn.ReLU, nn.BatchNorm2d]] * 5
        assert [(s[0].in_channels, s[0].out_channels, s[0].kernel_size, s[0].stride) for s in stages] == [
            (cin, cout, (3, 3), (2, 2)) for cin, cout in channels
        ]


@pytest.mark.parametrize("h, w", [(64, 64), (33, 47), (1, 5)])
def test_encoder_halves_with_ceiling_and_decoder_doubles_exactly(h, w):
    model = create_model("fcn", num_classes=21).eval()
    sizes = []
    for stage in (*model.encoder, *model.decoder):
        stage.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    down = [(math.ceil(h / 2**k), math.ceil(w / 2**k)) for k in range(1, 6)]
    bottom = down[-1]
    up = [(bottom[0] * 2**k, bottom[1] * 2**k) for k in range(1, 6)]
    assert sizes == down + up
    assert out.shape == (1, 21, h, w)  # cropped back from up[-1], which is at least h x w
