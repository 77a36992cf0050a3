"""What a report is built from: :class:`ReportRun` (one run folder, labelled, with the paper's
experiment when it is one), :class:`RunGroup` (the seeds of one recipe) and :class:`ReportContext`
(everything the sections read)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ...rundir import DONE, INTERRUPTED, RunDir
from ..experiments import Experiment
from ..significance import MeanStd, PerImage, mean_std
from .data import DataInfo

__all__ = ["ReportContext", "ReportRun", "RunGroup", "group_runs"]


@dataclass
class ReportRun:
    """One run of a report.

    ``group``: runs sharing it are seeds of one recipe, shown as mean ± std (None: the run is its own
    group, named by its label). ``entry``: how the run was made (``reproduce.json``'s record: status,
    error, notes, device), empty when unknown."""

    label: str
    run: RunDir
    experiment: Experiment | None = None
    group: str | None = None
    entry: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def cfg(self) -> dict[str, Any] | None:
        return self.run.read_config()

    @cached_property
    def metrics(self) -> dict[str, Any] | None:
        return self.run.read_metrics()

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        return self.run.read_history()

    @cached_property
    def per_image(self) -> PerImage | None:
        data = self.run.read_per_image()
        return PerImage.from_arrays(data, str(self.run.path)) if data is not None else None

    @property
    def done(self) -> bool:
        return self.run.status == DONE and self.metrics is not None

    @property
    def status(self) -> str:
        """``done``, ``failed`` (its entry says so and it has no results), ``interrupted`` or ``not run``."""
        if self.done:
            return "done"
        if self.entry.get("status") == "failed":
            return "failed"
        return "interrupted" if self.run.status == INTERRUPTED else "not run"

    @property
    def file_stem(self) -> str:
        """The label as a safe file-name part (figures are named after runs)."""
        return re.sub(r"[^\w.-]+", "_", self.label)


@dataclass
class RunGroup:
    """The runs of one recipe (its seeds); the report's rows."""

    name: str
    runs: list[ReportRun]

    @property
    def experiment(self) -> Experiment | None:
        return self.runs[0].experiment

    @property
    def done(self) -> list[ReportRun]:
        return [r for r in self.runs if r.done]

    @property
    def first_done(self) -> ReportRun | None:
        """The group's representative (its first seed that finished): its masks and confusion are shown."""
        return next(iter(self.done), None)

    @property
    def model(self) -> str:
        cfg = next((r.cfg for r in self.runs if r.cfg), None) or {}
        return str(cfg.get("model", ""))

    @property
    def status(self) -> str:
        if len(self.runs) == 1:
            return self.runs[0].status
        n_done, n_failed = len(self.done), sum(r.status == "failed" for r in self.runs)
        if n_done == len(self.runs):
            return "done"
        return f"{n_done}/{len(self.runs)} done" + (f", {n_failed} failed" if n_failed else "")

    def metric(self, key: str) -> MeanStd:
        """Mean ± std of a metrics.json value over the finished runs."""
        return mean_std([r.metrics.get(key) for r in self.done])

    def per_class_iou(self, name: str) -> float | None:
        """Mean over the finished runs of one class's IoU (runs where it is undefined left out)."""
        return mean_std([(r.metrics.get("per_class_iou") or {}).get(name) for r in self.done]).mean


def group_runs(runs: Sequence[ReportRun]) -> list[RunGroup]:
    """Runs grouped by ``group`` (else their label), in order of first appearance."""
    groups: dict[str, RunGroup] = {}
    for run in runs:
        key = run.group or run.label
        groups.setdefault(key, RunGroup(key, [])).runs.append(run)
    return list(groups.values())


@dataclass
class ReportContext:
    """Everything the report's sections read."""

    out: Path
    title: str
    intro: str
    runs: list[ReportRun]
    groups: list[RunGroup]
    info: DataInfo | None
    device: str
    notes: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] | None = None
    quick_overrides: Mapping[str, Any] | None = None

    FIGURES = "figures"

    @property
    def paper(self) -> bool:
        """Whether the report is about the paper's experiments (paper columns and notes shown)."""
        return any(r.experiment is not None for r in self.runs)

    @property
    def done(self) -> list[ReportRun]:
        return [r for r in self.runs if r.done]

    @property
    def done_groups(self) -> list[RunGroup]:
        return [g for g in self.groups if g.done]

    @property
    def multi_seed(self) -> bool:
        return any(len(g.runs) > 1 for g in self.groups)

    @property
    def split(self) -> str:
        return self.info.test_split if self.info is not None else "val"

    def figure(self, name: str) -> tuple[str, Path]:
        """``(path relative to the report, absolute path)`` of a figure file."""
        rel = f"{self.FIGURES}/{name}"
        return rel, self.out / rel
