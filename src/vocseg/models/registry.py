"""A timm-style model registry: ``register_model`` adds a builder, ``create_model`` builds by name.

Every registered model follows one contract: ``(B, 3, H, W)`` float input -> ``(B, num_classes, H, W)``
logits, for any ``H`` and ``W``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import VocsegError


@dataclass(frozen=True)
class CompileSpeed:
    """torch.compile (default mode) against eager for the model's training step at its default arguments,
    measured on one GPU (an H100, 512 crops, batch 16, bf16; docs/benchmarks.md, section (j)): training images/s
    both ways and the seconds its first steps spent compiling."""

    eager_ips: float
    compiled_ips: float
    one_off_s: float

    @property
    def breakeven_images(self) -> float:
        """Training images after which compiling has paid for its one-off seconds (inf: it never does)."""
        saved = 1 / self.eager_ips - 1 / self.compiled_ips
        return self.one_off_s / saved if saved > 0 else math.inf


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: how to build it and where it comes from."""

    name: str
    builder: Callable[..., nn.Module]
    source: str  # where the architecture comes from: "paper Table 1", "torchvision", ...
    description: str
    # Arguments that build the model without fetching pretrained weights (the weights then come from a
    # checkpoint, or the model is only counted): e.g. {"pretrained": False, "weights": None}.
    offline_kwargs: dict[str, Any] = field(default_factory=dict)
    # Whether training runs faster in channels-last memory: measured per model on CPU and GPU
    # (docs/benchmarks.md, "Precision, channels-last and compile per model"); ``channels_last: null`` uses it.
    channels_last: bool = False
    # torch.compile's measured gain on a GPU (None: not measured); ``compile: null`` decides by it
    # (vocseg.training.builders.resolve_compile).
    gpu_compile: CompileSpeed | None = None

    @property
    def paper_table(self) -> str:
        """The paper's table (``"Table 1"``) for the paper's models, else ``"-"``."""
        return self.source.removeprefix("paper ") if self.source.startswith("paper ") else "-"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    source: str,
    description: str = "",
    offline_kwargs: dict[str, Any] | None = None,
    channels_last: bool = False,
    gpu_compile: CompileSpeed | None = None,
) -> Callable:
    """Decorator registering a model class or builder function under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, builder, source, doc, dict(offline_kwargs or {}), channels_last, gpu_compile)
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name is an error listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VocsegError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int = 21, offline: bool = False, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; unknown names or arguments raise ``VocsegError``.

    ``offline=True`` applies the entry's ``offline_kwargs`` over ``kwargs``: nothing is downloaded (used
    when the weights come from a checkpoint, and to count parameters)."""
    entry = get_model_entry(name)
    params = inspect.signature(entry.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = [p for p in params if p not in ("self", "num_classes")]
            raise VocsegError(
                f"model {name!r} has no argument(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
            )
    if offline:
        kwargs = {**kwargs, **entry.offline_kwargs}
    return entry.builder(num_classes=num_classes, **kwargs)
