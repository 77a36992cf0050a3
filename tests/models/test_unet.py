"""vocseg.models.unet: the paper's U-Net against Table 4 (parameters at the paper's and a slim width), its
instance norms, and the padding that keeps the 1/16 bottleneck over one pixel."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import assert_parameter_count, table_count
from vocseg.models import create_model


def double_conv_rows(cin: int, cout: int) -> list[tuple[str, int, int, int]]:
    # Our reading of Table 4's double_conv: bias-free convs (a norm follows), affine InstanceNorm2d.
    conv_norm_relu = [("conv_nobias", cin, cout, 3), ("in_affine", cout, cout, 0), ("relu", cout, cout, 0)]
    return conv_norm_relu + [("conv_nobias", cout, cout, 3), ("in_affine", cout, cout, 0), ("relu", cout, cout, 0)]


def table_4(base: int = 64) -> list[tuple[str, int, int, int]]:
    c = [base * m for m in (1, 2, 4, 8, 16)]
    rows = double_conv_rows(3, c[0])
    for cin, cout in zip(c, c[1:]):  # conv2 .. conv5, each after a 2x2 max pool
        rows += [("pool", cin, cin, 2), *double_conv_rows(cin, cout)]
    for cin, cout in zip(c[:0:-1], c[-2::-1]):  # up6/conv6 .. up9/conv9: halve, concat the skip, double_conv
        rows += [("deconv", cin, cout, 2), *double_conv_rows(2 * cout, cout)]
    return rows + [("conv", c[0], 21, 1)]


@pytest.mark.parametrize("base", [64, 8])
def test_parameter_count_matches_table_4(base):
    kwargs = {} if base == 64 else {"base_channels": base}  # 64: the paper's widths, the default
    assert_parameter_count("unet", table_count(table_4(base)), **kwargs)


def test_double_convs_use_affine_instance_norm_and_no_conv_bias():
    model = create_model("unet", num_classes=21, base_channels=8)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 2 * 9 and all(n.affine and not n.track_running_stats for n in norms)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m is not model.classifier]
    assert len(convs) == 2 * 9 and all(c.bias is None for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(
    "h, w, padded",
    [(16, 16, (16, 32)), (17, 16, (32, 16)), (40, 70, (48, 80)), (8, 13, (16, 32))],
)
def test_inputs_are_padded_to_16_with_more_than_one_bottleneck_pixel(h, w, padded):
    model = create_model("unet", num_classes=21, base_channels=4).eval()
    bottleneck = []
    model.encoder[-1].register_forward_hook(lambda _m, _i, out: bottleneck.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert tuple(model.pad_input(torch.zeros(1, 3, h, w)).shape[-2:]) == padded
    assert bottleneck == [(padded[0] // 16, padded[1] // 16)] and bottleneck[0] != (1, 1)
    assert out.shape == (1, 21, h, w)
