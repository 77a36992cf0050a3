"""Writing a report: from a list of run folders to ``OUT/report.md`` (figures under ``OUT/figures/``)
and a self-contained ``OUT/report.html``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...runtime.files import output_dir
from .data import data_info
from .render import Doc
from .runs import ReportContext, ReportRun, group_runs
from .sections import SECTIONS

__all__ = ["REPORT_HTML", "REPORT_MD", "write_report"]

REPORT_MD, REPORT_HTML = "report.md", "report.html"


def _reference(runs: Sequence[ReportRun]) -> ReportRun | None:
    """The run whose data the report describes: the first finished one with a config, else any with one."""
    return next((r for r in runs if r.done and r.cfg is not None), None) or next((r for r in runs if r.cfg), None)


def write_report(
    out: str | Path,
    runs: Sequence[ReportRun],
    *,
    title: str,
    intro: str,
    device: str = "cpu",
    notes: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] | None = None,
    quick_overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the report on ``runs`` into ``out``; return ``(report.md, report.html)``.

    ``intro`` opens the report (how it was made); ``notes`` are warnings shown under it. Runs sharing a
    ``group`` are the seeds of one recipe. ``pairs`` (group names) are the models whose difference in mIoU
    is tested; by default each paper experiment against the one it builds on, else the best against
    every other. ``quick_overrides`` (``{"all": ..., "per_experiment": ...}``) are listed with the recipes.
    ``device`` runs the example predictions."""
    out = output_dir(out, "report folder")
    runs = list(runs)
    ref = _reference(runs)
    ctx = ReportContext(
        out=out,
        title=title,
        intro=intro,
        runs=runs,
        groups=group_runs(runs),
        info=data_info(ref.cfg, str(ref.run.config_path)) if ref is not None else None,
        device=device,
        notes=list(notes),
        pairs=list(pairs) if pairs is not None else None,
        quick_overrides=quick_overrides,
    )
    output_dir(out / ReportContext.FIGURES, "report folder")
    doc = Doc()
    for section in SECTIONS:
        section(doc, ctx)
    md_path, html_path = out / REPORT_MD, out / REPORT_HTML
    md_path.write_text(doc.markdown(), encoding="utf-8")
    html_path.write_text(doc.html(out, title), encoding="utf-8")
    return md_path, html_path
