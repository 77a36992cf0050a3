"""Rerun the paper's study (Section 4, Tables 5-11) in one command and write a report.

    vocseg reproduce --out DIR [--data-root VOC] [--quick] [--only NAME ...] [--device D] [--overwrite]

Each experiment of :data:`EXPERIMENTS` is one YAML file in ``configs/`` (a complete :class:`Config`);
the experiments stack the way the paper's Q4 did (baseline -> + cosine -> + flips -> + class weights),
then swap the model (unpool, transfer, unet) keeping the weighted recipe. Output::

    DIR/runs/<name>/      one run folder per experiment (config.yaml, history.csv, best.pt, last.pt,
                          curves.png, metrics.json; see train.py)
    DIR/reproduce.json    how each experiment was run (quick overrides, notes) and what happened
    DIR/report.md, DIR/report.html, DIR/figures/   the report (see report.py)

Reruns are cheap: a run folder with ``metrics.json`` is done and skipped; one with ``last.pt`` but no
``metrics.json`` was interrupted and is resumed. ``--overwrite`` retrains the selected experiments.

``--quick`` is a CPU smoke version of the whole study (all seven experiments in about ten minutes on
two cores): the built-in synthetic dataset, few epochs, small crops, capped image counts, a slimmer
U-Net and, when torchvision's ImageNet weights are not cached, a ResNet encoder trained from scratch.
Every override is recorded in ``reproduce.json`` and in the report.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from .checkpoint import atomic_write_bytes
from .config import Config, config_from_dict, load_config
from .errors import VocsegError

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "QUICK",
    "QUICK_PER_EXPERIMENT",
    "ReproduceResult",
    "config_dir",
    "experiment_config",
    "get_experiment",
    "reproduce",
    "select_experiments",
]


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: its config file and the numbers the paper reports for it."""

    name: str
    config: str  # file name in configs/
    table: int  # the paper's table of results
    figure: int  # the paper's figure of its loss curves
    title: str
    paper_loss: float
    paper_iou: float
    paper_pixel_accuracy: float


# The paper's reported numbers, copied digit for digit from Tables 5-11 (Table 9's loss has more digits
# than a float holds; the literal is kept as printed).
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("baseline", "baseline.yaml", 5, 2, "Baseline FCN",
               1.227619285168855, 0.063400418619098873, 0.7300453704336415),
    Experiment("cosine", "cosine.yaml", 6, 3, "+ cosine annealing",
               1.1034563974193905, 0.06529698682867963, 0.7413832791473555),
    Experiment("augment", "augment.yaml", 7, 4, "+ flips (data augmentation)",
               1.0257537753685662, 0.07659234543857367, 0.7500573772451152),
    Experiment("weighted", "weighted.yaml", 8, 5, "+ class-weighted loss",
               1.7111190091008726, 0.09035103128332159, 0.7199577183827109),
    Experiment("unpool", "unpool.yaml", 9, 6, "Wilson's model (unpool)",
               1.60041473222815485802618083746538, 0.10510967736658842, 0.7237048123193823),
    Experiment("transfer", "transfer.yaml", 10, 7, "Transfer learning (ResNet34)",
               1.5542771544145502, 0.11469616238837657, 0.7439139420571534),
    Experiment("unet", "unet.yaml", 11, 8, "U-Net",
               1.8510422473368437, 0.0866359447169563, 0.7346816464610721),
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
# keep the paper's ordering (13 < 30 < 50) as far as the budget allows; uncontended seconds per epoch
# on 2 cores are about 3 (fcn), 5 (unet), 8 (transfer) and 12 (unpool).
QUICK_PER_EXPERIMENT: dict[str, dict[str, Any]] = {
    "augment": dict(epochs=8),
    "weighted": dict(epochs=8),
    "unpool": dict(epochs=6, max_train_images=240),  # full-resolution stages: ~5x the baseline's cost
    "transfer": dict(epochs=8),
    "unet": dict(epochs=10, model_kwargs={"base_channels": 16}),  # 1.9 M instead of 31 M parameters
}

MANIFEST = "reproduce.json"
# Config keys that may differ between the run found on disk and the one we would start, without
# making the old run a different experiment.
_RUNTIME_KEYS = frozenset({"out", "device", "num_workers", "tensorboard"})


# ----------------------------------------------------------------------------- experiments and configs


def config_dir() -> Path:
    """The folder holding the experiment YAMLs: ``$VOCSEG_CONFIG_DIR``, else ``configs/`` of the source
    checkout (beside ``src/``), else the copy a wheel installs as ``vocseg/configs``, else ``./configs``."""
    candidates = []
    if os.environ.get("VOCSEG_CONFIG_DIR"):
        candidates.append(Path(os.environ["VOCSEG_CONFIG_DIR"]).expanduser())
    candidates += [Path(__file__).resolve().parents[2] / "configs", Path(__file__).resolve().parent / "configs",
                   Path.cwd() / "configs"]
    for path in candidates:
        if (path / EXPERIMENTS[0].config).is_file():
            return path
    raise VocsegError(
        "cannot find the experiment configs (configs/baseline.yaml ...); looked in "
        + ", ".join(str(p) for p in candidates)
        + ". Run from the vocseg source checkout or set VOCSEG_CONFIG_DIR to its configs/ folder."
    )


def get_experiment(name: str) -> Experiment:
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
        raise VocsegError(
            f"unknown experiment(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(valid)}"
        )
    return [e for e in EXPERIMENTS if e.name in set(only)]


def imagenet_weights_cached(encoder: str) -> bool:
    """Whether torchvision's ImageNet weights for ``encoder`` are in torch.hub's cache (no network)."""
    from .models import transfer

    try:
        path = Path(transfer.weights_cache_dir()) / transfer.weights_file_name(encoder)
    except VocsegError:
        return False
    return path.is_file()


def quick_overrides(exp: Experiment) -> dict[str, Any]:
    """QUICK with the experiment's own additions; ``model_kwargs`` merged."""
    over = copy.deepcopy(QUICK)
    for key, value in copy.deepcopy(QUICK_PER_EXPERIMENT.get(exp.name, {})).items():
        if key == "model_kwargs":
            over["model_kwargs"] = {**over.get("model_kwargs", {}), **value}
        else:
            over[key] = value
    return over


def experiment_config(
    exp: Experiment,
    out: str | Path,
    data_root: str | Path | None = None,
    quick: bool = False,
    device: str = "auto",
) -> tuple[Config, dict[str, Any], list[str]]:
    """The config an experiment trains with: its YAML, ``data_root``/``device``, the quick overrides, and
    ``out = out/runs/<name>``. Returns ``(config, overrides applied by quick, notes for the report)``."""
    cfg = load_config(config_dir() / exp.config)
    data = cfg.to_dict()
    notes: list[str] = []
    applied: dict[str, Any] = {}
    data["data_root"] = str(Path(data_root).expanduser()) if data_root is not None else None
    data["device"] = device
    data["out"] = str(Path(out) / "runs" / exp.name)
    if quick:
        for key, value in quick_overrides(exp).items():
            if key == "epochs":
                value = min(int(value), cfg.epochs)
            if key == "model_kwargs":
                value = {**data["model_kwargs"], **value}
            if data.get(key) != value:
                applied[key] = value
            data[key] = value
        kwargs = data["model_kwargs"]
        if data["model"] == "transfer" and kwargs.get("pretrained", True) and kwargs.get("weights") is None:
            encoder = kwargs.get("encoder", "resnet34")
            if imagenet_weights_cached(encoder):
                notes.append(f"ImageNet {encoder} weights found in the torch.hub cache: pretrained encoder, as in the paper.")
            else:
                data["model_kwargs"] = {**kwargs, "pretrained": False}
                applied["model_kwargs"] = data["model_kwargs"]
                notes.append(
                    f"ImageNet {encoder} weights are not cached on this machine (quick runs never download): "
                    f"the encoder was trained from scratch (pretrained=false), unlike the paper."
                )
    return config_from_dict(data, str(config_dir() / exp.config)), applied, notes


# ----------------------------------------------------------------------------- run folders and manifest


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _RUNTIME_KEYS}


def check_existing_run(run_dir: Path, cfg: Config) -> None:
    """Refuse to skip or resume a run that was trained with another recipe (e.g. a --quick run in a
    folder now asked for the full study): its numbers would be reported under the wrong experiment."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return
    new = cfg.to_dict()
    diff = sorted(k for k in set(_comparable(old)) | set(_comparable(new)) if old.get(k) != new.get(k))
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff[:6])
        raise VocsegError(
            f"{run_dir} holds a run with a different config ({details}); "
            "use --overwrite to retrain it or --out to choose another folder"
        )


def run_action(run_dir: Path, overwrite: bool) -> str:
    """What to do with an experiment's run folder: ``skip`` (done), ``resume``, ``train`` or ``restart``
    (replace leftovers of a run that died before its first epoch ended, or everything with --overwrite)."""
    from .train import RUN_FILES

    if overwrite:
        return "restart"
    if (run_dir / "metrics.json").is_file():
        return "skip"
    if (run_dir / "last.pt").is_file():
        return "resume"
    if any((run_dir / name).exists() for name in RUN_FILES):
        return "restart"
    return "train"


def load_manifest(out: Path) -> dict[str, Any]:
    path = out / MANIFEST
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data.setdefault("experiments", {})
                return data
        except ValueError:
            pass
    return {"experiments": {}}


def save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(json.dumps(manifest, indent=2, default=str).encode(), out / MANIFEST)


# ----------------------------------------------------------------------------- the study


@dataclass
class ReproduceResult:
    out: Path
    report_md: Path
    report_html: Path
    status: dict[str, str] = field(default_factory=dict)  # experiment -> trained/resumed/skipped/failed


def reproduce(
    out: str | Path,
    data_root: str | Path | None = None,
    quick: bool = False,
    only: Sequence[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """Train every selected experiment into ``out/runs/<name>`` (skipping finished ones, resuming
    interrupted ones), then write ``out/report.md`` and ``out/report.html``.

    An experiment that fails with a :class:`VocsegError` (e.g. the transfer model's ImageNet weights are
    missing outside ``quick``) does not stop the others: it is reported, and after the report is written
    this raises a ``VocsegError`` naming the failures.
    """
    from .engine import resolve_device
    from .report import write_report
    from .train import train

    out = Path(out).expanduser()
    selected = select_experiments(only)
    resolved_device = str(resolve_device(device))
    plans = []
    for exp in selected:
        cfg, applied, notes = experiment_config(exp, out, data_root, quick, device)
        action = run_action(Path(cfg.out), overwrite)
        if action in ("skip", "resume"):
            check_existing_run(Path(cfg.out), cfg)  # all checked before anything trains
        plans.append((exp, cfg, applied, notes, action))

    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    manifest.update(
        quick=quick,
        quick_overrides=({"all": QUICK, "per_experiment": QUICK_PER_EXPERIMENT} if quick else None),
        data_root=str(data_root) if data_root is not None else None,
        device=resolved_device,
        python=platform.python_version(),
        updated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    save_manifest(out, manifest)

    if not quick:
        # Say early what will fail late: the transfer run needs ImageNet weights it may have to download.
        for exp, cfg, _, _, action in plans:
            kw = cfg.model_kwargs
            if (cfg.model == "transfer" and action not in ("skip",) and kw.get("pretrained", True)
                    and kw.get("weights") is None and not imagenet_weights_cached(kw.get("encoder", "resnet34"))):
                log(f"note: {exp.name} needs ImageNet {kw.get('encoder', 'resnet34')} weights that are not cached; "
                    "it will try to download them when its turn comes")

    n = len(plans)
    status: dict[str, str] = {}
    failures: list[tuple[str, str]] = []
    verbs = {"skip": "already done, skipping", "resume": "resuming", "train": "training", "restart": "training (replacing the old run)"}
    for i, (exp, cfg, applied, notes, action) in enumerate(plans, 1):
        run_dir = Path(cfg.out)
        log(f"[{i}/{n}] {exp.name} (Table {exp.table}: {exp.title}, {cfg.model}): {verbs[action]} -> {run_dir}")
        for note in notes:
            log(f"[{i}/{n}] {exp.name}: {note}")
        previous = manifest["experiments"].get(exp.name, {})
        entry: dict[str, Any] = {
            "config": exp.config,
            "quick": quick,
            "quick_overrides": applied if quick else {},
            "notes": notes,
            "device": resolved_device,
            "error": None,
        }
        t0 = time.perf_counter()
        result = None
        try:
            if action == "skip":
                entry = {**previous, "status": "skipped", "error": None} if previous else {**entry, "status": "skipped"}
            elif action == "resume":
                result = train(Config(out=str(run_dir)), resume=True, progress=progress, log=log, device=cfg.device)
                entry["status"] = "resumed"
            else:
                result = train(cfg, overwrite=action == "restart", progress=progress, log=log)
                entry["status"] = "trained"
        except VocsegError as e:
            entry.update(status="failed", error=str(e))
            failures.append((exp.name, str(e)))
            log(f"[{i}/{n}] {exp.name} FAILED: {e}")
        if action != "skip":
            entry["wall_seconds"] = round(time.perf_counter() - t0, 2)
        status[exp.name] = entry["status"]
        manifest["experiments"][exp.name] = entry
        save_manifest(out, manifest)
        if result is not None:
            m = result.metrics
            log(
                f"[{i}/{n}] {exp.name}: {m['split']} mIoU {m['mean_iou'] or 0:.4f}  pixel acc "
                f"{m['pixel_accuracy'] or 0:.4f}  loss {m['loss']:.4f}  ({entry['wall_seconds']:.0f}s)"
            )

    log("writing the report ...")
    md, html = write_report(out, device=resolved_device)
    log(f"report: {md}\n        {html}")
    if failures:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in failures)
        raise VocsegError(
            f"{len(failures)} of {n} experiment(s) failed (the others ran; see {md}):\n{lines}"
        )
    return ReproduceResult(out, md, html, status)
