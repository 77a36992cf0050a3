"""vocseg.study.report.sections: the results table's rows (seed groups as mean ± std, the all-background row
computed by hand) and the statistics section's pairs, on run folders holding only their metrics."""

from __future__ import annotations

import numpy as np

from vocseg.rundir import RunDir
from vocseg.study.report import DataInfo, Doc, ReportContext, ReportRun, group_runs
from vocseg.study.report.sections import results, statistics

METRICS = ("loss", "ce_loss", "mean_iou", "pixel_accuracy", "mean_accuracy", "fw_iou")


def run_with(path, value: float, seed: int) -> RunDir:
    run = RunDir(path)
    run.prepare(resume=False, overwrite=False)
    run.save_config({"model": "unet", "seed": seed})
    run.write_metrics(dict.fromkeys(METRICS, value))
    return run


def context(tmp_path) -> ReportContext:
    runs = [
        ReportRun("a-0", run_with(tmp_path / "a0", 0.40, 0), group="a"),
        ReportRun("a-1", run_with(tmp_path / "a1", 0.50, 1), group="a"),
        ReportRun("b", run_with(tmp_path / "b", 0.30, 0)),
        ReportRun("c", RunDir(tmp_path / "c"), entry={"status": "failed"}),
    ]
    counts = np.array([60, 30, 0, 10] + [0] * 17)  # background 60% of 100 labelled pixels, 3 classes present
    info = DataInfo(tmp_path, False, None, {"val": 4}, {"test": 4}, "val", ["x"], ["c"] * 21, counts)
    return ReportContext(tmp_path, "t", "", runs, group_runs(runs), info, "cpu")


def table_rows(md: str) -> list[list[str]]:
    rows = [line.strip("|").split(" | ") for line in md.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows]


def test_results_rows_are_groups_then_the_all_background_predictor(tmp_path):
    doc = Doc()
    results(doc, context(tmp_path))
    header, *rows = table_rows(doc.markdown())
    assert header == ["run", "model", "loss", "CE", "mIoU", "pixel acc", "mean acc", "fw IoU", "seeds", "status"]
    mean_std = f"0.4500 ± {np.std([0.4, 0.5], ddof=1):.4f}"
    assert rows[0] == ["a", "unet", *[mean_std] * 6, "2", "done"]
    assert rows[1] == ["b", "unet", *["0.3000"] * 6, "1", "done"]
    assert rows[2] == ["c", "", *["–"] * 6, "0", "failed"]
    # Class 0 everywhere: pixel acc 0.6, IoU 0.6 for background and 0 for the other two present classes.
    assert rows[3] == [
        "all-background predictor",
        "–",
        "–",
        "–",
        "0.2000",
        "0.6000",
        "0.3333",
        "0.3600",
        "–",
        "computed on val",
    ]


def test_statistics_pairs_the_best_group_with_the_others_and_says_what_it_cannot_test(tmp_path):
    doc = Doc()
    statistics(doc, context(tmp_path))
    md = doc.markdown()
    assert "| a | 2/2 | 0, 1 |" in md and "| c | 0/1 | – |" in md
    # The best (a) against b only (c never finished); no per-image results: said, not guessed.
    assert "a vs b: not tested; a-0, a-1, b lack `per_image.npz`" in md
    assert "vs c" not in md
