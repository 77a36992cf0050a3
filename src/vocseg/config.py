"""One config dataclass for a training run: YAML sets it, CLI flags override it, and the resolved
config is saved as ``config.yaml`` beside the checkpoints."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import VocsegError

CHOICES: dict[str, tuple] = {
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("none", "cosine", "poly"),
    "class_weighting": ("none", "paper", "median_frequency", "inverse_sqrt"),
    "monitor": ("val_loss", "val_miou"),
    "amp": ("auto", "none", "bf16", "fp16"),
    "cache": ("auto", "ram", "none"),
}


@dataclass
class Config:
    """Everything a training run depends on. Defaults are a sensible modern CPU-friendly recipe;
    the paper's experiments live in ``configs/*.yaml``."""

    # --- model
    model: str = "fcn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 21
    class_names: list[str] | None = None  # None: the 21 VOC names

    # --- data
    data_root: str | None = None  # folder holding VOCdevkit (or VOC2012 itself); None: built-in synthetic set
    train_split: str = "train"
    val_split: str = "val"  # split used for early stopping and curves
    val_holdout: float = 0.0  # >0: early-stop on this fraction of train_split; then val_split is the test split
    image_size: int | None = 160  # training crop side (suits the built-in data; VOC configs set their own); None: native size
    scale_range: list[float] | None = field(default_factory=lambda: [0.5, 2.0])  # random rescale before cropping
    hflip: float = 0.5
    vflip: float = 0.5
    max_train_images: int | None = None  # cap for smoke runs
    max_val_images: int | None = None
    num_workers: int | str = "auto"  # "auto": chosen per device (see system.py); a number wins
    cache: str = "auto"  # decoded images kept in RAM: auto (when they fit a share of RAM), ram, none
    photometric: bool = False  # random brightness/contrast/saturation/hue (mmsegmentation's PhotoMetricDistortion)
    eval_batch_size: int = 1  # 1 = exact native-resolution evaluation

    # --- optimisation
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # cosine: CosineAnnealingLR with T_max = epochs (the paper); poly: (1 - t/T)^poly_power
    poly_power: float = 0.9
    warmup_iters: int = 0  # linear warmup from 0 over this many optimizer steps (then the schedule runs per step)
    iters: int | None = None  # schedule length in optimizer steps instead of epochs (the field's 20k/40k)
    budget: str | None = None  # wall-clock budget for the whole run, e.g. "15m", "90s", "2h"
    aux_weight: float = 0.4  # weight of an auxiliary head's loss, for models that have one
    min_lr: float = 0.0
    class_weighting: str = "none"
    patience: int | None = None  # early stopping on `monitor`; None: off
    monitor: str = "val_loss"

    # --- system
    device: str = "auto"
    amp: str = "auto"  # auto: bf16 on CPU / bf16-capable GPUs, fp16 (+GradScaler) on older CUDA, else none
    seed: int = 0
    deterministic: bool = False
    out: str | None = None  # run folder; None: runs/<model>
    tensorboard: bool = False
    channels_last: bool = False  # NHWC memory format for model and inputs
    compile: bool = False  # torch.compile the model (falls back to eager with a message when it cannot)
    sync_bn: bool = False  # SyncBatchNorm across processes in distributed runs

    def validate(self) -> "Config":
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise VocsegError(f"config {key}={getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("epochs", "batch_size", "num_classes", "eval_batch_size"):
            if int(getattr(self, key)) < 1:
                raise VocsegError(f"config {key} must be >= 1, got {getattr(self, key)!r}")
        if self.lr <= 0:
            raise VocsegError(f"config lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.val_holdout < 1.0:
            raise VocsegError(f"config val_holdout must be in [0, 1), got {self.val_holdout!r}")
        if self.image_size is not None and self.image_size < 8:
            raise VocsegError(f"config image_size must be >= 8 or null, got {self.image_size!r}")
        for key in ("hflip", "vflip"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise VocsegError(f"config {key} is a probability in [0, 1], got {getattr(self, key)!r}")
        if not (self.num_workers == "auto" or (isinstance(self.num_workers, int) and self.num_workers >= 0)):
            raise VocsegError(f"config num_workers must be 'auto' or an integer >= 0, got {self.num_workers!r}")
        for key in ("warmup_iters", "aux_weight", "poly_power"):
            if getattr(self, key) < 0:
                raise VocsegError(f"config {key} must be >= 0, got {getattr(self, key)!r}")
        if self.iters is not None and self.iters < 1:
            raise VocsegError(f"config iters must be >= 1 or null, got {self.iters!r}")
        for key in ("weight_decay", "min_lr"):
            if getattr(self, key) < 0:
                raise VocsegError(f"config {key} must be >= 0, got {getattr(self, key)!r}")
        if self.patience is not None and self.patience < 0:
            raise VocsegError(f"config patience must be >= 0 or null, got {self.patience!r}")
        if self.scale_range is not None and (
            len(self.scale_range) != 2
            or not all(isinstance(v, (int, float)) and v > 0 for v in self.scale_range)
            or self.scale_range[0] > self.scale_range[1]
        ):
            raise VocsegError(f"config scale_range must be [low, high] with 0 < low <= high, or null; got {self.scale_range!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise VocsegError(
                f"config class_names has {len(self.class_names)} names but num_classes is {self.num_classes}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(Config)}
_HINTS = typing.get_type_hints(Config)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check ``value`` against the field's annotation, converting the harmless cases YAML and the CLI
    produce (``1e-3`` is a string to YAML; ``3.0`` for an int); anything else is an error naming the key."""
    hint = _HINTS[key]
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise VocsegError(f"{source}: {key} must not be null")
    for t in allowed:
        base = typing.get_origin(t) or t
        if base is bool and isinstance(value, bool):
            return value
        if base is int and not isinstance(value, bool):
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        if base is float and not isinstance(value, bool):
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        if base in (str, list, dict) and isinstance(value, base):
            return value
    names = " or ".join("null" if t is type(None) else getattr(typing.get_origin(t) or t, "__name__", str(t)) for t in allowed)
    raise VocsegError(f"{source}: {key}={value!r} must be {names}")


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a mapping; an unknown key or a value of the wrong type is an error that names it."""
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise VocsegError(
            f"{source}: unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(FIELD_NAMES))}"
        )
    return Config(**{k: _coerce(k, v, source) for k, v in data.items()}).validate()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (optional), apply ``overrides`` (CLI flags; None values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise VocsegError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise VocsegError(f"config file {path} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise VocsegError(f"config file {path} must hold a mapping of keys to values")
        data.update(loaded)
    source = str(path) if path is not None else "command line"
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "model_kwargs":
            data["model_kwargs"] = {**data.get("model_kwargs", {}), **value}
        else:
            data[key] = value
    return config_from_dict(data, source)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def parse_value(text: str) -> Any:
    """Parse a CLI ``key=value`` value with YAML rules (``false`` -> False, ``3`` -> 3, ``null`` -> None)."""
    return yaml.safe_load(text)


def replace(cfg: Config, **changes: Any) -> Config:
    return config_from_dict({**cfg.to_dict(), **changes})
