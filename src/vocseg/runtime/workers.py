"""What the machine offers, and the loader workers that suit it."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ..errors import VocsegError


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one: a container's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """Loader processes for ``num_workers`` ("auto" or a number) on ``device``.

    "auto" loads in the main process on CPU machines of up to 4 cores: the model's intra-op threads
    already use every core, and loader processes only compete with them (docs/benchmarks.md, section (a)).
    With a GPU the cores are free for decoding, so "auto" uses most of them. A number is capped at the
    core count (more processes than cores only thrash)."""
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


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run with one torch thread: for loops of small ops (decoding, per-image statistics), where waking the
    other threads costs more than it saves (docs/benchmarks.md, section (a))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_in_chunks(
    work: Callable[[tuple], int],
    task: Callable[[list[int]], tuple],
    n: int,
    workers: int | None,
    desc: str,
    progress: bool,
) -> None:
    """Run ``work(task(indices))`` over chunks of 0..n-1 in ``workers`` processes (None: every core), with a
    progress bar counting what each chunk returns.

    A few chunks per worker balances the load; chunks, not single items, keep the IPC overhead low.
    ``work`` must be a top-level function and the tasks plain data, so this also works under "spawn"
    (macOS, Windows)."""
    from tqdm.auto import tqdm

    workers = max(1, min(workers or cpu_count(), n))
    size = max(1, min(32, math.ceil(n / (workers * 4))))
    tasks = [task(list(range(i, min(i + size, n)))) for i in range(0, n, size)]
    with tqdm(total=n, desc=desc, unit="img", disable=not progress) as bar:
        if workers == 1 or len(tasks) == 1:
            for t in tasks:
                bar.update(work(t))
        else:
            with mp.get_context().Pool(min(workers, len(tasks))) as pool:
                for done in pool.imap_unordered(work, tasks):
                    bar.update(done)
