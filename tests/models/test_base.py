"""vocseg.models.base: the shared contract's padding and crop, on toy subclasses whose output is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vocseg.models.base import SegmentationModel


class Pixelwise(SegmentationModel):
    """A 1x1 conv after padding to a multiple of 8: each output pixel depends on its own input pixel only."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.seen: list[tuple[int, int]] = []

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape[-2:]))
        return self.conv(x)


class WithAux(Pixelwise):
    aux_stride = 8

    def forward_padded(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward_padded(x)
        return {"out": out, "aux": F.avg_pool2d(out, 8)}


@pytest.mark.parametrize("h, w", [(8, 8), (9, 15), (1, 30)])
def test_pads_to_the_stride_and_crops_back_pixel_aligned(h, w):
    model = Pixelwise()
    x = torch.randn(2, 3, h, w)
    out = model(x)
    assert model.seen == [(-(-h // 8) * 8, -(-w // 8) * 8)]
    torch.testing.assert_close(out, model.conv(x))  # pixel (i, j) of the output is input pixel (i, j)'s


def test_dict_outputs_crop_the_logits_and_leave_the_aux_grid_whole():
    model = WithAux()
    out = model(torch.randn(1, 3, 9, 15))
    assert out["out"].shape == (1, 4, 9, 15)
    assert out["aux"].shape == (1, 4, 2, 2)  # 16 x 16 padded input on an 8-pixel grid, not cropped


def test_a_subclass_without_forward_padded_fails_loudly():
    with pytest.raises(NotImplementedError):
        SegmentationModel()(torch.zeros(1, 3, 4, 4))
