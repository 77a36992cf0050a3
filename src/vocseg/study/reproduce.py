"""Rerun the paper's study (Section 4, Tables 5-11) in one command and write a report.

    vocseg reproduce --out DIR [--data-root VOC] [--quick] [--only NAME ...] [--seeds N] [--device D] [--overwrite]

The experiments are data (:mod:`vocseg.experiments`); this module only runs them: it plans every run,
records what happened in the manifest, trains through :func:`vocseg.training.train.train`, and hands the run
folders to :func:`vocseg.study.report.write_report`. Output::

    DIR/runs/<name>/         the experiment's run folder (see rundir.py); with --seeds N also
    DIR/runs/<name>-seed<k>/ for k = 1 .. N-1, trained with the YAML's seed + k
    DIR/reproduce.json       how each run was made (quick overrides, notes) and what happened
    DIR/report.md, DIR/report.html, DIR/figures/   the report

Reruns are cheap: a finished run folder is skipped, an interrupted one resumed, leftovers of a run that
died before its first epoch ended are replaced; ``--overwrite`` retrains the selected experiments.

``--quick`` is a CPU smoke version of the whole study (all seven experiments in about ten minutes on
two cores): the built-in synthetic dataset, few epochs, small crops, capped image counts, a slimmer
U-Net and, when pretrained weights are not cached, models trained from scratch. Every override is
recorded in ``reproduce.json`` and in the report.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import VocsegError
from ..rundir import DONE, EMPTY, INTERRUPTED, RunDir
from ..runtime.device import resolve_device
from ..runtime.files import atomic_write_bytes, output_dir
from ..training.train import train
from . import experiments
from .experiments import (
    EXPERIMENTS,
    Experiment,
    experiment_config,
    pretrained_weights_cached,
    recipe,
    run_name,
    select_experiments,
)
from .report import ReportRun, write_report

__all__ = ["MANIFEST", "ReproduceResult", "load_manifest", "reproduce", "study_runs", "write_study_report"]

MANIFEST = "reproduce.json"
_VERBS = {
    "skip": "already done, skipping",
    "resume": "resuming",
    "train": "training",
    "restart": "training (replacing the old run)",
}


@dataclass
class Plan:
    """One run to make: an experiment's ``seed_index``-th seed, and what to do with its folder."""

    exp: Experiment
    seed_index: int
    cfg: Config
    applied: dict[str, Any]  # quick overrides
    notes: list[str]
    action: str  # skip / resume / train / restart

    @property
    def name(self) -> str:
        return run_name(self.exp, self.seed_index)


@dataclass
class ReproduceResult:
    out: Path
    report_md: Path
    report_html: Path
    status: dict[str, str] = field(default_factory=dict)  # run name -> trained/resumed/skipped/failed


# ----------------------------------------------------------------------------- planning


def check_existing_run(run: RunDir, cfg: Config) -> None:
    """Refuse to skip or resume a run that was trained with another recipe (e.g. a --quick run in a
    folder now asked for the full study): its numbers would be reported under the wrong experiment."""
    try:
        old = run.read_config()
    except VocsegError:
        return  # a corrupt config: training itself will say so
    if old is None:
        return
    old, new = recipe(old), recipe(cfg.to_dict())
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in diff[:6])
        raise VocsegError(
            f"{run.path} holds a run with a different config ({details}); "
            "use --overwrite to retrain it or --out to choose another folder"
        )


def run_action(run: RunDir, overwrite: bool) -> str:
    """What to do with a run folder: ``skip`` (done), ``resume``, ``train`` or ``restart`` (replace
    leftovers of a run that died before its first epoch ended, or everything with --overwrite)."""
    if overwrite:
        return "restart"
    return {DONE: "skip", INTERRUPTED: "resume", EMPTY: "train"}.get(run.status, "restart")


def plan_runs(
    out: Path,
    experiments: Sequence[Experiment],
    data_root: str | Path | None,
    quick: bool,
    device: str,
    overwrite: bool,
    seeds: int,
) -> list[Plan]:
    """Every run, seed by seed (a whole study of the first seed comes first); folders that would be
    skipped or resumed are checked against the recipe before anything trains."""
    plans = []
    for k in range(seeds):
        for exp in experiments:
            cfg, applied, notes = experiment_config(exp, out, data_root, quick, device, seed_index=k)
            action = run_action(RunDir(cfg.out), overwrite)
            if action in ("skip", "resume"):
                check_existing_run(RunDir(cfg.out), cfg)
            plans.append(Plan(exp, k, cfg, applied, notes, action))
    return plans


def _warn_downloads(plans: Sequence[Plan], log: Callable[[str], None]) -> None:
    """Say early what may fail late: runs whose pretrained weights would have to be downloaded."""
    for p in plans:
        if p.action != "skip" and pretrained_weights_cached(p.cfg.model, p.cfg.model_kwargs) is False:
            log(
                f"note: {p.name} needs pretrained weights for model {p.cfg.model!r} that are not cached; "
                "it will try to download them when its turn comes"
            )


# ----------------------------------------------------------------------------- the manifest


def load_manifest(out: Path) -> dict[str, Any]:
    """``out/reproduce.json``, or an empty manifest when it is missing or unreadable."""
    path = Path(out) / MANIFEST
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data.setdefault("experiments", {})
                return data
        except ValueError:
            pass  # start a new one: the run folders themselves are the record that matters
    return {"experiments": {}}


def save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(json.dumps(manifest, indent=2, default=str).encode(), Path(out) / MANIFEST)


def _quick_overrides() -> dict[str, Any]:
    return {"all": experiments.QUICK, "per_experiment": experiments.QUICK_PER_EXPERIMENT}


def start_manifest(out: Path, quick: bool, data_root: str | Path | None, device: str, seeds: int) -> dict[str, Any]:
    manifest = load_manifest(out)
    manifest.update(
        quick=quick,
        quick_overrides=_quick_overrides() if quick else None,
        data_root=str(data_root) if data_root is not None else None,
        device=device,
        seeds=seeds,
        python=platform.python_version(),
        updated=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    save_manifest(out, manifest)
    return manifest


# ----------------------------------------------------------------------------- running


def _train_plan(plan: Plan, progress: bool, log: Callable[[str], None]) -> tuple[str, Any]:
    if plan.action == "skip":
        return "skipped", None
    if plan.action == "resume":
        return "resumed", train(
            Config(out=plan.cfg.out), resume=True, progress=progress, log=log, device=plan.cfg.device
        )
    return "trained", train(plan.cfg, overwrite=plan.action == "restart", progress=progress, log=log)


def run_plan(
    plan: Plan, tag: str, previous: dict[str, Any], device: str, quick: bool, progress: bool, log: Callable[[str], None]
) -> dict[str, Any]:
    """Make one run; return its manifest entry. A VocsegError fails this run only (recorded in the entry)."""
    exp = plan.exp
    log(
        f"{tag} {plan.name} (Table {exp.table}: {exp.title}, {plan.cfg.model}, seed {plan.cfg.seed}): "
        f"{_VERBS[plan.action]} -> {plan.cfg.out}"
    )
    for note in plan.notes:
        log(f"{tag} {plan.name}: {note}")
    entry: dict[str, Any] = {
        "experiment": exp.name,
        "seed": plan.cfg.seed,
        "config": exp.config,
        "quick": quick,
        "quick_overrides": plan.applied if quick else {},
        "notes": plan.notes,
        "device": device,
        "error": None,
    }
    t0 = time.perf_counter()
    try:
        status, result = _train_plan(plan, progress, log)
    except VocsegError as e:
        log(f"{tag} {plan.name} FAILED: {e}")
        return {**entry, "status": "failed", "error": str(e), "wall_seconds": round(time.perf_counter() - t0, 2)}
    if status == "skipped":
        return {**previous, "status": "skipped", "error": None} if previous else {**entry, "status": "skipped"}
    entry.update(status=status, wall_seconds=round(time.perf_counter() - t0, 2))
    m = result.metrics
    log(
        f"{tag} {plan.name}: {m['split']} mIoU {m['mean_iou'] or 0:.4f}  pixel acc {m['pixel_accuracy'] or 0:.4f}  "
        f"loss {m['loss']:.4f}  ({entry['wall_seconds']:.0f}s)"
    )
    return entry


# ----------------------------------------------------------------------------- the report


def _seed_indices(out: Path, exp: Experiment, seeds: int) -> list[int]:
    """The seeds to report: the ones asked for, and further finished ones found on disk."""
    k = seeds
    while RunDir(out / "runs" / run_name(exp, k)).status == DONE:
        k += 1
    return list(range(k))


def study_runs(out: str | Path, seeds: int = 1, manifest: dict[str, Any] | None = None) -> list[ReportRun]:
    """The report's runs: every experiment of the paper (run or not), each with its seeds as one group."""
    out = Path(out)
    entries = (manifest if manifest is not None else load_manifest(out))["experiments"]
    return [
        ReportRun(
            run_name(exp, k), RunDir(out / "runs" / run_name(exp, k)), exp, exp.name, entries.get(run_name(exp, k), {})
        )
        for exp in EXPERIMENTS
        for k in _seed_indices(out, exp, seeds)
    ]


def write_study_report(out: str | Path, device: str = "cpu", seeds: int = 1) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` for the study in ``out``."""
    out = Path(out)
    manifest = load_manifest(out)
    quick = bool(manifest.get("quick"))
    intro = f"Generated by `vocseg reproduce` into `{out}`" + (
        " with `--quick` (a CPU smoke run: few epochs, small crops, capped image counts)." if quick else "."
    )
    notes = []
    if quick:
        notes.append(
            "Quick mode: every number below comes from a few epochs on a handful of small images; the "
            "recipes are the paper's, shortened (see *Recipes*). Do not read them as the study's results."
        )
    return write_report(
        out,
        study_runs(out, seeds, manifest),
        device=str(manifest.get("device") or device),
        intro=intro,
        notes=notes,
        title="Reproduction of Isayama et al., FCNs for semantic segmentation on PASCAL VOC 2012 (Tables 5–11)",
        quick_overrides=(manifest.get("quick_overrides") or {}) if quick else None,
    )


# ----------------------------------------------------------------------------- the study


def reproduce(
    out: str | Path,
    data_root: str | Path | None = None,
    quick: bool = False,
    only: Sequence[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    seeds: int = 1,
) -> ReproduceResult:
    """Train every selected experiment ``seeds`` times (seeds ``cfg.seed + k``) into ``out/runs/<name>``
    and ``out/runs/<name>-seed<k>``, skipping finished runs and resuming interrupted ones; then write
    ``out/report.md`` and ``out/report.html`` (seeds as mean ± std).

    A run that fails with a :class:`VocsegError` (e.g. pretrained weights missing outside ``quick``)
    does not stop the others: it is reported, and after the report is written this raises a
    ``VocsegError`` naming the failures."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise VocsegError(f"seeds must be an integer >= 1, got {seeds!r}")
    out = output_dir(out, "study folder", create=False)  # created once the experiments are known good
    plans = plan_runs(out, select_experiments(only), data_root, quick, device, overwrite, seeds)
    resolved = str(resolve_device(device))
    output_dir(out, "study folder")
    manifest = start_manifest(out, quick, data_root, resolved, seeds)
    if not quick:
        _warn_downloads(plans, log)
    status: dict[str, str] = {}
    failures: list[tuple[str, str]] = []
    for i, plan in enumerate(plans, 1):
        entry = run_plan(
            plan, f"[{i}/{len(plans)}]", manifest["experiments"].get(plan.name, {}), resolved, quick, progress, log
        )
        status[plan.name] = entry["status"]
        if entry["status"] == "failed":
            failures.append((plan.name, entry["error"]))
        manifest["experiments"][plan.name] = entry
        save_manifest(out, manifest)
    log("writing the report ...")
    md, html = write_study_report(out, device=resolved, seeds=seeds)
    log(f"report: {md}\n        {html}")
    if failures:
        lines = "\n".join(f"  {name}: {msg}" for name, msg in failures)
        raise VocsegError(f"{len(failures)} of {len(plans)} run(s) failed (the others ran; see {md}):\n{lines}")
    return ReproduceResult(out, md, html, status)
