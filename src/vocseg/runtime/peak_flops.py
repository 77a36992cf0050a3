"""Accelerators' dense bf16 peak FLOP/s, looked up by device name: the denominator of model FLOPs
utilisation (MFU = FLOPs per image x images/s / peak).

The figures are the vendors' datasheet numbers for bf16 tensor-core math *without* structured sparsity
(datasheets print the sparse figure, 2x, with a footnote; half of it is the dense peak). They are
boost-clock peaks no real network reaches; MFU compares runs, it is not an efficiency a model can hit.
Unknown devices and CPUs get None: pass a peak (``override_tflops``, ``--peak-tflops``) or set
``VOCSEG_PEAK_TFLOPS``.
"""

from __future__ import annotations

import os
import re

import torch

from ..errors import VocsegError

PEAK_ENV = "VOCSEG_PEAK_TFLOPS"

# (pattern searched in torch.cuda.get_device_name(), dense bf16 FLOP/s, source). First match wins, so
# the variants of a chip (GH200, PCIe, NVL) come before its plain name.
PEAKS: tuple[tuple[str, float, str], ...] = (
    (r"GH200", 989e12, "NVIDIA GH200 datasheet: the H100/H200 SXM chip, 1,979 TFLOPS with sparsity"),
    (r"H100.*PCIe", 756e12, "NVIDIA H100 datasheet, H100 PCIe: 1,513 TFLOPS with sparsity"),
    (r"H100.*NVL", 835e12, "NVIDIA H100 datasheet, H100 NVL: 1,671 TFLOPS with sparsity"),
    (r"H100", 989e12, "NVIDIA H100 datasheet, H100 SXM: 1,979 TFLOPS with sparsity"),
    (r"H200.*NVL", 835e12, "NVIDIA H200 datasheet, H200 NVL: 1,671 TFLOPS with sparsity"),
    (r"H200", 989e12, "NVIDIA H200 datasheet, H200 SXM: 1,979 TFLOPS with sparsity"),
    (r"B200", 2250e12, "NVIDIA HGX B200 datasheet: 4.5 PFLOPS FP16/BF16 with sparsity, per GPU"),
    (r"A100", 312e12, "NVIDIA A100 datasheet (SXM and PCIe, 40 and 80 GB): 624 TFLOPS with sparsity"),
    (r"\bA30\b", 165e12, "NVIDIA A30 datasheet: 330 TFLOPS with sparsity"),
    (r"\bA10\b", 125e12, "NVIDIA A10 datasheet: 250 TFLOPS with sparsity"),
    (r"L40S", 362e12, "NVIDIA L40S datasheet: 733 TFLOPS with sparsity"),
    (r"\bL40\b", 181e12, "NVIDIA L40 datasheet: 362 TFLOPS with sparsity"),
    (r"\bL4\b", 121e12, "NVIDIA L4 datasheet: 242 TFLOPS with sparsity"),
    (r"MI300X", 1307e12, "AMD Instinct MI300X datasheet: 1,307.4 TFLOPS dense bf16"),
)


def peak_flops_for_name(name: str) -> float | None:
    """The dense bf16 peak FLOP/s of the device called ``name`` (as ``torch.cuda.get_device_name()``
    spells it, e.g. ``"NVIDIA H100 80GB HBM3"``), or None when the table does not know it."""
    for pattern, peak, _ in PEAKS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return peak
    return None


def _positive_tflops(value: object, what: str) -> float:
    try:
        tflops = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        tflops = float("nan")
    if not tflops > 0 or tflops == float("inf"):
        raise VocsegError(f"{what} {value!r} is not a positive number of TFLOP/s; e.g. 989 for an H100 SXM")
    return tflops


def peak_flops(device: torch.device | str | None = None, override_tflops: float | None = None) -> float | None:
    """The peak FLOP/s to divide by for MFU on ``device`` (default: the current CUDA device, if any).

    In order: ``override_tflops`` (TFLOP/s), then ``$VOCSEG_PEAK_TFLOPS``, then the table by device name;
    None for CPUs, MPS and devices the table does not know."""
    if override_tflops is not None:
        return _positive_tflops(override_tflops, "peak") * 1e12
    if os.environ.get(PEAK_ENV):
        return _positive_tflops(os.environ[PEAK_ENV], f"${PEAK_ENV}") * 1e12
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))
