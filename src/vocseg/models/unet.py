"""The paper's U-Net (Table 4), after Ronneberger et al. (2015) with 'same' convs and instance norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationModel
from .common import pad_to_multiple, xavier_init
from .registry import CompileSpeed, register_model

CHANNEL_MULTIPLIERS = (1, 2, 4, 8, 16)  # conv1..conv5: 64, 128, 256, 512, 1024 with base_channels=64
MULTIPLE = 2 ** (len(CHANNEL_MULTIPLIERS) - 1)  # four 2x2 max pools


def double_conv(cin: int, cout: int) -> nn.Sequential:
    """(Conv3x3, padding 1 -> InstanceNorm2d -> ReLU) twice, as in Table 4's double_conv.

    The convs have stride 1 (U-Net's; the table's stride 2 would shrink the map 4x per block) and no
    bias: the instance norm subtracts each channel's mean, so a bias would do nothing. The norms are
    affine (learnable per-channel scale and shift, playing the role of that bias and of BN's affine).
    """
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False),
        nn.InstanceNorm2d(cout, affine=True),
        nn.ReLU(inplace=True),
    )


@register_model(
    "unet",
    source="paper Table 4",
    description="U-Net: 5 double_conv stages, 4 up-convs with skips",
    gpu_compile=CompileSpeed(eager_ips=140.3, compiled_ips=198.3, one_off_s=12.5),  # an H100 (section (j))
)
class UNet(SegmentationModel):
    """U-Net of the paper (Table 4).

    Encoder: ``double_conv`` stages conv1..conv5 with ``base_channels * (1, 2, 4, 8, 16)`` channels
    (64..1024 by default, the paper's) and a 2x2 max pool between consecutive stages. Decoder: four
    stages up6..up9, each a ``ConvTranspose2d(2x2, stride 2)`` halving the channels, concatenation with
    the encoder map of the same size (skip first, as in U-Net) and a ``double_conv``. A 1x1 classifier
    maps ``base_channels`` to ``num_classes``. Xavier init replaces U-Net's Gaussian init.

    Any ``H x W`` works: the input is zero-padded at the bottom/right to a multiple of 16 (at least
    32 in one direction, so the 1/16 bottleneck has more than one pixel for instance norm) and the
    logits are cropped back. ``base_channels`` exists so a CPU smoke run can use a slimmer net.
    """

    def __init__(self, num_classes: int = 21, base_channels: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        chans = [base_channels * m for m in CHANNEL_MULTIPLIERS]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.encoder.append(double_conv(cin, c))
            cin = c
        self.pool = nn.MaxPool2d(2, stride=2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for c in reversed(chans[:-1]):  # up6/conv6 .. up9/conv9
            self.up.append(nn.ConvTranspose2d(cin, c, 2, stride=2))
            self.decoder.append(double_conv(2 * c, c))
            cin = c
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        xavier_init(self)

    stride = MULTIPLE

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(x, MULTIPLE)
        if x.shape[-2] == MULTIPLE and x.shape[-1] == MULTIPLE:
            # A 16x16 input would leave a 1x1 bottleneck, where instance norm is undefined.
            x = F.pad(x, (0, MULTIPLE, 0, 0))
        return x

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([skips.pop(), up(x)], dim=1))
        return self.classifier(x)
