"""Batches finished on the device one step ahead, on a side CUDA stream (config ``augment_on: device``).

Inline, a batch's augmentation kernels queue behind the previous step's backward on the one stream, and the
model waits for them: on an H200, strong.yaml's loop ran at 0.84 of the model alone that way
(docs/benchmarks.md, section (j)). Here batch n+1 is augmented on a side stream while step n runs: the main
stream waits for it only when step n+1 starts. Each batch is the same tensors the inline path gives, in the
same order: only where the kernels run changes. On a CPU there is no stream to overlap with, and the
batches are finished inline as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

Prepare = Callable[[Any], tuple[Tensor, Tensor]]


class DevicePrefetch:
    """``prepare(batch)`` for each of ``loader``'s batches: on CUDA, one batch ahead on a side stream; on any
    other device, inline. ``len()`` is the loader's (progress bars and schedules read it)."""

    def __init__(self, loader: Iterable, prepare: Prepare, device: torch.device) -> None:
        self.loader, self.prepare, self.device = loader, prepare, torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.device.type != "cuda":
            return (self.prepare(batch) for batch in self.loader)
        return self._ahead()

    def _ahead(self) -> Iterator[tuple[Tensor, Tensor]]:
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(main)  # what the main stream made before (DeviceAugment's constants) is ready there
        batches = iter(self.loader)
        ahead = self._launch(next(batches, None), side)
        while ahead is not None:
            main.wait_stream(side)  # batch n is ready when the main stream reaches this point; n+1 is not waited for
            ready, ahead = ahead, self._launch(next(batches, None), side)
            for t in ready:
                t.record_stream(main)  # made on the side stream, used and freed on the main one
            yield ready

    def _launch(self, batch: Any, side: torch.cuda.Stream) -> tuple[Tensor, Tensor] | None:
        if batch is None:
            return None
        with torch.cuda.stream(side):
            return self.prepare(batch)
