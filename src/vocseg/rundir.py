"""A run folder: the one place that names its files, knows a run's status, and reads and writes them.

    RUN/config.yaml    the resolved config the run trains with
    RUN/history.csv    one row per epoch
    RUN/last.pt        everything needed to resume (weights, optimizer, scheduler, RNGs, ...)
    RUN/best.pt        weights of the best epoch (weights and metadata only)
    RUN/metrics.json   final metrics on the test split; its presence marks a finished run
    RUN/per_image.npz  per-image, per-class intersections and unions on the test split
    RUN/curves.png     loss curves
    RUN/tensorboard/   TensorBoard events (optional)

Every write goes through :meth:`RunDir.writing`, which turns an OS failure (no space left, a folder
that cannot be created or written) into one :class:`VocsegError` naming the path and the cause;
checkpoints and metrics are written atomically, so the previous file stays intact and loadable.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import VocsegError
from .runtime.files import atomic_write_bytes, output_dir

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "lr", "seconds")

# Run status, as :attr:`RunDir.status` reports it.
DONE, INTERRUPTED, PARTIAL, EMPTY = "done", "interrupted", "partial", "empty"


class RunDir:
    """A training run's folder (it may not exist yet)."""

    CONFIG = "config.yaml"
    HISTORY = "history.csv"
    LAST = "last.pt"
    BEST = "best.pt"
    METRICS = "metrics.json"
    PER_IMAGE = "per_image.npz"
    CURVES = "curves.png"
    TENSORBOARD = "tensorboard"
    PLAN = "plan.yaml"  # --recipe auto: the planned config with its reasons
    FINGERPRINT = "fingerprint.json"  # --recipe auto: the training split's fingerprint it was planned from
    FILES = (CONFIG, HISTORY, LAST, BEST, METRICS, PER_IMAGE, CURVES, PLAN, FINGERPRINT)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----------------------------------------------------------------- paths and status
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def last_path(self) -> Path:
        return self.path / self.LAST

    @property
    def best_path(self) -> Path:
        return self.path / self.BEST

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def curves_path(self) -> Path:
        return self.path / self.CURVES

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    def existing_files(self) -> list[str]:
        return [name for name in self.FILES if (self.path / name).exists()]

    @property
    def status(self) -> str:
        """``done`` (metrics.json), ``interrupted`` (last.pt, no metrics), ``partial`` (leftovers of a run
        that died before its first epoch ended) or ``empty``."""
        if self.metrics_path.is_file():
            return DONE
        if self.last_path.is_file():
            return INTERRUPTED
        return PARTIAL if self.existing_files() else EMPTY

    # ----------------------------------------------------------------- preparing
    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Refuse to mix runs: an existing run is continued (resume) or replaced (overwrite), never clobbered."""
        if resume:
            if not self.last_path.is_file():
                raise VocsegError(f"cannot resume: {self.last_path} not found")
            return
        existing = self.existing_files()
        if existing and not overwrite:
            raise VocsegError(
                f"{self.path} already holds a run ({', '.join(existing)}); use --resume to continue it, "
                "--overwrite to replace it, or --out to choose another folder"
            )
        output_dir(self.path, "run folder")
        with self.writing(self.path):
            for name in existing:
                (self.path / name).unlink()
            shutil.rmtree(self.tensorboard_dir, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, target: Path) -> Iterator[None]:
        """Turn an OS error while writing ``target`` into one clear VocsegError naming it and the cause."""
        try:
            yield
        except OSError as e:
            cause = os.strerror(e.errno) if e.errno else str(e)
            hint = " (free some space and resume with --resume)" if e.errno == errno.ENOSPC else ""
            where = e.filename or target
            raise VocsegError(
                f"cannot write {where}: {cause}{hint}; the previous files are left as they were"
            ) from None

    # ----------------------------------------------------------------- writing
    def save_config(self, cfg_dict: dict[str, Any]) -> None:
        with self.writing(self.config_path):
            atomic_write_bytes(yaml.safe_dump(cfg_dict, sort_keys=False).encode(), self.config_path)

    def save_epoch(self, state: dict[str, Any], improved: bool, best_keys_dropped: tuple[str, ...]) -> None:
        """Write ``best.pt`` (when ``improved``; without ``best_keys_dropped``) then ``last.pt``.

        best.pt first: if we die between the two writes, last.pt still points at the previous epoch and a
        resume redoes this one."""
        if improved:
            with self.writing(self.best_path):
                save_checkpoint({k: v for k, v in state.items() if k not in best_keys_dropped}, self.best_path)
        with self.writing(self.last_path):
            save_checkpoint(state, self.last_path)

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        path = self.path / self.HISTORY
        with self.writing(path), open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """metrics.json marks a finished run, so it is written atomically (never half-written)."""
        with self.writing(self.metrics_path):
            atomic_write_bytes(json.dumps(metrics, indent=2).encode(), self.metrics_path)

    def write_per_image(
        self, ids: list[str], intersection: np.ndarray, union: np.ndarray, mask_digests: list[str] | None = None
    ) -> None:
        """Per-image, per-class intersections and unions (``N x C`` each) of the final evaluation, and a
        digest of each image's mask (``VOCSegmentation.mask_digests``) to tell which pictures were scored."""
        path = self.path / self.PER_IMAGE
        with self.writing(path):
            import io

            buf = io.BytesIO()
            extra = {"mask_digest": np.array(mask_digests)} if mask_digests is not None else {}
            np.savez_compressed(buf, ids=np.array(ids), intersection=intersection, union=union, **extra)
            atomic_write_bytes(buf.getvalue(), path)

    # ----------------------------------------------------------------- reading
    def _read(self, path: Path, parse: Any, error: type[Exception] | tuple) -> Any:
        """Parse a run file; a corrupt one is an error naming it (delete it, or the run folder, to redo the run)."""
        try:
            return parse(path.read_text())
        except (error, UnicodeDecodeError) as e:
            raise VocsegError(
                f"{path} is corrupt ({e}); delete it (or its run folder) and rerun to redo that run"
            ) from None

    def read_config(self) -> dict[str, Any] | None:
        if not self.config_path.is_file():
            return None
        return self._read(self.config_path, yaml.safe_load, yaml.YAMLError) or {}

    def read_metrics(self) -> dict[str, Any] | None:
        if not self.metrics_path.is_file():
            return None
        return self._read(self.metrics_path, json.loads, ValueError)

    def read_history(self) -> list[dict[str, Any]]:
        path = self.path / self.HISTORY
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [
                {k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)
            ]
        for row in rows:
            row["epoch"] = int(row["epoch"])
        return rows

    def read_per_image(self) -> dict[str, np.ndarray] | None:
        """``{"ids", "intersection", "union"}`` (and ``"mask_digest"`` when the run recorded it) or None when
        the run has no per-image file."""
        path = self.path / self.PER_IMAGE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in ("ids", "intersection", "union")}
                if "mask_digest" in data.files:
                    out["mask_digest"] = data["mask_digest"]
                return out
        except (OSError, ValueError, KeyError) as e:
            raise VocsegError(f"{path} is corrupt ({e}); rerun `vocseg evaluate` or delete it") from None

    def load_last(self, map_location: Any = "cpu") -> dict[str, Any]:
        """last.pt; when it cannot be read, the error also says what in the run is intact and what to do."""
        try:
            return load_checkpoint(self.last_path, map_location=map_location)
        except VocsegError as e:
            raise VocsegError(f"{e}. {self.recovery_hint()}") from None

    def recovery_hint(self) -> str:
        """What is left of a run whose last.pt is unreadable, and the next step."""
        try:
            best = load_checkpoint(self.best_path)
        except VocsegError:
            best = None
        fresh = f"`vocseg train --config {self.config_path} --out NEW_FOLDER`"
        if best is None:
            return f"No readable best.pt either: the run cannot be continued; start it again with {fresh}."
        return (
            f"{self.best_path} (epoch {best.get('epoch', '?')}) is intact: evaluate, predict or export with it as it "
            f"is, or train again with {fresh} (resuming needs last.pt's optimizer state, which best.pt does not hold)."
        )

    def load_best(self, map_location: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.best_path, map_location=map_location)
