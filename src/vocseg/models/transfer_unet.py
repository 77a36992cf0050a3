"""A U-Net on a pretrained torchvision ResNet encoder, optionally with ASPP (a DeepLabV3+-like model).

Not from the paper: a stronger transfer-learning baseline that reuses the paper's ``transfer`` model's
encoder and offline-weights handling (``transfer.py``) with a skip-connected decoder.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VocsegError
from .base import SegmentationModel
from .registry import CompileSpeed, register_model
from .transfer import (
    ENCODER_LAYERS,
    ENCODER_STAGE_CHANNELS,
    ENCODERS,
    _encoder_spec,
    load_resnet_encoder,
    require_bools,
)

UNET_ENCODERS = tuple(ENCODERS)  # resnet18, resnet34, resnet50
DECODER_CHANNELS = (256, 128, 64, 32)  # decoder blocks at 1/16, 1/8, 1/4, 1/2 of the input size
UPSAMPLE_MODES = ("bilinear", "nearest")
ASPP_CHANNELS = 256
ASPP_RATES = (6, 12, 18)  # DeepLabV3's rates for output stride 16
ASPP_DROPOUT = 0.1
AUX_CHANNELS = {"resnet18": 64, "resnet34": 64, "resnet50": 256}  # mmseg's FCNHead widths on these encoders
AUX_DROPOUT = 0.1


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BatchNorm -> ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def kaiming_init(module: nn.Module) -> None:
    """He-normal convs (each is followed by a ReLU), BN at identity: the usual init for a ReLU decoder."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def xavier_classifier(conv: nn.Conv2d) -> None:
    """Xavier-uniform weights and zero bias: the paper's init, kept for every 1x1 classifier."""
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)


def dilate_last_stage(layer: nn.Sequential, dilation: int = 2) -> None:
    """Turn a stride-2 ResNet stage into a stride-1 stage with atrous 3x3 convs, in place.

    The same scheme as torchvision's ``replace_stride_with_dilation`` (which ``BasicBlock``, used by
    resnet18/34, does not support): the first block loses its stride and keeps dilation 1, the 3x3 convs
    of the later blocks get ``dilation``. No parameter changes, so ImageNet weights load as they are.
    """
    for i, block in enumerate(layer):
        for m in block.modules():
            if not isinstance(m, nn.Conv2d):
                continue
            if i == 0:
                m.stride = (1, 1)
            elif m.kernel_size == (3, 3):
                m.dilation, m.padding = (dilation, dilation), (dilation, dilation)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in DeepLabV3: a 1x1 branch, three atrous 3x3 branches and an
    image-pooling branch, concatenated and projected to ``channels`` by 1x1 conv-BN-ReLU and dropout.

    The image-pooling branch is a 1x1 conv with bias and ReLU but no BN (DeepLabV3 has one): BN over a
    1x1 map cannot train with a batch of one image.
    """

    def __init__(self, cin: int, channels: int = ASPP_CHANNELS, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, channels, 1)] + [conv_bn_relu(cin, channels, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, channels, 1), nn.ReLU(inplace=True))
        self.project = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout(ASPP_DROPOUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class AuxHead(nn.Module):
    """mmsegmentation's auxiliary ``FCNHead`` (one conv): 3x3 conv-BN-ReLU, dropout, 1x1 classifier.

    It reads layer3 (1/16) and trains with ``aux_weight`` times its cross-entropy, so the encoder gets
    a class signal of its own besides the one that reaches it through the decoder (deep supervision;
    mmseg's voc12aug configs weight it 0.4). Used only in training: evaluation and export never run it.
    Its logits stay on layer3's grid and the loss compares them with the labels at the cells' centres
    (nnU-Net's deep supervision), where mmseg upsamples them to the input's size first: that upsampling and
    a second full-size cross-entropy cost a noticeable share of a step, the head on its grid almost nothing
    (docs/benchmarks.md, section (i)).
    """

    def __init__(self, cin: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin, channels)
        self.dropout = nn.Dropout2d(AUX_DROPOUT)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


class DecoderBlock(nn.Module):
    """Upsample x2 to the skip's size (unless ``resize`` is false: same size), concatenate the skip,
    two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int, mode: str, resize: bool = True) -> None:
        super().__init__()
        self.mode = mode
        self.resize = resize
        self.convs = nn.Sequential(conv_bn_relu(cin + skip, cout), conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.resize:
            x = upsample(x, skip.shape[-2:], self.mode)
        return self.convs(torch.cat([x, skip], dim=1))


def upsample(x: torch.Tensor, size: torch.Size, mode: str) -> torch.Tensor:
    """``x`` resized to ``size`` (an exact multiple of its size: the input is padded to the stride)."""
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_options(encoder: str, upsample_mode: str, decoder_channels: object, **flags: bool) -> None:
    _encoder_spec(encoder, model="transfer_unet", valid=UNET_ENCODERS)
    if not (
        isinstance(decoder_channels, (list, tuple))
        and len(decoder_channels) == len(DECODER_CHANNELS)
        and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in decoder_channels)
    ):
        raise VocsegError(
            f"model 'transfer_unet': decoder_channels must be {len(DECODER_CHANNELS)} positive integers "
            f"(blocks at 1/16, 1/8, 1/4, 1/2; default {list(DECODER_CHANNELS)}), got {decoder_channels!r}"
        )
    if upsample_mode not in UPSAMPLE_MODES:
        raise VocsegError(
            f"model 'transfer_unet': unknown upsample {upsample_mode!r}; valid: {', '.join(UPSAMPLE_MODES)}"
        )
    require_bools("transfer_unet", **flags)


@register_model(
    "transfer_unet",
    source="vocseg (U-Net + ResNet)",
    offline_kwargs={"pretrained": False, "weights": None},
    channels_last=True,  # faster in channels-last on CPU and GPU (docs/benchmarks.md, sections (d) and (f))
    # slower compiled on an H100 (ResNet-34; ResNet-50 + ASPP gained 0.998x on an H200): auto never compiles it
    gpu_compile=CompileSpeed(eager_ips=569.6, compiled_ips=490.9, one_off_s=39.9),
    description="U-Net decoder, skips from every stage of an ImageNet ResNet-18/34/50; aspp=true: DeepLabV3+-like",
)
class TransferUNet(SegmentationModel):
    """U-Net decoder on a torchvision ResNet encoder; ``aspp=True`` makes it DeepLabV3+-like.

    Encoder: a torchvision ResNet (``resnet34`` by default, ``resnet18`` or ``resnet50``) without
    ``avgpool``/``fc``, stored under ``encoder.`` with torchvision's layer names, so its state-dict keys
    are ``encoder.`` + ResNet keys. Skips come from every stage: the stem (conv1-bn1-relu, 1/2 of the
    input), layer1 (1/4), layer2 (1/8), layer3 (1/16) and layer4 (1/32).

    Decoder: four blocks at 1/16, 1/8, 1/4 and 1/2 with 256, 128, 64, 32 channels (``decoder_channels``);
    each upsamples x2 (``upsample="bilinear"`` or ``"nearest"``), concatenates the stage's skip and
    applies two 3x3 conv-BN-ReLU. A 1x1 classifier and a final x2 upsample give full-resolution logits
    (classifying at 1/2 and then upsampling equals upsampling the last block's channels first: both maps
    are linear, and the interpolation weights sum to one; it is 16 times cheaper). Decoder and ASPP convs are Kaiming
    initialised; the classifier is Xavier initialised, like the paper's models.

    ``aspp=True`` puts an ASPP module (DeepLabV3: 1x1 conv, 3x3 atrous convs at rates 6/12/18, image
    pooling; 256 channels) on the layer4 features. Its rates are DeepLabV3+'s for output stride 16, so
    layer4 then runs at 1/16 (its stride replaced by dilation 2, as DeepLabV3+ does; no parameter
    changes) rather than scaling the rates down to 3/6/9 at 1/32: the deep features keep 4 times as
    many positions, at about 4 times layer4's cost. The first decoder block then fuses the ASPP output
    with layer3 at 1/16 without upsampling.

    The input is zero-padded at the bottom/right to a multiple of the encoder's stride (32, or 16 with
    ``aspp``) and the logits cropped back, so any ``H x W`` works.

    Args:
        encoder: ``"resnet34"`` (default), ``"resnet18"`` or ``"resnet50"``.
        pretrained: load torchvision's ImageNet weights (from ``$TORCH_HOME/hub/checkpoints`` when cached;
            offline without them: a ``VocsegError`` naming the file, its URL and the folder).
        weights: path of a local ResNet state dict; takes precedence over ``pretrained``.
        freeze_encoder: no gradients for the encoder, whose BN layers then stay in eval mode.
        aspp: add the ASPP module (DeepLabV3+-like model, output stride 16).
        upsample: ``"bilinear"`` (default) or ``"nearest"``, for every upsampling step.
        decoder_channels: the four blocks' widths, default ``(256, 128, 64, 32)`` (smp's ``Unet``'s first
            four). ``(128, 64, 32, 16)`` makes a step cheaper, but lost mIoU in strong_cpu.yaml's
            15-minute runs (docs/results.md, "Tried on top of strong_cpu.yaml at 15 minutes").
        aux: add mmsegmentation's auxiliary FCN head on layer3 (:class:`AuxHead`). In training mode the
            model then returns ``{"out": logits, "aux": aux_logits}``, the aux logits on the 1/16 grid of
            the padded input (``aux_stride``), and the training loop adds ``aux_weight`` times their
            cross-entropy against the labels at the cells' centres; in eval mode it returns the logits
            alone, so evaluation, prediction and export are unchanged (``has_aux``).

    ``input_normalization`` is ImageNet's ``(mean, std)`` when pretrained or local weights are loaded,
    else ``None`` (train with the dataset's statistics).
    """

    def __init__(
        self,
        num_classes: int = 21,
        encoder: str = "resnet34",
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        freeze_encoder: bool = False,
        aspp: bool = False,
        upsample: str = "bilinear",
        decoder_channels: tuple[int, ...] | list[int] = DECODER_CHANNELS,
        aux: bool = False,
    ) -> None:
        super().__init__()
        _check_options(
            encoder,
            upsample,
            decoder_channels,
            pretrained=pretrained,
            freeze_encoder=freeze_encoder,
            aspp=aspp,
            aux=aux,
        )
        resnet = ENCODERS[encoder][0](weights=None)
        self.input_normalization = load_resnet_encoder(resnet, encoder, pretrained, weights)
        if aspp:
            dilate_last_stage(resnet.layer4)
        self.encoder = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in ENCODER_LAYERS))
        self.stride = 16 if aspp else 32
        self.upsample_mode = upsample
        self._build_decoder(ENCODER_STAGE_CHANNELS[encoder], num_classes, aspp, tuple(decoder_channels))
        self.aux_stride = 16  # the aux logits are on layer3's 1/16 grid (of the padded input)
        self.aux_head = AuxHead(ENCODER_STAGE_CHANNELS[encoder][3], AUX_CHANNELS[encoder], num_classes) if aux else None
        if self.aux_head is not None:
            kaiming_init(self.aux_head)
            xavier_classifier(self.aux_head.classifier)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def _build_decoder(
        self, stage_channels: tuple[int, ...], num_classes: int, aspp: bool, widths: tuple[int, ...]
    ) -> None:
        """ASPP (or nothing), the four decoder blocks and the classifier, freshly initialised."""
        *skips, deepest = stage_channels
        self.aspp = ASPP(deepest) if aspp else None
        cin = ASPP_CHANNELS if aspp else deepest
        blocks = []
        for i, (skip, cout) in enumerate(zip(reversed(skips), widths)):
            # With ASPP, layer4 runs at 1/16 like layer3: the first block has nothing to upsample.
            blocks.append(DecoderBlock(cin, skip, cout, self.upsample_mode, resize=not (aspp and i == 0)))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        kaiming_init(self.decoder)
        if self.aspp is not None:
            kaiming_init(self.aspp)
        xavier_classifier(self.classifier)

    @property
    def has_aux(self) -> bool:
        """Whether training returns ``{"out", "aux"}`` (the model was built with ``aux=True``)."""
        return self.aux_head is not None

    def train(self, mode: bool = True) -> TransferUNet:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # keep the frozen encoder's BN running statistics fixed
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of the stem (1/2) and of layer1..layer4 (1/4 .. 1/32, or 1/16 for layer4 with ASPP)."""
        e = self.encoder
        stem = e.relu(e.bn1(e.conv1(x)))
        f1 = e.layer1(e.maxpool(stem))
        f2 = e.layer2(f1)
        f3 = e.layer3(f2)
        return [stem, f1, f2, f3, e.layer4(f3)]

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        *skips, y = self.encode(x)
        layer3 = skips[-1]
        if self.aspp is not None:
            y = self.aspp(y)
        for block in self.decoder:
            y = block(y, skips.pop())
        logits = upsample(self.classifier(y), x.shape[-2:], self.upsample_mode)
        if self.training and self.has_aux:
            return {"out": logits, "aux": self.aux_head(layer3)}  # on layer3's grid: see aux_stride
        return logits
