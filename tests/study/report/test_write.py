"""vocseg.study.report.write: the whole report built from run folders, self-contained HTML, the paper's rows
(the modules it calls have their own tests beside this file).

The fake run folders and the HTML reader it shares with test_compare and test_reproduce are in helpers.py.
"""

from __future__ import annotations

from helpers import read_report, write_fake_run
from vocseg.rundir import RunDir
from vocseg.study.experiments import EXPERIMENTS
from vocseg.study.report import ReportRun, write_report

# ----------------------------------------------------------------------------- the report from run folders


def test_report_of_the_papers_experiments_from_run_folders(tmp_path, tiny_voc, vocseg_cache):
    """Four experiments finished (one with two seeds), three not run: every experiment has its row with
    its paper name, the HTML is self-contained, and the seeds are one row, mean ± std."""
    runs = []
    for k, exp in enumerate(EXPERIMENTS):
        path = tmp_path / "runs" / exp.name
        if k < 4:
            write_fake_run(path, tiny_voc, error_rate=0.4 - 0.1 * k)
        runs.append(ReportRun(exp.name, RunDir(path), exp, exp.name))
    write_fake_run(tmp_path / "runs" / "weighted-seed1", tiny_voc, error_rate=0.15, seed=1)
    runs.append(ReportRun("weighted-seed1", RunDir(tmp_path / "runs" / "weighted-seed1"), EXPERIMENTS[3], "weighted"))
    md, html = write_report(tmp_path, runs, title="Study", intro="Made by a test.")
    page = read_report(md, html)

    table = {row[0]: row for row in page.rows if row and row[-1] in ("done", "not run")}
    for exp in EXPERIMENTS:
        assert table[exp.name][1] == exp.title and table[exp.name][2] == f"Table {exp.table}"
    assert [table[e.name][-1] for e in EXPERIMENTS] == ["done"] * 4 + ["not run"] * 3
    assert "±" in table["weighted"][6] and "±" not in table["augment"][6]  # mIoU: mean ± std over 2 seeds
    assert table["weighted"][-2] == "2" and table["baseline"][-2] == "1"  # the seeds column
    assert any(row[0] == "all-background predictor" for row in page.rows)
    # curves of 5 runs, the comparison figure, per-class bars, the confusion matrix
    assert len(page.imgs) == 5 + 3
    assert any("every model" in c for c in page.captions) and any("confusion matrix" in c for c in page.captions)
    text = page.all_text
    assert "Synthetic numbers are not VOC numbers" in text and "averaged per batch" in text
    assert "weighted beats augment by" in text or "augment beats weighted by" in text  # builds_on pairs
    assert "4 test images; seeds: 2 of weighted, 1 of augment." in text


def test_report_without_paper_experiments_has_no_paper_columns(tmp_path, tiny_voc, vocseg_cache):
    write_fake_run(tmp_path / "a", tiny_voc, error_rate=0.1)
    runs = [ReportRun("a", RunDir(tmp_path / "a")), ReportRun("never", RunDir(tmp_path / "never"))]
    md, html = write_report(tmp_path / "report", runs, title="Two runs", intro="Test.", device="cpu")
    page = read_report(md, html)
    header = next(row for row in page.rows if row and row[0] == "run")
    assert "paper IoU" not in header and header[-1] == "status"
    results = page.rows[page.rows.index(header) + 1 :][:3]  # the results table comes first
    assert [(row[0], row[-1]) for row in results] == [
        ("a", "done"),
        ("never", "not run"),
        ("all-background predictor", "computed on val"),
    ]
    assert "Paper:" not in page.all_text and "Tables 5–11" not in page.all_text
    assert "best checkpoint by validation loss" in page.all_text and "test-time augmentation" not in page.all_text


def test_report_says_how_its_runs_were_scored(tmp_path, tiny_voc, vocseg_cache):
    """The results' intro names what picked each checkpoint and the final evaluation's test-time augmentation,
    read from the runs themselves."""
    run = write_fake_run(tmp_path / "a", tiny_voc, error_rate=0.1, monitor="val_miou", tta="multiscale")
    run.write_metrics({**run.read_metrics(), "tta": "multiscale"})
    md, html = write_report(tmp_path / "report", [ReportRun("a", run)], title="One run", intro="Test.", device="cpu")
    text = read_report(md, html).all_text
    assert "native resolution, test-time augmentation: multiscale" in text
    assert "best checkpoint by validation mIoU" in text
    plain = write_fake_run(tmp_path / "b", tiny_voc, error_rate=0.2)  # a second run, scored without TTA
    runs = [ReportRun("a", run), ReportRun("b", plain)]
    md, html = write_report(tmp_path / "report2", runs, title="Two runs", intro="Test.", device="cpu")
    text = read_report(md, html).all_text
    assert "test-time augmentation as each run's tta says (multiscale, none)" in text
    assert "best checkpoint by validation loss or validation mIoU" in text
    fixed = write_fake_run(tmp_path / "c", tiny_voc, error_rate=0.2, monitor="last")  # no choice: the last epoch
    md, html = write_report(tmp_path / "report3", [ReportRun("c", fixed)], title="Fixed", intro="Test.", device="cpu")
    text = read_report(md, html).all_text
    assert "using the last epoch's weights ( monitor: last )" in text and "best checkpoint" not in text
    assert "the scores above use the last epoch's weights" in text  # the curves' caption says it too
