"""vocseg.models.unpool: the export-friendly 2x2 max-unpooling against torch's own, values and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
