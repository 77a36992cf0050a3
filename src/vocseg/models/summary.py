"""A table of the registered models: parameters and GFLOPs of one forward pass (``vocseg models``)."""

from __future__ import annotations

import torch

from .common import count_parameters
from .flops import count_gflops  # re-exported: vocseg.models.count_gflops
from .registry import CompileSpeed, create_model, get_model_entry, list_models


def _count(name: str, image_size: int) -> tuple[int, float]:
    with torch.device("meta"):  # shapes only: instant even for the 386-GFLOP U-Net
        model = create_model(name, offline=True)
    return count_parameters(model), count_gflops(model, image_size)


def model_table(image_size: int = 512) -> list[dict]:
    """One row per registered model: name, params, gflops (one forward at ``image_size`` x ``image_size``),
    source, channels_last (the memory format training uses by default), gpu_compile (torch.compile's measured
    speed-up of a training step on a GPU and its one-off seconds, or None), paper_table, description. Models
    are built offline (no pretrained weights needed), on the ``meta`` device. For models with an auxiliary training head (torchvision's FCN and DeepLabV3) the
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
                "gpu_compile": entry.gpu_compile,
                "paper_table": entry.paper_table,
                "description": entry.description,
            }
        )
    return rows


def format_model_table(rows: list[dict]) -> str:
    """The rows of :func:`model_table` as an aligned plain-text table."""
    headers = ("name", "params", "GFLOPs", "memory", "GPU compile", "source", "description")
    body = [
        (
            r["name"],
            f"{r['params']:,}",
            f"{r['gflops']:.2f}",
            "chan-last" if r["channels_last"] else "contig",
            _compile_cell(r["gpu_compile"]),
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


def _compile_cell(speed: CompileSpeed | None) -> str:
    """A training step's speed-up compiled and the seconds compiling took, as measured on a GPU; "-": unmeasured."""
    if speed is None:
        return "-"
    return f"{speed.compiled_ips / speed.eager_ips:.2f}x {speed.one_off_s:.0f}s"
