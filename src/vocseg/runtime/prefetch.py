"""A loader's batches finished by a ``prepare`` step, inline or ahead on a thread of its own.

On a GPU, the device path's augmentation (data.device_augment) is host work on the training thread: the
windows' copies and a few dozen small kernels per batch, launched between one step's backward and the next
step's forward. Run ahead on a thread (and, on CUDA, its own stream), that work overlaps the training step:
PyTorch's ops and the autograd engine release the GIL while they run.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any

import torch

AHEAD = 2  # batches finished before the training thread asks for them: one in the queue, one in the works
_END = object()  # the producer's last item when the batches ran out


def finished_batches(
    batches: Iterable, prepare: Callable[[Any], Any] | None, device: torch.device | str, ahead: bool = False
) -> Generator[Any, None, None]:
    """``prepare(batch)`` for each of ``batches`` in order (the batches as they are when ``prepare`` is None).

    ``ahead``: finish them on a thread of its own, up to AHEAD batches before they are asked for. Close the
    generator (``contextlib.closing``) when leaving early: that stops the thread and waits for it, so the
    loader is free for its next epoch. An exception in the thread is raised here, at the batch it hit."""
    if prepare is None:
        yield from batches
    elif not ahead:
        for batch in batches:
            yield prepare(batch)
    else:
        yield from _thread_ahead(batches, prepare, torch.device(device))


def _thread_ahead(batches: Iterable, prepare: Callable, device: torch.device) -> Generator[Any, None, None]:
    items: queue.Queue = queue.Queue(maxsize=AHEAD - 1)
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce, args=(batches, prepare, device, items, stop), name="vocseg-prefetch", daemon=True
    )
    producer.start()
    try:
        while (item := items.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            out, ready = item
            yield _handed_over(out, ready, device)
    finally:
        stop.set()
        producer.join()


def _produce(batches: Iterable, prepare: Callable, device: torch.device, items: queue.Queue, stop) -> None:
    """The thread: finish each batch (on a side stream on CUDA, marked by an event when done) and queue it."""
    try:  # everything, the stream's creation too: the training thread waits for an item whatever happens
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        on_stream = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        with torch.no_grad(), on_stream:
            for batch in batches:
                out = prepare(batch)
                ready = None
                if stream is not None:
                    ready = torch.cuda.Event()
                    ready.record(stream)
                if not _put(items, (out, ready), stop):
                    return
        _put(items, _END, stop)
    except BaseException as error:  # noqa: BLE001 - every error goes to the training thread, which raises it
        _put(items, error, stop)


def _put(items: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Queue ``item`` unless the consumer stopped first (it then takes nothing more); True when queued."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _handed_over(out: Any, ready: torch.cuda.Event | None, device: torch.device) -> Any:
    """``out`` made usable on the training thread's stream: that stream waits for the side stream's work, and
    the caching allocator learns the tensors are used there (so it does not reuse their memory too early)."""
    if ready is None:
        return out
    current = torch.cuda.current_stream(device)
    current.wait_event(ready)
    for tensor in _tensors(out):
        tensor.record_stream(current)
    return out


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for part in out for t in _tensors(part)]
    return []
