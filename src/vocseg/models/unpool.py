"""The paper's custom "Wilson's model" (Table 2): a deeper encoder with max pooling and max unpooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationModel
from .common import xavier_init
from .registry import CompileSpeed, register_model

# Table 2: Conv1..Conv6 (3 -> 32 -> ... -> 1024); Deconv6..Deconv1 (1024 -> 512 -> ... -> 32 -> 32).
ENCODER_CHANNELS = (32, 64, 128, 256, 512, 1024)
DECODER_CHANNELS = (512, 256, 128, 64, 32, 32)
# Stages 2 to 6 end in a 2x2 max pool, so the input is downsampled 2**5 = 32 times.
POOLED_STAGES = 5
MULTIPLE = 2**POOLED_STAGES


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # Table 2 lists Conv -> BN; we add the ReLU (see paper-notes) and use stride 1 so the pools downsample.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # A 3x3 transposed conv with stride 1 and padding 1 keeps the size: the unpooling does the upsampling.
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class MaxUnpool2x2(nn.Module):
    """``nn.MaxUnpool2d(2, stride=2)`` for inputs whose pooled map had even H and W, traced without guards.

    Each value of ``x`` goes back to the cell of its 2x2 window that ``indices`` (from
    ``MaxPool2d(2, 2, return_indices=True)``) names; the other three cells are zero. The result and its
    gradient equal ``F.max_unpool2d(x, indices, 2, 2)``, but it is written as a nearest upsampling and a
    mask, because ``max_unpool2d``'s scatter makes ``torch.export`` emit shape guards that reject
    dynamic H/W. ``UnpoolNet`` pads its input to a multiple of 32, so every pooled map is even-sized.
    """

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = (2 * h, 2 * w)
        # Position of the max inside its 2x2 window: 2 * (row % 2) + (col % 2); indices are row * 2w + col.
        cell = (indices // (2 * w) % 2) * 2 + indices % 2
        up_cell = F.interpolate(cell.to(x.dtype), size=size, mode="nearest")
        rows = torch.arange(size[0], device=x.device) % 2
        cols = torch.arange(size[1], device=x.device) % 2
        here = (rows[:, None] * 2 + cols[None, :]).to(x.dtype)
        up_x = F.interpolate(x, size=size, mode="nearest")
        return torch.where(up_cell == here, up_x, torch.zeros((), dtype=x.dtype, device=x.device))


@register_model(
    "unpool",
    source="paper Table 2",
    channels_last=True,  # faster in channels-last (docs/benchmarks.md, section (d))
    gpu_compile=CompileSpeed(eager_ips=221.0, compiled_ips=399.4, one_off_s=14.5),  # an H100 (section (j))
    description="Wilson's model: 6 conv+BN stages, 5 max pools / max unpools, additive skips",
)
class UnpoolNet(SegmentationModel):
    """The paper's "Wilson's model" (Table 2): six conv + BN stages, max pooling after stages 2 to 6,
    a mirrored decoder of max unpooling (with the stored pooling indices) and transposed convs.

    Readings of the table (details in ``docs/paper-notes.md``):

    * every conv and transposed conv uses stride 1 (3x3, padding 1); the five 2x2 max pools downsample
      and the five max unpools upsample (the table's stride 2 on top of the pools would shrink a 224
      input to nothing);
    * each BN is followed by a ReLU (Table 2 lists none, but Table 1's baseline it builds on has one per
      stage; without them the network would be linear apart from the max pools);
    * skip connections are additive: after ``UnpoolK`` the matching encoder feature map (the output of
      ``BndK``, same channels and size) is added, and ``Bnd1`` is added before ``Deconv1``. Adding keeps
      the table's channel plan. There is no skip at stage 6: nothing is computed between ``Pool6`` and
      ``Unpool6``, so adding ``Bnd6`` there would make the stage-6 pooling a no-op;
    * the input is zero-padded at the bottom/right to a multiple of 32 and the logits cropped back,
      so any ``H x W`` works: every pool sees even sizes and each unpool restores its pool's input size
      exactly (no ``output_size`` needed).
    """

    def __init__(self, num_classes: int = 21, in_channels: int = 3) -> None:
        super().__init__()
        enc, cin = [], in_channels
        for c in ENCODER_CHANNELS:
            enc.append(_conv_bn_relu(cin, c))
            cin = c
        dec = []
        for c in DECODER_CHANNELS:
            dec.append(_deconv_bn_relu(cin, c))
            cin = c
        self.encoder = nn.ModuleList(enc)  # Conv1/Bnd1 .. Conv6/Bnd6
        self.decoder = nn.ModuleList(dec)  # Deconv6/Bn6 .. Deconv1/Bn1
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = MaxUnpool2x2()  # = nn.MaxUnpool2d(2, stride=2), export-friendly
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        xavier_init(self)

    stride = MULTIPLE

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder[0](x)
        skips = [x]  # Bnd1 .. Bnd5 outputs, used by the decoder
        pooled = []  # indices of Pool2 .. Pool6
        for i, stage in enumerate(self.encoder[1:], start=2):
            x = stage(x)
            if i < len(self.encoder):  # Bnd2 .. Bnd5
                skips.append(x)
            x, idx = self.pool(x)
            pooled.append(idx)
        # Unpool6 -> Deconv6, then Unpool5 (+Bnd5) -> Deconv5, ..., Unpool2 (+Bnd2) -> Deconv2
        for j, stage in enumerate(self.decoder[:-1]):
            x = self.unpool(x, pooled.pop())
            if j > 0:  # no skip at stage 6 (see the class docstring)
                x = x + skips.pop()
            x = stage(x)
        x = self.decoder[-1](x + skips.pop())  # Bnd1 skip, then Deconv1
        return self.classifier(x)
