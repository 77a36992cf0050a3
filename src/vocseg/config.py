"""One config dataclass for a training run: YAML sets it, CLI flags override it, and the resolved
config is saved as ``config.yaml`` beside the checkpoints."""

from __future__ import annotations

import math
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import VocsegError


def _field(default: Any, help: str, choices: tuple | None = None, factory: bool = False) -> Any:
    """A Config field with its help text and allowed values, stated once: the CLI's flags, their help and
    the validation all read them from here."""
    meta = {"help": help, "choices": choices}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Everything a training run depends on. Defaults are a sensible modern CPU-friendly recipe;
    the paper's experiments live in ``configs/*.yaml``."""

    # --- model
    model: str = _field("fcn", "registered model name (see `vocseg models`)")
    model_kwargs: dict[str, Any] = _field(dict, "model arguments, e.g. encoder=resnet18 (repeatable)", factory=True)
    num_classes: int = _field(21, "number of classes, background included")
    class_names: list[str] | None = _field(None, "class names (default: the 21 VOC names)")

    # --- data
    data_root: str | None = _field(
        None, "folder holding VOCdevkit, or VOC2012 itself; null: the built-in synthetic data"
    )
    train_split: str = _field("train", "split file to train on (ImageSets/Segmentation/<name>.txt)")
    val_split: str = _field("val", "split for early stopping and curves (the test split when val_holdout > 0)")
    val_holdout: float = _field(
        0.0, "> 0: early-stop on this fraction of train_split; val_split becomes the test split"
    )
    image_size: int | None = _field(160, "training crop side in pixels; null: native size")
    scale_range: list[float] | None = _field(
        lambda: [0.5, 2.0], "random rescale range before cropping, e.g. 0.5 2.0", factory=True
    )
    hflip: float = _field(0.5, "probability of a horizontal flip")
    vflip: float = _field(0.5, "probability of a vertical flip")
    rotate: float = _field(0.0, "random rotation by up to this many degrees either way (0: none); corners are void")
    photometric: bool = _field(False, "random brightness, contrast, saturation and hue (mmsegmentation's)")
    copy_paste: float = _field(
        0.0, "probability that a training crop gets another crop's objects pasted on it (needs image_size)"
    )
    max_train_images: int | None = _field(None, "use at most this many training images (smoke runs)")
    max_val_images: int | None = _field(None, "use at most this many validation/test images")
    num_workers: int | str = _field("auto", "data-loader processes; auto: chosen per device (docs/benchmarks.md)")
    cache: str = _field("auto", "keep decoded images in RAM: auto (when they fit), ram, none", ("auto", "ram", "none"))
    augment_on: str = _field(
        "auto",
        "where training crops are rescaled, flipped and distorted: workers (loader processes), device (batched on "
        "the training device), auto (device on CUDA, workers elsewhere; docs/benchmarks.md)",
        ("auto", "workers", "device"),
    )
    augment_ahead: bool | None = _field(
        None,
        "with augmentation on the device: finish each batch on a thread of its own, ahead of the training step "
        "(on CUDA, on a side stream); null: on where the device path runs on CUDA (docs/benchmarks.md)",
    )
    eval_batch_size: int = _field(
        1,
        "evaluation batch size: images of one size share a batch, each at native resolution (more than 1 pays on a GPU)",
    )
    tta: str = _field(
        "none",
        "test-time augmentation (in training: of the final evaluation; validation passes stay plain)",
        ("none", "flip", "multiscale"),
    )
    tta_scales: list[float] | None = _field(
        None, "scales of tta: multiscale, e.g. 0.5 0.75 1.0; null: 0.5-1.75 by 0.25 (mmsegmentation's)"
    )

    # --- optimisation
    epochs: int = _field(30, "training epochs")
    batch_size: int = _field(8, "images per optimizer step (per process)")
    lr: float = _field(1e-3, "base learning rate")
    weight_decay: float = _field(0.0, "weight decay")
    optimizer: str = _field("adamw", "optimizer", ("adam", "adamw", "sgd"))
    momentum: float = _field(0.9, "SGD momentum")
    scheduler: str = _field(
        "cosine", "LR schedule: cosine (per epoch, the paper's), poly, none", ("none", "cosine", "poly")
    )
    poly_power: float = _field(0.9, "power of the poly schedule")
    warmup_iters: int = _field(0, "linear LR warmup over this many optimizer steps")
    iters: int | None = _field(None, "schedule length in optimizer steps instead of epochs")
    budget: str | float | None = _field(None, "wall-clock budget for the whole run, e.g. 15m, 90s, 1h30m")
    aux_weight: float = _field(0.4, "weight of an auxiliary head's loss (models that have one)")
    min_lr: float = _field(0.0, "final learning rate of cosine/poly")
    loss: str = _field(
        "ce",
        "training loss: cross-entropy, or cross-entropy plus a region loss (soft Dice, Lovasz-softmax)",
        ("ce", "ce+dice", "ce+lovasz"),
    )
    label_smoothing: float = _field(
        0.0, "label smoothing of the training cross-entropy (Szegedy et al. 2016; 0: off); validation is unsmoothed"
    )
    class_weighting: str = _field(
        "none", "class weights in the loss", ("none", "paper", "median_frequency", "inverse_sqrt")
    )
    patience: int | None = _field(None, "early-stopping patience in validations; null: off")
    monitor: str = _field(
        "val_loss",
        "what early stopping and best.pt follow; last: no choice, best.pt is the last epoch (a fixed schedule)",
        ("val_loss", "val_miou", "last"),
    )
    val_every: int = _field(
        1, "validate every N epochs and after the last one; best.pt is chosen among the validated epochs"
    )
    ema_decay: float | None = _field(
        None,
        "keep an exponential moving average of the weights, this decay per step (e.g. 0.999); validation, "
        "the checkpoints' weights and the final evaluation use the average. null: off",
    )

    # --- system
    device: str = _field("auto", "auto, cpu, cuda, cuda:N or mps")
    amp: str = _field(
        "auto",
        "autocast: auto (bf16 where the CPU or GPU has it natively, else fp32; fp16 on older GPUs), bf16, fp16, none",
        ("auto", "none", "bf16", "fp16"),
    )
    seed: int = _field(0, "random seed")
    deterministic: bool = _field(False, "deterministic algorithms (slower)")
    out: str | None = _field(None, "run folder (default runs/<model>)")
    tensorboard: bool = _field(False, "write TensorBoard logs to RUN/tensorboard")
    channels_last: bool | None = _field(
        None, "channels-last memory format; null: the model's measured choice (`vocseg models`)"
    )
    compile: bool | None = _field(
        None,
        "torch.compile the model (eager with a message when it cannot); null: on CUDA, for the models whose "
        "measured gain repays compiling within the run (`vocseg models`, docs/benchmarks.md)",
    )
    sync_bn: bool = _field(False, "SyncBatchNorm across processes (torchrun)")

    def validate(self) -> Config:
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise VocsegError(f"config {key}={getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("epochs", "batch_size", "num_classes", "eval_batch_size", "val_every"):
            if int(getattr(self, key)) < 1:
                raise VocsegError(f"config {key} must be >= 1, got {getattr(self, key)!r}")
        if self.lr <= 0:
            raise VocsegError(f"config lr must be > 0, got {self.lr!r}")
        if self.tta_scales is not None and (not self.tta_scales or any(not s > 0 for s in self.tta_scales)):
            raise VocsegError(f"config tta_scales must be positive numbers, got {self.tta_scales!r}")
        for key in ("val_holdout", "label_smoothing"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise VocsegError(f"config {key} must be in [0, 1), got {getattr(self, key)!r}")
        if self.image_size is not None and self.image_size < 8:
            raise VocsegError(f"config image_size must be >= 8 or null, got {self.image_size!r}")
        if self.copy_paste and self.image_size is None:
            raise VocsegError(
                f"config copy_paste={self.copy_paste!r} needs image_size: it pastes between crops of one size"
            )
        if not 0.0 <= self.rotate <= 180.0:
            raise VocsegError(f"config rotate is a largest angle in degrees, in [0, 180], got {self.rotate!r}")
        for key in ("hflip", "vflip", "copy_paste"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise VocsegError(f"config {key} is a probability in [0, 1], got {getattr(self, key)!r}")
        if not (self.num_workers == "auto" or (isinstance(self.num_workers, int) and self.num_workers >= 0)):
            raise VocsegError(f"config num_workers must be 'auto' or an integer >= 0, got {self.num_workers!r}")
        for key in ("warmup_iters", "aux_weight", "poly_power"):
            if getattr(self, key) < 0:
                raise VocsegError(f"config {key} must be >= 0, got {getattr(self, key)!r}")
        if self.budget is not None:
            parse_duration(self.budget)  # a bad budget fails here, naming the value
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise VocsegError(f"config ema_decay must be in [0, 1) or null, got {self.ema_decay!r}")
        if self.iters is not None and self.iters < 1:
            raise VocsegError(f"config iters must be >= 1 or null, got {self.iters!r}")
        for key in ("weight_decay", "min_lr"):
            if getattr(self, key) < 0:
                raise VocsegError(f"config {key} must be >= 0, got {getattr(self, key)!r}")
        if self.patience is not None and self.patience < 0:
            raise VocsegError(f"config patience must be >= 0 or null, got {self.patience!r}")
        if self.monitor == "last" and self.patience:
            raise VocsegError(
                f"config patience={self.patience!r} needs monitor val_loss or val_miou: monitor last never stops early"
            )
        if self.scale_range is not None and (
            len(self.scale_range) != 2
            or not all(isinstance(v, (int, float)) and v > 0 for v in self.scale_range)
            or self.scale_range[0] > self.scale_range[1]
        ):
            raise VocsegError(
                f"config scale_range must be [low, high] with 0 < low <= high, or null; got {self.scale_range!r}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise VocsegError(
                f"config class_names has {len(self.class_names)} names but num_classes is {self.num_classes}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELD_NAMES = {f.name for f in fields(Config)}
CHOICES: dict[str, tuple] = {f.name: f.metadata["choices"] for f in fields(Config) if f.metadata.get("choices")}
HINTS = typing.get_type_hints(Config)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check ``value`` against the field's annotation, converting the harmless cases YAML and the CLI
    produce (``1e-3`` is a string to YAML; ``3.0`` for an int); anything else is an error naming the key."""
    hint = HINTS[key]
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
    names = " or ".join(
        "null" if t is type(None) else getattr(typing.get_origin(t) or t, "__name__", str(t)) for t in allowed
    )
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
    """Read a YAML config (optional), then apply ``overrides`` (the CLI flags given; a None value sets the
    key to null, e.g. ``--patience null`` turns early stopping off)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
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
    return config_from_dict(apply_overrides(data, overrides), source)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with the flags given applied: ``model_kwargs`` adds to the data's model arguments (one
    ``--model-arg`` changes one), every other key replaces its value."""
    out = dict(data)
    for key, value in (overrides or {}).items():
        out[key] = {**out.get("model_kwargs", {}), **value} if key == "model_kwargs" else value
    return out


def config_dir() -> Path:
    """The folder of the configs vocseg ships: ``$VOCSEG_CONFIG_DIR``, else ``configs/`` of a source checkout
    (beside ``src/``), else the copy a wheel installs as ``vocseg/configs``."""
    package = Path(__file__).resolve().parent
    candidates = [package.parents[1] / "configs", package / "configs"]
    if os.environ.get("VOCSEG_CONFIG_DIR"):
        candidates.insert(0, Path(os.environ["VOCSEG_CONFIG_DIR"]).expanduser())
    for path in candidates:
        if (path / "baseline.yaml").is_file():
            return path
    raise VocsegError(
        f"cannot find vocseg's configs (baseline.yaml ...); looked in {', '.join(map(str, candidates))}. "
        "Reinstall vocseg, or set VOCSEG_CONFIG_DIR to a folder holding them."
    )


def shipped_configs() -> list[str]:
    """The names of the configs vocseg ships (``vocseg config list``), e.g. ``strong``."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def resolve_config_path(path_or_name: str | Path) -> Path:
    """A config file's path: the file given, else the shipped config of that name (``strong``, ``strong.yaml``)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml")
    if path.parent == Path(".") and name in shipped_configs():
        return config_dir() / f"{name}.yaml"
    raise VocsegError(
        f"config file not found: {path} (or name a shipped config: {', '.join(shipped_configs())}; "
        "`vocseg config show NAME` prints one)"
    )


def parse_value(text: str) -> Any:
    """Parse a CLI ``key=value`` value with YAML rules (``false`` -> False, ``3`` -> 3, ``null`` -> None)."""
    return yaml.safe_load(text)


def replace(cfg: Config, **changes: Any) -> Config:
    return config_from_dict({**cfg.to_dict(), **changes})


_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration: ``"900"`` or ``900`` (seconds), ``"90s"``, ``"15m"``, ``"2h"``, ``"1h30m"``,
    ``"1.5h"``, ``"1h 30m 10s"``. Units in the order h, m, s, each at most once; the result must be > 0."""
    if isinstance(text, bool):
        raise VocsegError(f"duration {text!r} is not a number of seconds or a string like '15m', '2h', '1h30m'")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        compact = str(text).strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(compact)
        if re.fullmatch(r"\d+(?:\.\d+)?", compact):
            seconds = float(compact)
        elif compact and match:
            seconds = sum(float(match[u] or 0) * f for u, f in (("h", 3600), ("m", 60), ("s", 1)))
        else:
            raise VocsegError(
                f"duration {text!r} is not understood: use seconds ('900') or units h, m, s in that order "
                f"('90s', '15m', '2h', '1h30m')"
            )
    if not math.isfinite(seconds) or seconds <= 0:
        raise VocsegError(f"duration {text!r} must be more than 0 seconds")
    return seconds
