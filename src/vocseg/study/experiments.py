"""The paper's experiments as data (Section 4, Tables 5-11): each one's config file in ``configs/``, the
table and figure that report it, its name in the paper and the numbers the paper printed; plus the
``--quick`` overrides and the config each experiment trains with.

The experiments stack the way the paper's Q4 did (baseline -> + cosine -> + flips -> + class weights),
then swap the model (unpool, transfer, unet) keeping the weighted recipe; ``builds_on`` records that
chain, and the report compares each experiment with the one it changes.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, config_dir, config_from_dict, load_config
from ..errors import VocsegError
from ..models import get_model_entry

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "QUICK",
    "QUICK_PER_EXPERIMENT",
    "RUNTIME_KEYS",
    "experiment_config",
    "get_experiment",
    "pretrained_weights_cached",
    "quick_overrides",
    "recipe",
    "run_name",
    "select_experiments",
]


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: its config file and the numbers the paper reports for it."""

    name: str
    config: str  # file name in configs/
    table: int  # the paper's table of results
    figure: int  # the paper's figure of its loss curves
    title: str  # as the paper names it
    paper_loss: float
    paper_iou: float
    paper_pixel_accuracy: float
    builds_on: str | None = None  # the experiment this one changes one thing of


# The paper's reported numbers, copied digit for digit from Tables 5-11 (Table 9's loss has more digits
# than a float holds; the literal is kept as printed).
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "baseline", "baseline.yaml", 5, 2, "Baseline FCN", 1.227619285168855, 0.063400418619098873, 0.7300453704336415
    ),
    Experiment(
        "cosine",
        "cosine.yaml",
        6,
        3,
        "+ cosine annealing",
        1.1034563974193905,
        0.06529698682867963,
        0.7413832791473555,
        "baseline",
    ),
    Experiment(
        "augment",
        "augment.yaml",
        7,
        4,
        "+ flips (data augmentation)",
        1.0257537753685662,
        0.07659234543857367,
        0.7500573772451152,
        "cosine",
    ),
    Experiment(
        "weighted",
        "weighted.yaml",
        8,
        5,
        "+ class-weighted loss",
        1.7111190091008726,
        0.09035103128332159,
        0.7199577183827109,
        "augment",
    ),
    Experiment(
        "unpool",
        "unpool.yaml",
        9,
        6,
        "Wilson's model (unpool)",
        1.60041473222815485802618083746538,
        0.10510967736658842,
        0.7237048123193823,
        "weighted",
    ),
    Experiment(
        "transfer",
        "transfer.yaml",
        10,
        7,
        "Transfer learning (ResNet34)",
        1.5542771544145502,
        0.11469616238837657,
        0.7439139420571534,
        "weighted",
    ),
    Experiment(
        "unet", "unet.yaml", 11, 8, "U-Net", 1.8510422473368437, 0.0866359447169563, 0.7346816464610721, "weighted"
    ),
)

# --quick: applied on top of every experiment's config. Module-level so tests (and impatient users)
# can shrink them further. ``epochs`` caps the config's epochs; everything else replaces the value.
QUICK: dict[str, Any] = dict(
    epochs=6,
    image_size=96,  # random 96x96 crops for training (evaluation stays at native size)
    scale_range=None,
    max_train_images=400,
    max_val_images=48,  # caps both the early-stopping holdout and the test split
    batch_size=8,
    num_workers=0,  # 2 cores: worker processes would only compete with the model for them
)
# Per-experiment additions to QUICK ("model_kwargs" is merged into the config's model_kwargs). Epochs
# keep the paper's ordering (13 < 30 < 50) as far as the budget allows, given each model's seconds per
# epoch on 2 cores (docs/benchmarks.md, "The paper's study, quick mode").
QUICK_PER_EXPERIMENT: dict[str, dict[str, Any]] = {
    "augment": dict(epochs=8),
    "weighted": dict(epochs=8),
    "unpool": dict(epochs=6, max_train_images=240),  # full-resolution stages: the costliest epochs
    "transfer": dict(epochs=8),
    "unet": dict(epochs=10, model_kwargs={"base_channels": 16}),  # 1.9 M instead of 31 M parameters
}

# Config keys that say where and how fast a run ran, not what it trained: two configs differing only in
# these are the same recipe (and an old run folder may be resumed under new values of them). The memory
# format and compilation change results only by float rounding.
# augment_on: the two paths make the same draws and differ by interpolation rounding only (data/device_augment.py);
# augment_ahead only moves that work to another thread.
RUNTIME_KEYS = frozenset(
    {"out", "device", "num_workers", "tensorboard", "cache", "channels_last", "compile", "augment_on", "augment_ahead"}
)


# ----------------------------------------------------------------------------- looking experiments up


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name is an error listing the valid ones."""
    for exp in EXPERIMENTS:
        if exp.name == name:
            return exp
    raise VocsegError(f"unknown experiment {name!r}; valid names: {', '.join(e.name for e in EXPERIMENTS)}")


def select_experiments(only: Sequence[str] | None) -> list[Experiment]:
    """The experiments named in ``only`` (in the paper's order), or all of them."""
    if not only:
        return list(EXPERIMENTS)
    valid = [e.name for e in EXPERIMENTS]
    unknown = [name for name in only if name not in valid]
    if unknown:
        raise VocsegError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(valid)}")
    return [e for e in EXPERIMENTS if e.name in set(only)]


def run_name(exp: Experiment, seed_index: int = 0) -> str:
    """The run folder name of the ``seed_index``-th repeat: ``<name>`` for the first (so study folders
    written before ``--seeds`` existed still resume), ``<name>-seed<k>`` for the others."""
    return exp.name if seed_index == 0 else f"{exp.name}-seed{seed_index}"


def recipe(cfg: Mapping[str, Any], *, with_seed: bool = True) -> dict[str, Any]:
    """A config without its runtime keys (and without ``seed`` unless ``with_seed``): what was trained.
    Keys an older version did not write take their defaults (e.g. ``loss: ce``, what it trained with)."""
    drop = RUNTIME_KEYS if with_seed else RUNTIME_KEYS | {"seed"}
    full = {**Config().to_dict(), **cfg}
    return {k: v for k, v in full.items() if k not in drop}


# ----------------------------------------------------------------------------- pretrained weights


def _builder_defaults(builder: Any) -> dict[str, Any]:
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def pretrained_weights_cached(model: str, model_kwargs: Mapping[str, Any]) -> bool | None:
    """Whether the pretrained weights ``model_kwargs`` make ``model`` fetch are already on this machine.

    ``None``: nothing would be fetched. That is the case for models whose registry entry has no
    ``offline_kwargs`` (they never fetch), for kwargs that already are the offline ones, and when a
    kwarg whose offline value is ``None`` is set (a local file given, e.g. ``weights: PATH``).
    Otherwise the model's module answers through the functions it exposes, ``weights_file_name(...)``
    (called with the kwargs it names) and ``weights_cache_dir()``; a module without them counts as
    not cached, so callers assume a download.
    """
    entry = get_model_entry(model)
    kwargs = {**_builder_defaults(entry.builder), **model_kwargs}
    offline = entry.offline_kwargs
    if not offline or all(kwargs.get(k) == v for k, v in offline.items()):
        return None
    if any(v is None and kwargs.get(k) is not None for k, v in offline.items()):
        return None
    module = sys.modules[entry.builder.__module__]
    file_name, cache_dir = getattr(module, "weights_file_name", None), getattr(module, "weights_cache_dir", None)
    if file_name is None or cache_dir is None:
        return False
    wanted = inspect.signature(file_name).parameters
    try:
        name = file_name(**{k: v for k, v in kwargs.items() if k in wanted})
    except VocsegError:
        return False  # e.g. an unknown encoder: building the model will say so
    return (Path(cache_dir()) / name).is_file()


def _without_download(model: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {**kwargs, **get_model_entry(model).offline_kwargs}


# ----------------------------------------------------------------------------- configs


def quick_overrides(exp: Experiment) -> dict[str, Any]:
    """QUICK with the experiment's own additions; ``model_kwargs`` merged."""
    over = copy.deepcopy(QUICK)
    for key, value in copy.deepcopy(QUICK_PER_EXPERIMENT.get(exp.name, {})).items():
        if key == "model_kwargs":
            over["model_kwargs"] = {**over.get("model_kwargs", {}), **value}
        else:
            over[key] = value
    return over


def _apply_quick(exp: Experiment, data: dict[str, Any], applied: dict[str, Any], notes: list[str]) -> None:
    for key, value in quick_overrides(exp).items():
        if key == "epochs":
            value = min(int(value), int(data["epochs"]))
        if key == "model_kwargs":
            value = {**data["model_kwargs"], **value}
        if data.get(key) != value:
            applied[key] = value
        data[key] = value
    model = data["model"]
    cached = pretrained_weights_cached(model, data["model_kwargs"])
    if cached:
        notes.append(
            f"pretrained weights for model {model!r} found in the torch.hub cache: pretrained, as in the paper."
        )
    elif cached is False:
        data["model_kwargs"] = _without_download(model, data["model_kwargs"])
        applied["model_kwargs"] = data["model_kwargs"]
        offline = ", ".join(f"{k}={v}" for k, v in _without_download(model, {}).items())
        notes.append(
            f"the pretrained weights of model {model!r} are not in the torch.hub cache on this machine (quick "
            f"runs never download): trained from scratch ({offline}), unlike the paper."
        )


def experiment_config(
    exp: Experiment,
    out: str | Path,
    data_root: str | Path | None = None,
    quick: bool = False,
    device: str = "auto",
    seed_index: int = 0,
) -> tuple[Config, dict[str, Any], list[str]]:
    """The config an experiment trains with: its YAML, ``data_root``/``device``, the quick overrides,
    ``seed = <the YAML's seed> + seed_index`` and ``out = out/runs/<run_name(exp, seed_index)>``.

    Returns ``(config, overrides applied by quick, notes for the report)``. In quick mode a model whose
    pretrained weights are not cached is trained from scratch (its registry entry's offline kwargs)."""
    cfg = load_config(config_dir() / exp.config)
    data = cfg.to_dict()
    notes: list[str] = []
    applied: dict[str, Any] = {}
    data["data_root"] = str(Path(data_root).expanduser()) if data_root is not None else None
    data["device"] = device
    data["seed"] = int(data["seed"]) + seed_index
    data["out"] = str(Path(out) / "runs" / run_name(exp, seed_index))
    if quick:
        _apply_quick(exp, data, applied, notes)
    return config_from_dict(data, str(config_dir() / exp.config)), applied, notes
