"""Files vocseg writes: atomic writes, writes on a background thread, and output paths that are
created up front or refused with one line naming the path and the cause.

Every command that writes somewhere (``train --out``, ``evaluate --save-dir``, ``predict --out``,
``export --out``, ``compare --out``, ``reproduce --out``, ``synth``, ``download --root``) calls
:func:`output_dir` or :func:`output_file` before it loads or traces any model, so a bad path costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from ..errors import VocsegError


def atomic_write_bytes(data: bytes | memoryview, path: str | Path) -> None:
    """Write to a temporary file beside ``path``, flush and fsync it, then rename over ``path``.
    A crash at any point leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _blocking_file(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder (None: there is none)."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def output_dir(path: str | os.PathLike, what: str = "output folder", create: bool = True) -> Path:
    """Create the folder ``path`` (and its parents) or raise one VocsegError naming it and the cause.
    ``create=False`` only checks that it could be created (a command that creates it later, once its
    inputs are known to be good, so that a failed command leaves no empty folder behind)."""
    path = Path(path).expanduser()
    blocker = _blocking_file(path)
    if blocker is not None:
        where = ": it is a file, not a folder" if blocker == path else f": {blocker} is a file, not a folder"
        raise VocsegError(f"cannot use {path} as the {what}{where}")
    if not create:
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            raise VocsegError(f"cannot create the {what} {path}: {existing} is not writable")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VocsegError(f"cannot create the {what} {path}: {os.strerror(e.errno) if e.errno else e}") from None
    if not os.access(path, os.W_OK):
        raise VocsegError(f"cannot write to the {what} {path}: permission denied")
    return path


def output_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output file") -> Path:
    """Check that the file ``path`` can be written (its folder is created), or raise one VocsegError
    naming it: a folder in its place, a file in place of a parent folder, or (without ``overwrite``)
    a file already there."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise VocsegError(f"the {what} {path} is a folder; give a file name such as {path / ('model' + path.suffix)}")
    output_dir(path.parent, f"folder of the {what}")
    if path.exists() and not overwrite:
        raise VocsegError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    return path


def detached_copy(x: Any) -> Any:
    """``x`` with every tensor copied to the CPU and every dict, list and tuple copied: a snapshot that
    training can go on changing under (parameters and optimizer moments are updated in place)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: detached_copy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(detached_copy(v) for v in x)
    return x


class BackgroundWriter:
    """Runs file writes one at a time on a worker thread, so training goes on while checkpoints are
    serialised and synced (docs/benchmarks.md, section (g)).

    ``submit`` first waits for the write before it (files land in order, and a failed write raises its
    error, naming the file, in the training thread); ``wait`` before reading what was written; ``close``
    at the end. What is submitted must not change afterwards: pass a :func:`detached_copy`."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vocseg-writer")
        self._pending: Future | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
