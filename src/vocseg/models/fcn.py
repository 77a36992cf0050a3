"""The paper's baseline fully convolutional network (Table 1)."""

from __future__ import annotations

import torch
from torch import nn

from .base import SegmentationModel
from .common import xavier_init
from .registry import CompileSpeed, register_model

ENCODER_CHANNELS = (32, 64, 128, 256, 512)
DECODER_CHANNELS = (512, 256, 128, 64, 32)


def _conv_relu_bn(cin: int, cout: int) -> nn.Sequential:
    # Table 1 orders each stage Conv -> ReLU -> BN (not the more common Conv -> BN -> ReLU).
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout))


def _deconv_relu_bn(cin: int, cout: int) -> nn.Sequential:
    # output_padding=1 makes each transposed conv exactly double the size (Table 1 omits it; see paper-notes).
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
        nn.ReLU(inplace=True),
        nn.BatchNorm2d(cout),
    )


@register_model(
    "fcn",
    source="paper Table 1",
    description="Baseline FCN: 5 stride-2 convs, 5 transposed convs",
    channels_last=True,  # faster in channels-last (docs/benchmarks.md, section (d))
    gpu_compile=CompileSpeed(eager_ips=1005.6, compiled_ips=1480.5, one_off_s=9.0),  # an H100 (section (j))
)
class FCN(SegmentationModel):
    """Baseline FCN of the paper (Table 1): five stride-2 conv stages down, five transposed convs up.

    Any input size works: the encoder turns H into ceil(H / 32), the decoder doubles five times,
    and the logits are cropped back to ``H x W`` (a conv with stride 2 and padding 1 keeps pixel 2i
    aligned with output i, so the crop is exact).
    """

    def __init__(self, num_classes: int = 21, in_channels: int = 3) -> None:
        super().__init__()
        enc, cin = [], in_channels
        for c in ENCODER_CHANNELS:
            enc.append(_conv_relu_bn(cin, c))
            cin = c
        dec = []
        for c in DECODER_CHANNELS:
            dec.append(_deconv_relu_bn(cin, c))
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        xavier_init(self)

    stride = 1  # no padding needed: the encoder's ceil-division and the crop keep every size exact

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decoder(self.encoder(x)))
