"""torchvision's semantic segmentation models (FCN, DeepLabV3, LR-ASPP) under vocseg's one model contract.

Registered names: ``fcn_resnet50``, ``fcn_resnet101``, ``deeplabv3_resnet50``, ``deeplabv3_resnet101``,
``deeplabv3_mobilenet_v3_large``, ``lraspp_mobilenet_v3_large``. Each is built by
``torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=..., aux_loss=...)``
and wrapped in :class:`TorchvisionSegmentation`, whose state-dict keys are torchvision's own
(``backbone.*``, ``classifier.*``, ``aux_classifier.*``): torchvision's weight files load as they are.

Model arguments:
    weights: ``None`` (default; also the strings "none"/"null"), a name of the model's torchvision weights enum
        (``"COCO_WITH_VOC_LABELS_V1"``: COCO images with the 20 VOC classes; ``num_classes`` must be 21)
        or the path of a local full-model state dict (a vocseg checkpoint's ``model`` works too).
    pretrained_backbone: load the backbone's ImageNet weights (default ``True``, like ``transfer``);
        ignored when ``weights`` is given.
    aux_loss: build the auxiliary FCN head (on layer3 / the 1/8 MobileNet features). Default: ``True``
        where torchvision's model has one (FCN, DeepLabV3), ``False`` for LR-ASPP, which has none.

Weights are never fetched by torchvision itself: vocseg loads them from torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``), downloading a missing file once with a short socket timeout, and
offline fails at once with a ``VocsegError`` naming the file, its URL, the folder and the alternatives.

Output convention, the same for every vocseg model: ``forward`` returns the ``(B, num_classes, H, W)``
logits as a tensor at the input's size. The one exception is training with the auxiliary head: when
``model.training and model.has_aux``, ``forward`` returns ``{"out": logits, "aux": aux_logits}``, both
at the input's size, and the training loop adds ``aux_weight * cross_entropy(aux_logits, target)`` to
the loss (torchvision's reference scripts use ``aux_weight = 0.5``). In eval mode the aux head is not
even run, so evaluation, export and FLOP counts see the main head only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..errors import VocsegError
from .base import SegmentationModel
from .common import crop_to
from .registry import CompileSpeed, create_model, register_model
from .transfer import (
    hub_file_name,
    imagenet_normalization,
    load_backbone_state,
    load_hub_state_dict,
    load_weights_file,
    offline_help,
    require_bools,
)


@dataclass(frozen=True)
class Backbone:
    """A torchvision classification backbone: its ImageNet weights and how its keys map to ``backbone.*``."""

    weights: Any  # torchvision weights enum entry (ImageNet)
    head: tuple[str, ...]  # key prefixes of the classifier, not part of the segmentation backbone
    strip: str  # key prefix of the kept layers that the segmentation backbone drops


BACKBONES = {
    "resnet50": Backbone(torchvision.models.ResNet50_Weights.IMAGENET1K_V1, ("fc.",), ""),
    "resnet101": Backbone(torchvision.models.ResNet101_Weights.IMAGENET1K_V1, ("fc.",), ""),
    "mobilenet_v3_large": Backbone(
        torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1, ("classifier.",), "features."
    ),
}


@dataclass(frozen=True)
class Spec:
    """One torchvision segmentation model: its backbone, output stride and whether it has an aux head."""

    backbone: str
    stride: int  # the backbone's total downsampling (dilated): inputs are padded to a multiple of it
    has_aux_head: bool
    description: str


SPECS = {
    "fcn_resnet50": Spec("resnet50", 8, True, "torchvision FCN, dilated ResNet-50 (output stride 8)"),
    "fcn_resnet101": Spec("resnet101", 8, True, "torchvision FCN, dilated ResNet-101 (output stride 8)"),
    "deeplabv3_resnet50": Spec(
        "resnet50", 8, True, "torchvision DeepLabV3, dilated ResNet-50 (output stride 8), ASPP 12/24/36"
    ),
    "deeplabv3_resnet101": Spec(
        "resnet101", 8, True, "torchvision DeepLabV3, dilated ResNet-101 (output stride 8), ASPP 12/24/36"
    ),
    "deeplabv3_mobilenet_v3_large": Spec(
        "mobilenet_v3_large", 16, True, "torchvision DeepLabV3, dilated MobileNetV3-Large (output stride 16)"
    ),
    "lraspp_mobilenet_v3_large": Spec(
        "mobilenet_v3_large", 16, False, "torchvision LR-ASPP, MobileNetV3-Large (features at 1/8 and 1/16)"
    ),
}
TORCHVISION_MODELS = tuple(SPECS)


def _weights_enum(arch: str) -> Any:
    return torchvision.models.get_model_weights(arch)


def resolve_weights(arch: str, weights: str | os.PathLike | None) -> Any:
    """``None``, the torchvision weights enum entry named ``weights``, or ``weights`` as an existing file path.

    Names may carry the enum's class name (``DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``); the
    strings "none" and "null" mean ``None`` (``--model-arg weights=none`` arrives as a string)."""
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "null")):
        return None
    enum = _weights_enum(arch)
    if isinstance(weights, (str, os.PathLike)):
        name = os.fspath(weights).removeprefix(f"{enum.__name__}.")
        if name in enum.__members__:
            return enum[name]
        if os.path.isfile(weights):
            return os.fspath(weights)
    raise VocsegError(
        f"model {arch!r}: weights {weights!r} is neither a file nor a torchvision weights name; "
        f"valid names: {', '.join(enum.__members__)} (or a path to a state dict, or null)"
    )


def _resolve_aux(arch: str, aux_loss: bool | None) -> bool:
    has_head = SPECS[arch].has_aux_head
    if aux_loss is None:
        return has_head
    require_bools(arch, aux_loss=aux_loss)
    if aux_loss and not has_head:
        raise VocsegError(f"model {arch!r} has no auxiliary head; valid: aux_loss=false")
    return aux_loss


def _full_weights_help(arch: str, weights: Any) -> str:
    return offline_help(
        f"Pretrained {arch} weights {type(weights).__name__}.{weights.name}",
        weights,
        (
            "pass a local state dict of the whole model with --model-arg weights=PATH "
            "(model_kwargs: {weights: PATH} in a config), or use ImageNet backbone weights only: "
            "--model-arg weights=null",
            "train without any pretraining: --model-arg weights=null --model-arg pretrained_backbone=false "
            "(model_kwargs: {weights: null, pretrained_backbone: false} in a config)",
        ),
    )


def _backbone_help(arch: str, backbone: str, weights: Any) -> str:
    return offline_help(
        f"ImageNet weights for the {backbone} backbone of {arch}",
        weights,
        (
            "pass a local state dict of the whole model with --model-arg weights=PATH "
            "(model_kwargs: {weights: PATH} in a config)",
            "train without pretraining: --model-arg pretrained_backbone=false "
            "(model_kwargs: {pretrained_backbone: false} in a config)",
        ),
    )


class TorchvisionSegmentation(SegmentationModel):
    """A torchvision segmentation model (``arch``, a key of ``SPECS``) under vocseg's contract.

    ``forward`` returns the main head's logits at the input's size; in training mode with ``has_aux``
    it returns ``{"out": logits, "aux": aux_logits}`` instead (see the module docstring). The input is
    zero-padded at the bottom/right to a multiple of the backbone's output stride (8 or 16) so feature
    pixels align exactly with input blocks, and the logits are cropped back.

    ``input_normalization`` is ImageNet's ``(mean, std)`` when any pretrained weights are loaded
    (torchvision's COCO models were trained with it too), else ``None``.
    """

    def __init__(
        self,
        arch: str,
        num_classes: int = 21,
        weights: str | os.PathLike | None = None,
        pretrained_backbone: bool = True,
        aux_loss: bool | None = None,
    ) -> None:
        super().__init__()
        if arch not in SPECS:
            raise VocsegError(f"unknown torchvision model {arch!r}; valid: {', '.join(SPECS)}")
        require_bools(arch, pretrained_backbone=pretrained_backbone)
        spec = SPECS[arch]
        full = resolve_weights(arch, weights)
        self.arch = arch
        self.has_aux = _resolve_aux(arch, aux_loss)
        self.stride = spec.stride
        extra = {"aux_loss": self.has_aux} if spec.has_aux_head else {}
        net = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes, **extra)
        # torchvision's own modules, so the state-dict keys are torchvision's.
        self.backbone = net.backbone
        self.classifier = net.classifier
        self.aux_classifier = getattr(net, "aux_classifier", None)
        self._head_takes_features = not spec.has_aux_head  # LR-ASPP's head reads the "low" and "high" maps
        self.input_normalization = self._load_pretrained(full, pretrained_backbone, num_classes)

    def _load_pretrained(self, full: Any, pretrained_backbone: bool, num_classes: int) -> Any:
        """Load full-model weights (``full``) or else the backbone's ImageNet weights; returns the normalization."""
        backbone = BACKBONES[SPECS[self.arch].backbone]
        if full is None and not pretrained_backbone:
            return None
        if full is None:
            help_text = _backbone_help(self.arch, SPECS[self.arch].backbone, backbone.weights)
            state = load_hub_state_dict(backbone.weights, help_text)
            source = f"{backbone.weights} ({hub_file_name(backbone.weights)})"
            load_backbone_state(
                self.backbone, state, source, head=backbone.head, strip=backbone.strip, what=f"{self.arch} backbone"
            )
        elif isinstance(full, str):
            self._load_full(load_weights_file(full), f"file {full}")
        else:
            if num_classes != len(full.meta["categories"]):
                raise VocsegError(
                    f"model {self.arch!r}: weights {full.name} predict {len(full.meta['categories'])} classes "
                    f"(VOC's), not num_classes={num_classes}; use num_classes=21, or weights=null"
                )
            state = load_hub_state_dict(full, _full_weights_help(self.arch, full))
            self._load_full(state, f"{type(full).__name__}.{full.name} ({hub_file_name(full)})")
        return imagenet_normalization(backbone.weights)

    def _load_full(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Strictly load a whole-model state dict; its aux head is dropped when this model has none."""
        head = () if self.has_aux else ("aux_classifier.",)
        try:
            load_backbone_state(self, state, source, head=head, what=f"{self.arch} model (num_classes, aux_loss)")
        except VocsegError as e:
            no_aux = self.has_aux and not any(k.startswith("aux_classifier.") for k in state)
            hint = "; the weights have no auxiliary head: pass aux_loss=false" if no_aux else ""
            raise VocsegError(f"{e}{hint}") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        out = self.forward_padded(self.pad_input(x))
        if isinstance(out, dict):
            return {k: crop_to(v, h, w) for k, v in out.items()}
        return crop_to(out, h, w)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        features = self.backbone(x)
        out = self.classifier(features if self._head_takes_features else features["out"])
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if not (self.training and self.has_aux):
            return out
        aux = F.interpolate(self.aux_classifier(features["aux"]), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}


# torch.compile against eager on an H100 (docs/benchmarks.md, section (j)); the other architectures are unmeasured.
GPU_COMPILE = {
    "fcn_resnet50": CompileSpeed(eager_ips=218.7, compiled_ips=249.7, one_off_s=28.1),
    "deeplabv3_resnet50": CompileSpeed(eager_ips=171.0, compiled_ips=214.7, one_off_s=27.1),
}


def _register(arch: str) -> None:
    """Register ``arch`` with a builder whose signature lists exactly its model arguments."""

    def build(
        num_classes: int = 21,
        weights: str | None = None,
        pretrained_backbone: bool = True,
        aux_loss: bool | None = None,
    ) -> TorchvisionSegmentation:
        return TorchvisionSegmentation(arch, num_classes, weights, pretrained_backbone, aux_loss)

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = SPECS[arch].description
    register_model(
        arch,
        source="torchvision",
        description=SPECS[arch].description,
        offline_kwargs={"weights": None, "pretrained_backbone": False},
        # ResNet backbones train faster in channels-last on CPU and GPU; MobileNet's depthwise convs do not
        # (docs/benchmarks.md, sections (d) and (f))
        channels_last="resnet" in arch,
        gpu_compile=GPU_COMPILE.get(arch),
    )(build)


for _arch in SPECS:
    _register(_arch)


def pretrained_model(name: str, weights: str, num_classes: int = 21) -> nn.Module:
    """A torchvision segmentation model with whole-model pretrained ``weights``, in eval mode: for scoring
    without a vocseg checkpoint (``vocseg evaluate --model deeplabv3_resnet50 --weights COCO_WITH_VOC_LABELS_V1``).

    ``weights`` is a name of the model's torchvision weights enum (``"COCO_WITH_VOC_LABELS_V1"``) or the
    path of a full state dict. The model's ``input_normalization`` holds the ``(mean, std)`` its inputs
    must be normalised with. Offline without the cached file: a ``VocsegError`` naming file and folder.
    """
    if name not in SPECS:
        raise VocsegError(
            f"model {name!r} has no whole-model pretrained weights to score without a checkpoint; "
            f"valid: {', '.join(SPECS)}"
        )
    if weights is None:
        raise VocsegError(f"pretrained_model({name!r}): weights are required, e.g. COCO_WITH_VOC_LABELS_V1")
    # No aux head: evaluation never runs it, and its weights are then skipped when loading.
    model = create_model(name, num_classes=num_classes, weights=weights, pretrained_backbone=False, aux_loss=False)
    return model.eval()
