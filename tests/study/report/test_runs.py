"""vocseg.study.report.runs: runs grouped into seeds of one recipe, each group's status and mean ± std."""

from __future__ import annotations

import numpy as np
import pytest

from vocseg.rundir import RunDir
from vocseg.study.report import ReportRun, group_runs


def finished(path, miou: float, per_class: dict) -> RunDir:
    """A run folder with only its metrics: what makes a run done."""
    run = RunDir(path)
    run.prepare(resume=False, overwrite=False)
    run.write_metrics({"mean_iou": miou, "per_class_iou": per_class})
    return run


def test_runs_group_by_their_group_or_label_in_order_of_first_appearance(tmp_path):
    runs = [
        ReportRun("a-s0", RunDir(tmp_path / "1"), group="a"),
        ReportRun("b", RunDir(tmp_path / "2")),
        ReportRun("a-s1", RunDir(tmp_path / "3"), group="a"),
        ReportRun("c", RunDir(tmp_path / "4"), group="b"),  # a group named like another run's label
    ]
    groups = group_runs(runs)
    assert [(g.name, [r.label for r in g.runs]) for g in groups] == [("a", ["a-s0", "a-s1"]), ("b", ["b", "c"])]


def test_a_group_is_the_mean_and_sample_std_of_its_finished_seeds(tmp_path):
    values = [0.30, 0.36, 0.33]
    runs = [
        ReportRun(f"s{i}", finished(tmp_path / f"s{i}", v, {"cat": v / 2, "dog": None if i else 0.9}), group="g")
        for i, v in enumerate(values)
    ]
    runs.append(ReportRun("s3", RunDir(tmp_path / "s3"), group="g", entry={"status": "failed"}))
    (group,) = group_runs(runs)
    got = group.metric("mean_iou")
    assert got.n == 3
    assert got.mean == pytest.approx(np.mean(values)) and got.std == pytest.approx(np.std(values, ddof=1))
    assert group.per_class_iou("cat") == pytest.approx(np.mean(values) / 2)
    assert group.per_class_iou("dog") == pytest.approx(0.9)  # undefined in two runs: left out, not zero
    assert group.status == "3/4 done, 1 failed"
    assert group.first_done is runs[0]


def test_a_runs_status_and_its_file_name(tmp_path):
    last = RunDir(tmp_path / "cut")
    last.prepare(resume=False, overwrite=False)
    last.last_path.write_bytes(b"")  # a checkpoint and no metrics: interrupted
    assert ReportRun("x", last).status == "interrupted"
    assert ReportRun("x", RunDir(tmp_path / "never")).status == "not run"
    assert ReportRun("x", RunDir(tmp_path / "never"), entry={"status": "failed"}).status == "failed"
    assert ReportRun("U-Net (ours) / s0", RunDir(tmp_path / "never")).file_stem == "U-Net_ours_s0"
