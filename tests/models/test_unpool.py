"""vocseg.models.unpool: "Wilson's model" against Table 2's parameters; the export-friendly 2x2 max-unpooling
against torch's own, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers import assert_parameter_count, table_count
from vocseg.models.unpool import MaxUnpool2x2


def test_max_unpool2x2_matches_max_unpool2d():
    x = torch.randn(2, 3, 12, 18)
    x[0, 0, :4, :4] = 1.0  # ties inside windows
    pooled, idx = F.max_pool2d(x, 2, 2, return_indices=True)
    a = pooled.clone().requires_grad_()
    b = pooled.clone().requires_grad_()
    ours, ref = MaxUnpool2x2()(a, idx), F.max_unpool2d(b, idx, 2, 2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    ours.backward(g)
    ref.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


ENCODER = [(3, 32), (32, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
DECODER = [(1024, 512), (512, 256), (256, 128), (128, 64), (64, 32)]
TABLE_2 = [  # conv -> BN, a 2x2 max pool after every stage but the first; unpool -> deconv -> BN back up
    *[r for cin, cout in ENCODER for r in (("conv", cin, cout, 3), ("bn", cout, cout, 0))],
    *[("pool", c, c, 2) for _, c in ENCODER[1:]],
    *[r for cin, cout in DECODER for r in (("unpool", cin, cin, 2), ("deconv", cin, cout, 3), ("bn", cout, cout, 0))],
    ("deconv", 32, 32, 3),
    ("bn", 32, 32, 0),
    ("conv", 32, 21, 1),
]


def test_parameter_count_matches_table_2():
    assert_parameter_count("unpool", table_count(TABLE_2))
