"""A timm-style model registry: ``register_model`` adds a builder, ``create_model`` builds by name.

Every registered model follows one contract: ``(B, 3, H, W)`` float input -> ``(B, num_classes, H, W)``
logits, for any ``H`` and ``W``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import VocsegError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    paper_table: str  # which table of the paper the model follows, e.g. "Table 1"
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, paper_table: str, description: str = "") -> Callable:
    """Decorator registering a model class or builder function under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, builder, paper_table, doc)
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise VocsegError(
            f"unknown model {name!r}; valid names: {', '.join(list_models())}"
        ) from None


def create_model(name: str, num_classes: int = 21, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``; unknown names or arguments raise ``VocsegError``."""
    entry = get_model_entry(name)
    params = inspect.signature(entry.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = [p for p in params if p not in ("self", "num_classes")]
            raise VocsegError(
                f"model {name!r} has no argument(s) {', '.join(unknown)}; valid: {', '.join(valid) or 'none'}"
            )
    return entry.builder(num_classes=num_classes, **kwargs)
