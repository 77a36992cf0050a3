"""What the machine offers, and the defaults that suit it: loader workers and torch threads per device."""

from __future__ import annotations

import os

import torch

from .errors import VocsegError


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """Loader processes for ``num_workers`` ("auto" or a number) on ``device``.

    On a CPU the model's intra-op threads already use every core, so loader processes only compete
    with them. benchmarks/bench_loader.py on the 2-core machine of docs/benchmarks.md (baseline FCN,
    batch 8, 128 px crops, bf16 autocast, AdamW, one epoch of the synthetic set per repeat, torch's
    default 2 threads; img/s as a share of the same step on batches already in memory, 98.0 img/s):

        num_workers   from disk      RAM cache (data.cache)
        0             92.8 (0.947)   96.0 (0.980)
        1             77.4 (0.790)   82.3 (0.840)
        2             80.6 (0.823)   84.3 (0.860)

    (A later run's quiet repeat agreed: 0.957 / 1.005 with 0 workers, 0.87-0.89 with 1 or 2.) Four
    cores of another machine (``taskset``, 4 torch threads) ranked them the same: 0 workers 0.87 / 0.93,
    1 or 2 workers 0.77-0.81. So "auto" loads in the main process on CPU machines of up to 4 cores:
    with the decoded-image cache (on by default when it fits) the loader-fed loop reaches 0.98 of the
    bare loop. Making each item on one torch thread, to spare the training threads' wake-ups, was no
    better (0.76-0.96 over runs), so torch keeps its default thread count (all cores). On a GPU the
    cores are free for decoding, so "auto" uses most of them. A number is capped at the core count
    (more processes than cores only thrash)."""
    cores = cpu_count()
    if num_workers != "auto":
        try:
            n = int(num_workers)
        except (TypeError, ValueError):
            raise VocsegError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}") from None
        if n < 0:
            raise VocsegError(f"num_workers must be 'auto' or an integer >= 0, got {num_workers!r}")
        return min(n, cores)
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)
