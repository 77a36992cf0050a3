"""The checkpoint contract: what a checkpoint holds, how it is written and read, and how it becomes a model.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a file carrying a pickled object is refused, never executed. Every
checkpoint (best.pt, last.pt, a pretrained model described like one) carries the metadata
:func:`checkpoint_metadata` builds: enough to rebuild the model, normalise its input and name its
classes. :func:`load_model` is the one way a checkpoint becomes a model.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config
from .data.classes import class_names
from .errors import VocsegError
from .models import create_model, pretrained_model
from .runtime.files import atomic_write_bytes
from .version import __version__

FORMAT_VERSION = 1
# What a checkpoint must hold to become a model (older checkpoints hold the same keys).
MODEL_KEYS = ("model", "model_name", "num_classes")


def checkpoint_metadata(
    cfg: Config,
    names: list[str],
    mean: list[float],
    std: list[float],
    class_weight: torch.Tensor | None = None,
) -> dict[str, Any]:
    """What every checkpoint carries besides weights: enough to rebuild, normalise and label."""
    return {
        "model_name": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "num_classes": cfg.num_classes,
        "class_names": list(names),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "class_weight": class_weight.cpu() if class_weight is not None else None,
        "config": cfg.to_dict(),
        "vocseg_version": __version__,
    }


def model_metadata(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's metadata an exported file or a predictor needs (class names default
    to VOC's for checkpoints made by hand without them)."""
    num_classes = int(ckpt["num_classes"])
    norm = ckpt.get("normalization")
    if not norm:
        raise VocsegError("the checkpoint has no 'normalization' entry: the model's input scaling is unknown")
    return {
        "model_name": str(ckpt["model_name"]),
        "model_kwargs": dict(ckpt.get("model_kwargs") or {}),
        "num_classes": num_classes,
        "class_names": [str(n) for n in class_names(num_classes, ckpt.get("class_names"))],
        "normalization": {"mean": [float(v) for v in norm["mean"]], "std": [float(v) for v in norm["std"]]},
        "vocseg_version": __version__,
    }


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``state`` with the format version, written atomically (the previous file stays whole on a crash)."""
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    atomic_write_bytes(buf.getbuffer(), path)  # a view of the buffer: no second copy of the bytes


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a vocseg checkpoint safely (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise VocsegError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise VocsegError(
            f"refused to load {path}: it holds Python objects other than tensors and plain data, "
            f"which could run code when loaded ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0].split(". ")[0].rstrip(".") if str(e).strip() else type(e).__name__
        raise VocsegError(f"{path} is not a readable checkpoint (truncated or not a torch file?): {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise VocsegError(f"{path} is not a vocseg checkpoint (no 'model' entry)")
    return ckpt


def load_model(
    checkpoint: str | Path | Mapping[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model a checkpoint (a path, or a dict already loaded) describes, with its weights, in eval mode
    on ``device``, and the checkpoint dict. Nothing is downloaded: the weights come from the checkpoint."""
    source = "checkpoint" if isinstance(checkpoint, Mapping) else str(checkpoint)
    ckpt = dict(checkpoint) if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint, map_location="cpu")
    # Checkpoints made by hand may carry the model only in their config.
    cfg = ckpt.get("config") or {}
    for key, cfg_key in (("model_name", "model"), ("num_classes", "num_classes"), ("model_kwargs", "model_kwargs")):
        if key not in ckpt and cfg_key in cfg:
            ckpt[key] = cfg[cfg_key]
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise VocsegError(f"{source} is not a vocseg checkpoint: no {', '.join(missing)} entry")
    model = create_model(
        ckpt["model_name"], num_classes=int(ckpt["num_classes"]), offline=True, **dict(ckpt.get("model_kwargs") or {})
    )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise VocsegError(f"{source}: weights do not fit model {ckpt['model_name']!r}: {e}") from None
    return model.eval().to(device), ckpt


def pretrained_checkpoint(model_name: str, weights: str, num_classes: int = 21) -> tuple[nn.Module, dict[str, Any]]:
    """A registry model with pretrained weights (e.g. torchvision's ``COCO_WITH_VOC_LABELS_V1``), described
    like a checkpoint (no optimizer state), so it can be evaluated or used for prediction without training."""
    model = pretrained_model(model_name, weights, num_classes=num_classes)
    cfg = Config(model=model_name, num_classes=num_classes, model_kwargs={"weights": weights})
    mean, std = model.input_normalization
    meta = checkpoint_metadata(cfg, class_names(num_classes), list(mean), list(std))
    return model.eval(), {**meta, "model": model.state_dict()}
