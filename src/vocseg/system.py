"""What the machine offers, and the defaults that suit it: loader workers and torch threads per device."""
from __future__ import annotations

import os

import torch


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """Loader processes for ``num_workers`` ("auto" or a number) on ``device``.

    On a CPU the model's own intra-op threads already use every core: loader processes only compete
    with them (measured in docs/benchmarks.md), so "auto" loads in the main process on small machines.
    On a GPU the cores are free for decoding, so "auto" uses most of them. A number is capped at the
    core count (more processes than cores only thrash)."""
    cores = cpu_count()
    if num_workers != "auto":
        return min(int(num_workers), cores)
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)
