"""`vocseg reproduce`: planning, skip/resume, the manifest, seeds, failures, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import read_report, write_fake_run
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.errors import VocsegError
from vocseg.rundir import RunDir
from vocseg.study import experiments as X
from vocseg.study import reproduce as R

CHEAP = ["baseline", "cosine"]


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    generate_synthetic_voc(root, n_train=16, n_val=8, seed=1, max_side=96, workers=1)
    return root


@pytest.fixture
def tiny_quick(monkeypatch):
    monkeypatch.setattr(
        X,
        "QUICK",
        dict(
            epochs=2,
            image_size=64,
            scale_range=None,
            max_train_images=None,
            max_val_images=None,
            batch_size=4,
            num_workers=0,
        ),
    )
    monkeypatch.setattr(X, "QUICK_PER_EXPERIMENT", {})


class _Interrupt:
    """A log that interrupts training right after the first epoch of the first run is saved."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt


# ----------------------------------------------------------------------------- planning


def test_unknown_experiment_names_and_bad_seeds_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(VocsegError, match=r"'nope'.*valid names: baseline, cosine, augment"):
        R.reproduce(tmp_path / "out", only=["baseline", "nope"])
    with pytest.raises(VocsegError, match=r"seeds must be an integer >= 1, got 0"):
        R.reproduce(tmp_path / "out", only=["baseline"], seeds=0)
    assert not (tmp_path / "out").exists()


def test_run_actions_follow_the_run_folders_status(tmp_path, tiny_voc, vocseg_cache):
    cfg, _, _ = X.experiment_config(X.get_experiment("baseline"), tmp_path, data_root=tiny_voc)
    run = RunDir(cfg.out)
    assert R.run_action(run, overwrite=False) == "train"
    run.path.mkdir(parents=True)
    (run.path / RunDir.HISTORY).write_text("epoch\n")  # leftovers of a run that died in its first epoch
    assert R.run_action(run, overwrite=False) == "restart"
    (run.path / RunDir.LAST).write_bytes(b"x")
    assert R.run_action(run, overwrite=False) == "resume" and R.run_action(run, overwrite=True) == "restart"
    write_fake_run(tmp_path / "done", tiny_voc)
    assert R.run_action(RunDir(tmp_path / "done"), overwrite=False) == "skip"


def test_plans_go_seed_by_seed_and_check_finished_runs_against_the_recipe(tmp_path, tiny_voc, vocseg_cache):
    exps = X.select_experiments(CHEAP)
    plans = R.plan_runs(tmp_path, exps, tiny_voc, False, "cpu", False, seeds=2)
    assert [(p.name, p.cfg.seed, p.action) for p in plans] == [
        ("baseline", 0, "train"),
        ("cosine", 0, "train"),
        ("baseline-seed1", 1, "train"),
        ("cosine-seed1", 1, "train"),
    ]
    # A finished run with another recipe in a folder the study would skip is refused, not mixed in.
    write_fake_run(tmp_path / "runs" / "cosine", tiny_voc)
    with pytest.raises(VocsegError, match=r"runs/cosine holds a run with a different config \(.*--overwrite"):
        R.plan_runs(tmp_path, exps, tiny_voc, False, "cpu", False, seeds=1)


def test_study_runs_report_every_experiment_and_finished_extra_seeds(tmp_path, tiny_voc, vocseg_cache):
    write_fake_run(tmp_path / "runs" / "unet-seed1", tiny_voc)
    runs = R.study_runs(tmp_path, seeds=1)
    assert [r.label for r in runs] == [e.name for e in X.EXPERIMENTS[:-1]] + ["unet", "unet-seed1"]
    assert {r.group for r in runs if r.experiment.name == "unet"} == {"unet"}


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_reproduce_quick_resume_skip_and_self_contained_report(
    tmp_path, tiny_data, tiny_quick, vocseg_cache, torch_global_state
):
    out = tmp_path / "out"
    runs = out / "runs"

    # 1. Interrupted after epoch 1 of the first experiment: last.pt, no metrics.json.
    log = _Interrupt()
    with pytest.raises(KeyboardInterrupt):
        R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=log)
    assert RunDir(runs / "baseline").status == "interrupted"
    assert not (runs / "cosine").exists()

    # 2. Rerun: the interrupted run resumes after epoch 1, the other one trains.
    lines: list[str] = []
    result = R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=lines.append)
    assert result.status == {"baseline": "resumed", "cosine": "trained"}
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    for name in CHEAP:
        metrics = RunDir(runs / name).read_metrics()
        assert metrics["epochs_run"] == 2 and metrics["split"] == "val" and metrics["num_images"] == 8
    assert [row["epoch"] for row in RunDir(runs / "baseline").read_history()] == [1, 2]
    manifest = json.loads((out / R.MANIFEST).read_text())
    assert manifest["quick"] is True and manifest["experiments"]["cosine"]["quick_overrides"]["epochs"] == 2

    # 3. The HTML report parses and carries everything, images embedded as PNG data URIs.
    page = read_report(result.report_md, result.report_html)
    assert len(page.imgs) == len(CHEAP) + 3  # curves per run, comparison, per-class bars, confusion matrix
    results = {row[0]: row for row in page.rows if row and row[-1] in ("done", "not run", "failed")}
    for name in CHEAP:
        assert results[name][-1] == "done"
        assert any(c.startswith(f"{name}: train/val loss") for c in page.captions)
    assert results["augment"][-1] == "not run"
    assert "cosine beats baseline by" in page.all_text or "baseline beats cosine by" in page.all_text

    # 4. A third call retrains nothing.
    stamps = {p: p.stat().st_mtime_ns for name in CHEAP for p in (runs / name).glob("*") if p.is_file()}
    again = R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=lambda s: None)
    assert again.status == {"baseline": "skipped", "cosine": "skipped"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # 5. The same folder asked for a different recipe refuses instead of mixing runs.
    with pytest.raises(VocsegError, match="different config"):
        R.reproduce(out, data_root=tiny_data, quick=False, only=["baseline"], progress=False, log=lambda s: None)


@pytest.mark.slow
def test_seeds_train_each_experiment_again_and_report_mean_and_std(
    tmp_path, tiny_data, tiny_quick, vocseg_cache, torch_global_state
):
    out = tmp_path / "out"
    result = R.reproduce(
        out, data_root=tiny_data, quick=True, only=["baseline"], seeds=2, progress=False, log=lambda s: None
    )
    assert result.status == {"baseline": "trained", "baseline-seed1": "trained"}
    assert [RunDir(out / "runs" / n).read_config()["seed"] for n in result.status] == [0, 1]
    manifest = json.loads((out / R.MANIFEST).read_text())
    assert manifest["seeds"] == 2 and manifest["experiments"]["baseline-seed1"]["seed"] == 1
    page = read_report(result.report_md, result.report_html)
    row = next(row for row in page.rows if row and row[0] == "baseline" and row[-1] == "done")
    assert "±" in row[6] and row[-2] == "2"  # mIoU: mean ± std over the two seeds
    # Back to one seed: the finished second seed is still reported (and not retrained).
    again = R.reproduce(out, data_root=tiny_data, quick=True, only=["baseline"], progress=False, log=lambda s: None)
    assert again.status == {"baseline": "skipped"}
    assert "`baseline-seed1`" in again.report_md.read_text()


def test_missing_imagenet_weights_fail_the_transfer_run_but_not_the_study(
    tmp_path, tiny_data, vocseg_cache, monkeypatch
):
    from vocseg.models import transfer

    def offline(encoder):
        raise VocsegError(f"ImageNet weights for {encoder} are not available (test)")

    monkeypatch.setattr(transfer, "load_imagenet_state_dict", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(VocsegError, match=r"1 of 1 run\(s\) failed[\s\S]*transfer: ImageNet weights for resnet34"):
        R.reproduce(out, data_root=tiny_data, quick=False, only=["transfer"], progress=False, log=lines.append)
    assert any("transfer FAILED" in line for line in lines)
    assert any("needs pretrained weights for model 'transfer'" in line for line in lines)  # said before training
    manifest = json.loads((out / R.MANIFEST).read_text())
    assert manifest["experiments"]["transfer"]["status"] == "failed"
    md = (out / "report.md").read_text()
    assert "**transfer** (Table 10) failed: ImageNet weights for resnet34 are not available" in md
