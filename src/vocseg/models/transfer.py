"""The paper's transfer-learning model, "TFLModel" (Table 3): a torchvision ResNet encoder, a 5-step decoder.

This module also holds the pretrained-weights helpers every model with torchvision weights shares
(``transfer``, ``transfer_unet``, the torchvision segmentation models): weights come from torch.hub's
cache (``$TORCH_HOME/hub/checkpoints``) or a local file, and a missing cached file is downloaded once
with a short socket timeout; offline, that fails at once with a ``VocsegError`` naming the file, its
URL, the cache folder and the alternatives.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from ..errors import VocsegError
from .base import SegmentationModel
from .common import xavier_init
from .registry import CompileSpeed, register_model

ENCODERS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}
# Output channels of the stem (conv1-bn1-relu, 1/2) and of layer1..layer4 (1/4 .. 1/32).
ENCODER_STAGE_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
}
TRANSFER_ENCODERS = ("resnet34", "resnet18")  # the paper's; its decoder starts from layer4's 512 channels
ENCODER_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
ENCODER_CHANNELS = 512  # output of layer4 for resnet18 and resnet34
DECODER_CHANNELS = (256, 128, 64, 32, 16)
MULTIPLE = 32  # the ResNet encoder has stride 32
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation while fetching weights; never hangs for long
PRETRAINED_ALTERNATIVES = (  # the ways out for the ResNet-encoder models when ImageNet weights are missing
    "pass a local ResNet state dict with --model-arg weights=PATH (model_kwargs: {weights: PATH} in a config)",
    "train without pretraining: --model-arg pretrained=false (model_kwargs: {pretrained: false} in a config)",
)


def hub_file_name(weights: Any) -> str:
    """File name torch.hub caches a torchvision weights enum entry under, e.g. ``resnet34-b627a593.pth``."""
    return os.path.basename(urlparse(weights.url).path)


def weights_file_name(encoder: str) -> str:
    """File name torch.hub caches the ImageNet weights of ``encoder`` under, e.g. ``resnet34-b627a593.pth``."""
    return hub_file_name(_encoder_spec(encoder, valid=tuple(ENCODERS))[1])


def weights_cache_dir() -> str:
    """Folder torch.hub looks in for cached weights: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/...``)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def imagenet_normalization(weights: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the preprocessing a torchvision weights enum entry expects (ImageNet's)."""
    t = weights.transforms()
    return tuple(float(m) for m in t.mean), tuple(float(s) for s in t.std)


def _encoder_spec(encoder: str, model: str = "transfer", valid: Sequence[str] = TRANSFER_ENCODERS) -> tuple[Any, Any]:
    """(builder, ImageNet weights) of ``encoder``; one not in ``valid`` is an error naming ``model``."""
    if encoder not in valid:
        raise VocsegError(f"unknown encoder {encoder!r} for model {model!r}; valid: {', '.join(valid)}")
    return ENCODERS[encoder]


def offline_help(what: str, weights: Any, alternatives: Sequence[str]) -> str:
    """Why ``what`` (e.g. "ImageNet weights for resnet34") is missing and every way to fix it."""
    name = hub_file_name(weights)
    folder = weights_cache_dir()
    lines = [
        f"{what} are not available: {name} is not in {folder} and could not be downloaded.",
        f"  - fetch {weights.url} by hand and save it as {os.path.join(folder, name)} "
        f"(set TORCH_HOME to use another cache; the folder is $TORCH_HOME/hub/checkpoints), or",
    ]
    lines += [f"  - {alt}{', or' if i < len(alternatives) - 1 else '.'}" for i, alt in enumerate(alternatives)]
    return "\n".join(lines)


def _offline_help(encoder: str) -> str:
    weights = _encoder_spec(encoder, valid=tuple(ENCODERS))[1]
    return offline_help(f"ImageNet weights for {encoder}", weights, PRETRAINED_ALTERNATIVES)


def load_hub_state_dict(weights: Any, help_text: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision weights enum entry from the torch.hub cache, downloaded only if missing.

    Offline and without a cached file this fails at once with a ``VocsegError``: ``help_text`` (see
    :func:`offline_help`) followed by the download error.
    """
    folder = weights_cache_dir()
    path = os.path.join(folder, hub_file_name(weights))
    if not os.path.isfile(path):
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib's urlopen in torch.hub takes no timeout
        try:
            os.makedirs(folder, exist_ok=True)
            print(f"Downloading {weights.url} to {path}", file=sys.stderr)
            # Like torch.hub's check_hash: the download must match the hash prefix in the file name.
            torch.hub.download_url_to_file(weights.url, path, hash_prefix=_hash_prefix(path), progress=False)
        except (urllib.error.URLError, OSError, RuntimeError, ValueError) as e:
            raise VocsegError(f"{help_text}\n(download error: {e})") from None
        finally:
            socket.setdefaulttimeout(previous)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise VocsegError(
            f"cannot read the cached weights {path}: {e}\n"
            f"Delete the file and try again, or fetch {weights.url} by hand."
        ) from None


def load_imagenet_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of ``encoder`` from the torch.hub cache, downloading them only if they are missing.

    Offline and without a cached file this fails at once with a ``VocsegError`` telling how to fix it.
    """
    weights = _encoder_spec(encoder, valid=tuple(ENCODERS))[1]
    return load_hub_state_dict(weights, _offline_help(encoder))


def _hash_prefix(path: str) -> str | None:
    match = torch.hub.HASH_REGEX.search(os.path.basename(path))
    return match.group(1) if match else None


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ResNet state dict saved with ``torch.save`` (a bare state dict, or one under "state_dict"/"model")."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VocsegError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise VocsegError(f"cannot read weights file {path}: {e}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VocsegError(f"weights file {path} does not hold a state dict of tensors")
    return state


def load_backbone_state(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    *,
    head: Sequence[str] = ("fc.",),
    strip: str = "",
    what: str = "ResNet encoder",
) -> None:
    """Strictly load a classification network's ``state`` into its feature part ``module``.

    Keys starting with a prefix in ``head`` (the classifier: ResNet's ``fc.``) are ignored and ``strip``
    is removed from the front of the others (MobileNetV3 keeps its features under ``features.``). Any
    other mismatch is a ``VocsegError`` naming ``source``.
    """
    state = {k.removeprefix(strip): v for k, v in state.items() if not k.startswith(tuple(head))}
    expected = {k for k in module.state_dict() if not k.startswith(tuple(head))}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise VocsegError(
            f"weights {source} do not match the {what}: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch (e.g. resnet18 weights for resnet34 with equal keys)
        raise VocsegError(f"weights {source} do not fit the {what}: {e}") from None


def _load_into_resnet(resnet: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into the encoder part of ``resnet``; a ``fc.*`` head in ``state`` is ignored."""
    load_backbone_state(resnet, state, source)


def load_resnet_encoder(
    resnet: nn.Module, encoder: str, pretrained: bool, weights: str | os.PathLike | None
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Load a local file (``weights``, first) or the ImageNet weights (``pretrained``) into ``resnet``.

    Returns the ``(mean, std)`` the loaded weights expect, or ``None`` when nothing was loaded. A local
    file is taken to hold ImageNet-trained weights too (e.g. torchvision's file fetched by hand).
    """
    imagenet = ENCODERS[encoder][1]
    if weights is not None:
        _load_into_resnet(resnet, load_weights_file(weights), f"file {os.fspath(weights)}")
    elif pretrained:
        _load_into_resnet(resnet, load_imagenet_state_dict(encoder), f"{imagenet} ({weights_file_name(encoder)})")
    else:
        return None
    return imagenet_normalization(imagenet)


def require_bools(model: str, **flags: Any) -> None:
    """A ``VocsegError`` for the first flag that is not a bool (e.g. the string "false" from a config)."""
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise VocsegError(f"model {model!r}: {flag} must be true or false, got {value!r}")


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_model(
    "transfer",
    source="paper Table 3",
    offline_kwargs={"pretrained": False, "weights": None},
    channels_last=True,  # a ResNet: faster in channels-last (docs/benchmarks.md, section (d))
    gpu_compile=CompileSpeed(eager_ips=723.6, compiled_ips=941.3, one_off_s=17.3),  # an H100 (section (j))
    description="TFLModel: ImageNet ResNet encoder (resnet34/resnet18), 5 transposed-conv decoder",
)
class TransferNet(SegmentationModel):
    """The paper's transfer-learning "TFLModel" (Table 3).

    Encoder: a torchvision ResNet (``resnet34`` as in Table 3, or ``resnet18`` as in the Methods text)
    without ``avgpool``/``fc`` (conv1, bn1, relu, maxpool, layer1-4: stride 32, 512 channels).
    Decoder: five ``ConvTranspose2d(3x3, stride 2, padding 1, output_padding 1)`` 512 -> 256 -> 128 -> 64
    -> 32 -> 16, each followed by BN and ReLU, Xavier-initialised; a 1x1 classifier 16 -> ``num_classes``.
    The input is zero-padded at the bottom/right to a multiple of 32 and the logits cropped back.

    Args:
        encoder: ``"resnet34"`` (default) or ``"resnet18"``.
        pretrained: load torchvision's ImageNet weights (from ``$TORCH_HOME/hub/checkpoints`` when cached).
        weights: path of a local ResNet state dict; takes precedence over ``pretrained``.
        freeze_encoder: no gradients for the encoder, whose BN layers then stay in eval mode.

    ``input_normalization`` is the ``(mean, std)`` the encoder's weights were trained with (ImageNet's)
    when pretrained or local weights are loaded, else ``None`` (train with the dataset's statistics).
    """

    def __init__(
        self,
        num_classes: int = 21,
        encoder: str = "resnet34",
        pretrained: bool = True,
        weights: str | None = None,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        require_bools("transfer", pretrained=pretrained, freeze_encoder=freeze_encoder)
        build, _ = _encoder_spec(encoder)
        resnet = build(weights=None)
        self.input_normalization = load_resnet_encoder(resnet, encoder, pretrained, weights)
        self.encoder = nn.Sequential(OrderedDict((name, getattr(resnet, name)) for name in ENCODER_LAYERS))
        dec, cin = [], ENCODER_CHANNELS
        for c in DECODER_CHANNELS:
            dec.append(_deconv_bn_relu(cin, c))
            cin = c
        self.decoder = nn.Sequential(*dec)
        self.classifier = nn.Conv2d(cin, num_classes, 1)
        xavier_init(self.decoder)
        xavier_init(self.classifier)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # keep the frozen encoder's BN running statistics fixed
        return self

    stride = MULTIPLE

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decoder(self.encoder(x)))
