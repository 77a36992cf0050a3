"""Decoded images kept in RAM: each image and mask is decoded once per run instead of once per epoch.

``apply_cache(dataset, mode, log)`` decodes every item of a :class:`VOCSegmentation` into one
contiguous uint8 buffer, in the calling (main) process, before any DataLoader worker starts. Forked
workers then share the buffer's pages copy-on-write (nothing writes to them), and under "spawn" the
single buffer travels as one shared-memory segment, so the RAM is spent once, not once per worker.

Modes (Config ``cache``):

- ``auto``: cache when the decoded size, estimated from the image headers (H * W * 4 bytes: RGB
  plus the mask; no pixel is decoded to estimate it), is at most ``SHARE_OF_AVAILABLE`` of the
  RAM available now; otherwise read from disk as before.
- ``ram``: always cache; refused (VocsegError) when the estimate exceeds the available RAM.
- ``none``: never cache.

The built-in synthetic dataset (480 + 160 images, long side <= 192 px) takes 64 MB decoded;
VOC 2012 train + val (2,913 images, ~500x375) about 2.2 GB.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..config import CHOICES
from ..errors import VocsegError
from ..runtime.workers import one_torch_thread
from .voc import VOCSegmentation, image_size

SHARE_OF_AVAILABLE = 0.25  # auto: at most this share of the available RAM per dataset


def available_ram() -> int | None:
    """Bytes of RAM available to new allocations without swapping: Linux's ``MemAvailable`` (page cache
    that can be dropped counts as available), else the free pages (``SC_AVPHYS_PAGES``), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decoded_sizes(dataset: VOCSegmentation) -> list[tuple[int, int]]:
    """``(height, width)`` of every image of ``dataset``, from the file headers (no decoding)."""
    return [image_size(dataset.image_path(i)) for i in range(len(dataset))]


def format_bytes(n: float) -> str:
    """``n`` bytes for a log line: GB with one decimal, else whole MB, else whole KB."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


class DecodedCache:
    """Every item of a dataset decoded into one uint8 buffer; ``cache[i]`` returns ``(image (3,H,W),
    mask (H,W))`` views into it. Views, not copies: callers must not modify them in place."""

    def __init__(self, buffer: Tensor, offsets: list[int], sizes: list[tuple[int, int]]) -> None:
        self.buffer, self.offsets, self.sizes = buffer, offsets, sizes
        self.extra: dict[int, tuple[Tensor, Tensor]] = {}  # items whose decoded size differs from the header

    @classmethod
    def build(cls, dataset: VOCSegmentation, sizes: list[tuple[int, int]]) -> DecodedCache:
        """Decode every item of ``dataset`` (from disk, checked as usual) into a buffer sized from ``sizes``."""
        offsets, total = [], 0
        for h, w in sizes:
            offsets.append(total)
            total += 4 * h * w
        cache = cls(torch.empty(total, dtype=torch.uint8), offsets, list(sizes))
        with one_torch_thread():
            cache._fill(dataset)
        return cache

    def _fill(self, dataset: VOCSegmentation) -> None:
        for i in range(len(dataset)):
            image, mask = dataset.decode(i)
            if tuple(mask.shape) == self.sizes[i]:
                view_image, view_mask = self[i]
                view_image.copy_(image)
                view_mask.copy_(mask)
            else:  # a header this module misread (or a format PIL sizes differently): keep the item apart
                self.extra[i] = (image, mask)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if i in self.extra:
            return self.extra[i]
        (h, w), start = self.sizes[i], self.offsets[i]
        # Interleaved (H, W, 3) memory seen as (3, H, W), like the decoders' output: the transforms'
        # resampling is fastest on that layout.
        image = self.buffer[start : start + 3 * h * w].view(h, w, 3).permute(2, 0, 1)
        mask = self.buffer[start + 3 * h * w : start + 4 * h * w].view(h, w)
        return image, mask

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() + sum(a.numel() + b.numel() for a, b in self.extra.values())


def cache_decision(mode: str, need: int, available: int | None, share: float, what: str) -> tuple[bool, str]:
    """Whether to cache ``need`` bytes under ``mode``, and why not (a message) when not."""
    if mode not in CHOICES["cache"]:
        raise VocsegError(f"cache must be one of {', '.join(CHOICES['cache'])}, got {mode!r}")
    if mode == "none":
        return False, f"cache: off for {what} (cache: none)"
    if mode == "ram":
        if available is not None and need > available:
            raise VocsegError(
                f"cache: ram needs about {format_bytes(need)} for {what} decoded, but only "
                f"{format_bytes(available)} of RAM is available; use cache: auto or none"
            )
        return True, ""
    if available is None:
        return False, f"cache: off for {what} (available RAM unknown on this system; cache: ram forces it)"
    if need > share * available:
        return False, (
            f"cache: off for {what}: {format_bytes(need)} decoded would exceed {share:.0%} of the "
            f"{format_bytes(available)} of RAM available (cache: ram forces it)"
        )
    return True, ""


def apply_cache(
    dataset: VOCSegmentation,
    mode: str = "auto",
    log: Callable[[str], None] | None = None,
    share: float = SHARE_OF_AVAILABLE,
) -> VOCSegmentation:
    """Decode ``dataset`` into RAM (in this process) when ``mode`` says so; return the same dataset.

    Call it in the main process before creating DataLoaders, so workers inherit the decoded items.
    ``share`` caps auto's use of the available RAM (divide it by the number of processes that each
    cache their own copy, e.g. DDP ranks). ``log`` receives one line: the memory taken, or why not.
    """
    what = f"{len(dataset)} {dataset.split} images"
    if mode == "none" or len(dataset) == 0:
        cache_decision(mode, 0, None, share, what)  # still validates the mode
        dataset.cache = None
        return dataset
    sizes = decoded_sizes(dataset)
    need = sum(4 * h * w for h, w in sizes)
    use, why = cache_decision(mode, need, available_ram(), share, what)
    if not use:
        dataset.cache = None
        if log is not None:
            log(why)
        return dataset
    t0 = time.perf_counter()
    dataset.cache = DecodedCache.build(dataset, sizes)
    if log is not None:
        seconds = time.perf_counter() - t0
        log(f"cache: {what} decoded in RAM ({format_bytes(dataset.cache.nbytes)}, {seconds:.1f} s)")
    return dataset
