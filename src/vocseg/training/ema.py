"""An exponential moving average of a model's weights (Polyak averaging; timm's ``ModelEmaV3``).

After every optimizer step each floating-point parameter and buffer of the copy moves a fraction
``1 - decay`` of the way to the trained model's: ``ema = decay * ema + (1 - decay) * model``. BatchNorm's
running statistics are averaged the same way (they are buffers), integer buffers (``num_batches_tracked``)
are copied. The copy is what validation, best.pt and the final evaluation use when ``ema_decay`` is set.

Early on the average would be dominated by the random initial weights, so the decay is warmed up as
timm and YOLO do: ``min(decay, (1 + n) / (10 + n))`` at update ``n`` (0.18, 0.25, 0.31, ... then ``decay``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma", "ema_decay_at"]


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (1-based): 2/11 at the first, rising towards ``decay``."""
    return min(decay, (1 + updates) / (10 + updates))


class ModelEma:
    """A frozen copy of ``model`` in eval mode that :meth:`update` moves towards ``model``'s weights.

    ``model`` is the plain module (not a DDP or torch.compile wrapper); the copy keeps its memory format
    (channels-last) and device. ``updates`` counts the updates so far: with the weights, it is all a
    resumed run needs to continue the average exactly.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay!r}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model`` (the same architecture as the copy)."""
        self.updates += 1
        weight = 1.0 - ema_decay_at(self.decay, self.updates)
        ema_float, model_float = [], []
        for e, m in zip(_tensors(self.module), _tensors(model), strict=True):
            if e.is_floating_point():
                ema_float.append(e)
                model_float.append(m.detach())
            else:
                e.copy_(m)
        torch._foreach_lerp_(ema_float, model_float, weight)  # one fused pass over all the weights

    def state_dict(self) -> dict[str, int]:
        """The counter; the averaged weights are saved as the checkpoint's ``model``."""
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.updates = int(state["updates"])


def _tensors(model: nn.Module):
    """Parameters, then buffers, in registration order (the same order in a model and its deep copy)."""
    yield from model.parameters()
    yield from model.buffers()
