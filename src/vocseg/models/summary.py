"""A table of the registered models: parameters and GFLOPs of one forward pass (``vocseg models``)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .common import count_parameters
from .registry import create_model, get_model_entry, list_models


def count_gflops(model: torch.nn.Module, image_size: int = 512) -> float:
    """GFLOPs (1e9 floating-point operations, a multiply-add counted as 2) of one (1, 3, S, S) forward.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` in eval mode under ``torch.no_grad``: the
    convolutions, transposed convolutions and matrix products (norms, activations, pooling are not
    counted). The input lives on the model's device, so a model built on the ``meta`` device is counted
    without computing anything.
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _count(name: str, image_size: int) -> tuple[int, float]:
    with torch.device("meta"):  # shapes only: instant even for the 386-GFLOP U-Net
        model = create_model(name, offline=True)
    return count_parameters(model), count_gflops(model, image_size)


def model_table(image_size: int = 512) -> list[dict]:
    """One row per registered model: name, params, gflops (one forward at ``image_size`` x ``image_size``),
    source, channels_last (the memory format
    training uses by default), paper_table, description. Models are built offline (no pretrained weights needed), on the
    ``meta`` device. For models with an auxiliary training head (torchvision's FCN and DeepLabV3) the
    parameters include that head, as their checkpoints do; the GFLOPs are of the eval forward, which skips it."""
    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        params, gflops = _count(name, image_size)
        rows.append(
            {
                "name": name,
                "params": params,
                "gflops": gflops,
                "source": entry.source,
                "channels_last": entry.channels_last,
                "paper_table": entry.paper_table,
                "description": entry.description,
            }
        )
    return rows


def format_model_table(rows: list[dict]) -> str:
    """The rows of :func:`model_table` as an aligned plain-text table."""
    headers = ("name", "params", "GFLOPs", "memory", "source", "description")
    body = [
        (
            r["name"],
            f"{r['params']:,}",
            f"{r['gflops']:.2f}",
            "chan-last" if r["channels_last"] else "contig",
            r["source"],
            r["description"],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {1, 2}  # numbers are right-aligned

    def line(cells: tuple[str, ...]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)
