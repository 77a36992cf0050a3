"""A table of the registered models: parameters and GFLOPs of one forward pass (``vocseg models``)."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .common import count_parameters
from .registry import create_model, get_model_entry, list_models

# Arguments that let every model be built offline for counting (no pretrained weights to fetch).
_COUNT_KWARGS: dict[str, dict[str, Any]] = {"transfer": {"pretrained": False}}


def count_gflops(model: torch.nn.Module, image_size: int = 512) -> float:
    """GFLOPs (1e9 floating-point operations, a multiply-add counted as 2) of one (1, 3, S, S) forward."""
    model.eval()
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def model_table(image_size: int = 512) -> list[dict]:
    """One row per registered model: name, params, gflops (at ``image_size`` x ``image_size``), paper_table,
    description."""
    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        model = create_model(name, **_COUNT_KWARGS.get(name, {}))
        rows.append(
            {
                "name": name,
                "params": count_parameters(model),
                "gflops": count_gflops(model, image_size),
                "paper_table": entry.paper_table,
                "description": entry.description,
            }
        )
    return rows


def format_model_table(rows: list[dict]) -> str:
    """The rows of :func:`model_table` as an aligned plain-text table."""
    headers = ("name", "params", "GFLOPs", "paper", "description")
    body = [
        (r["name"], f"{r['params']:,}", f"{r['gflops']:.2f}", r["paper_table"], r["description"]) for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    right = {1, 2}  # numbers are right-aligned

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    return "\n".join(out)
