"""vocseg plan and train --recipe auto: a complete config with its reasons, the fingerprint kept, runs as is."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from helpers import cli, folder_dataset
from vocseg.config import FIELD_NAMES, load_config
from vocseg.data.fingerprint import dataset_fingerprint
from vocseg.data.voc import VOCSegmentation
from vocseg.training import lr_schedule, planner
from vocseg.training.lr_schedule import LrSchedule
from vocseg.training.plan_rules import COLOUR_DEFINES
from vocseg.training.planner import LoaderTimer, StepTimer, make_plan


def test_step_timer_times_once_and_remembers(monkeypatch):
    losses = []
    real_loss = planner.training_loss
    monkeypatch.setattr(
        planner, "training_loss", lambda out, *a, **k: losses.append((out, a, k)) or real_loss(out, *a, **k)
    )
    timer = StepTimer(torch.device("cpu"), 3, log=lambda _: None)
    seconds = timer("transfer_unet", "resnet18", 64, 2)
    out, args, kwargs = losses[0]  # the run's loss, the aux head's included (its backward costs time too)
    assert set(out) == {"out", "aux"} and args[2] > 0 and kwargs["aux_stride"] == 16
    assert seconds > 0 and list(timer.times) == [("transfer_unet", "resnet18", 64, 2)]
    monkeypatch.setattr(StepTimer, "_time", lambda *a: pytest.fail("timed twice"))
    assert timer("transfer_unet", "resnet18", 64, 2) == seconds


class FakeLoader:
    def __init__(self, seconds: float, workers: int) -> None:
        self.seconds, self.workers, self.calls = seconds, workers, []

    def __call__(self, crop: int, batch: int) -> float:
        self.calls.append((crop, batch))
        return self.seconds


@pytest.mark.parametrize(("workers", "expected"), [(0, 0.2 + 0.3), (2, 0.2), (1, 0.3)])
def test_step_timer_adds_the_loader_in_the_main_process_and_overlaps_it_with_workers(monkeypatch, workers, expected):
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: 0.2)
    loader = FakeLoader(0.3, workers)
    timer = StepTimer(torch.device("cpu"), 3, log=lambda _: None, loader=loader)
    assert timer("transfer_unet", "resnet18", 96, 8) == pytest.approx(expected)
    assert loader.calls == [(96, 8)]  # the loader is timed at the candidate's crop and batch


def scripted(times: dict[int, list[float]]):
    """StepTimer._time giving, for each crop, its listed seconds in turn (a missing one fails the test)."""

    def _time(self, name, encoder, crop, batch):
        if not times.get(crop):
            pytest.fail(f"{crop} px timed more often than scripted")
        return times[crop].pop(0)

    return _time


def test_step_timer_times_a_smaller_crop_again_when_it_timed_slower_than_a_larger_one(monkeypatch):
    monkeypatch.setattr(StepTimer, "_time", scripted({96: [0.61, 0.20], 128: [0.25]}))
    lines = []
    timer = StepTimer(torch.device("cpu"), 3, log=lines.append)
    assert timer("transfer_unet", "resnet18", 96, 8) == 0.61  # timed while the machine was busy
    assert timer("transfer_unet", "resnet18", 128, 8) == 0.25
    assert timer("transfer_unet", "resnet18", 96, 8) == 0.20  # taken again
    assert timer.retimed == {("transfer_unet", "resnet18", 96, 8)}
    assert any("96 px timed slower (0.610 s) than at 128 px (0.250 s)" in line for line in lines)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("resnet18", 96, 8, 0.29), ("resnet18", 128, 8, 0.25)),  # within ORDER_SLACK: noise
        (("resnet18", 96, 8, 0.61), ("resnet18", 128, 4, 0.25)),  # another batch
        (("resnet18", 96, 8, 0.61), ("resnet50", 128, 8, 0.25)),  # another candidate
    ],
)
def test_step_timer_keeps_times_that_do_not_contradict_each_other(monkeypatch, first, second):
    seconds = {(e, c, b): s for e, c, b, s in (first, second)}
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: seconds[encoder, crop, batch])
    timer = StepTimer(torch.device("cpu"), 3, log=lambda _: None)
    for encoder, crop, batch, s in (first, second):
        assert timer("transfer_unet", encoder, crop, batch) == s
    assert not timer.retimed and timer("transfer_unet", *first[:3]) == first[3]


def test_step_timer_times_again_once_and_with_the_loader(monkeypatch):
    monkeypatch.setattr(StepTimer, "_time", scripted({96: [0.61, 0.60], 128: [0.25], 192: [0.3]}))
    loader = FakeLoader(0.0, workers=0)
    loader.times = {(96, 8): 0.0}  # LoaderTimer's cache: emptied for the crop timed again
    timer = StepTimer(torch.device("cpu"), 3, log=lambda _: None, loader=loader)
    for crop in (96, 128, 192):  # still slow when taken again: kept, and not timed a third time
        timer("transfer_unet", "resnet18", crop, 8)
    assert timer.times[("transfer_unet", "resnet18", 96, 8)] == 0.60
    assert loader.calls == [(96, 8), (128, 8), (96, 8), (192, 8)] and (96, 8) not in loader.times


def test_a_plan_timed_on_a_busy_machine_is_made_again_from_the_times_taken_again(data, monkeypatch):
    """The smallest crop timed 3x too slow (the machine busy for its first timing only) would push the crop
    rule to a larger crop; timed again, the plan is the one a quiet machine makes."""
    real_fingerprint = planner.dataset_fingerprint

    def vocs_sizes(train):  # the fixture's images are small; crops above the smallest need larger ones
        fp = real_fingerprint(train)
        fp.long_side["median"] = 500.0
        return fp

    monkeypatch.setattr(planner, "dataset_fingerprint", vocs_sizes)
    quiet = {96: 0.20, 128: 0.21, 192: 0.40, 256: 0.70, 384: 1.6, 512: 2.8}
    monkeypatch.setattr(LoaderTimer, "_time", lambda self, crop, batch: 0.0)
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: quiet[crop])
    calm = make_plan(data, "6m", "cpu", log=lambda _: None)
    busy_once = {crop: [3 * s, s] if crop == 96 else [s] for crop, s in quiet.items()}
    monkeypatch.setattr(StepTimer, "_time", scripted({c: list(v) for c, v in busy_once.items()}))
    assert make_plan(data, "6m", "cpu", log=lambda _: None).config == calm.config
    assert calm.config.image_size == 128  # 96 px and 128 px cost about the same: overhead-bound steps
    monkeypatch.setattr(planner, "ORDER_SLACK", float("inf"))  # without the check, the busy timing decides
    monkeypatch.setattr(StepTimer, "_time", scripted({c: list(v) for c, v in busy_once.items()}))
    assert make_plan(data, "6m", "cpu", log=lambda _: None).config.image_size != calm.config.image_size


@pytest.fixture
def data(tmp_path):
    return folder_dataset(tmp_path / "data")


@pytest.mark.usefixtures("vocseg_cache")
def test_loader_timer_makes_batches_with_the_augmentation_the_rules_choose(data, monkeypatch):
    train = VOCSegmentation(data, "train", num_classes=3)
    fp = dataset_fingerprint(train)
    loader = LoaderTimer(train, fp, hflip=0.5, vflip=0.0, workers=0)
    assert fp.colour_separability < COLOUR_DEFINES  # photometric distortion timed, and copy-paste (always)
    made = []
    monkeypatch.setattr("vocseg.training.planner.CopyPasteCollate.__call__", lambda self, b: made.append(b) or b)
    seconds = loader(64, 3)
    assert seconds > 0 and len(made) >= 2 and all(len(b) == 3 for b in made)
    assert all(img.shape == (3, 64, 64) and mask.shape == (64, 64) for b in made for img, mask in b)
    assert {img.dtype for b in made for img, _ in b} == {torch.float32}  # normalised, as the run's batches
    monkeypatch.setattr(LoaderTimer, "_time", lambda *a: pytest.fail("timed twice"))
    assert loader(64, 3) == seconds


@pytest.mark.usefixtures("vocseg_cache")
def test_plan_writes_a_complete_config_with_reasons(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: 0.05 * (crop / 96) ** 2)
    monkeypatch.setattr(LoaderTimer, "_time", lambda self, crop, batch: 0.01)  # measured: test_loader_timer_*
    out = tmp_path / "plans" / "plan.yaml"
    rc, _ = cli(["plan", data, "--budget", "10m", "--device", "cpu", "--out", out], capsys)
    assert rc == 0
    text = out.read_text()
    raw = yaml.safe_load(text)
    assert set(raw) == FIELD_NAMES  # complete: `vocseg train --config plan.yaml` needs nothing else
    cfg = load_config(out)
    plan = make_plan(data, "10m", "cpu", log=lambda _: None)
    assert cfg == plan.config and cfg.budget == "10m" and cfg.data_root == str(data) and cfg.num_classes == 3
    for key, reason in plan.recipe.reasons.items():
        line = next(line for line in text.splitlines() if line.startswith(f"{key}:"))
        assert line.endswith(f"# {reason}"), line
    fingerprint = json.loads((out.parent / "fingerprint.json").read_text())
    assert fingerprint["num_images"] == 10 and fingerprint == plan.fingerprint.to_dict()
    rc, err = cli(["plan", data, "--out", out], capsys)
    assert rc == 2 and "--overwrite" in err  # an existing plan is kept


@pytest.mark.slow
@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
def test_train_recipe_auto_keeps_the_plan_in_the_run(data, tmp_path, monkeypatch, capsys):
    """One command plans and trains; flags given win over the plan and are marked so in plan.yaml. The
    budget runs on a simulated clock (1 s a training step), so the run makes the same steps however loaded
    the machine is; test_lr_schedule.py checks the budget's books on such a clock."""
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: 0.01)
    monkeypatch.setattr(LoaderTimer, "_time", lambda self, crop, batch: 0.0)
    now, real_after_step = [0.0], LrSchedule.after_step

    def step_costs_1s(self):
        now[0] += 1.0
        return real_after_step(self)

    monkeypatch.setattr(lr_schedule, "clock", lambda: now[0])
    monkeypatch.setattr(LrSchedule, "after_step", step_costs_1s)
    run = tmp_path / "run"
    args = ["train", "--recipe", "auto", "--data-root", data, "--budget", "15s", "--out", run, "--warmup-iters", 0]
    flags = ["--batch-size", 4, "--workers", 0, "--device", "cpu", "--no-progress", "--model-arg", "aux=false"]
    rc, err = cli([*args, *flags], capsys)
    assert rc == 0, err
    assert 8 <= json.loads((run / "metrics.json").read_text())["steps"] <= 15 and now[0] <= 15.0
    for name in ("plan.yaml", "fingerprint.json", "config.yaml", "metrics.json", "best.pt"):
        assert (run / name).is_file(), name
    planned = yaml.safe_load((run / "plan.yaml").read_text())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert planned["batch_size"] == saved["batch_size"] == 4 and saved["budget"] == "15s"
    assert saved["model_kwargs"]["encoder"] == "resnet18" and saved["tta"] == "multiscale"
    # --model-arg adds to the plan's model arguments; the others (the encoder, no pretraining here) stay
    assert (
        saved["model_kwargs"]
        == planned["model_kwargs"]
        == {"encoder": "resnet18", "aspp": False, "aux": False, "pretrained": False}
    )
    assert "given on the command line (the plan chose 8" in (run / "plan.yaml").read_text()
    rc, err = cli(["train", "--recipe", "auto", "--data-root", data, "--out", tmp_path / "r2"], capsys)
    assert rc == 2 and "--recipe auto needs --budget" in err


def test_plan_refuses_too_small_a_budget(data, tmp_path, monkeypatch, capsys, vocseg_cache):
    monkeypatch.setattr(StepTimer, "_time", lambda self, name, encoder, crop, batch: 1.0)
    monkeypatch.setattr(LoaderTimer, "_time", lambda self, crop, batch: 0.0)
    rc, err = cli(["plan", data, "--budget", "1m", "--out", tmp_path / "p.yaml"], capsys)
    assert rc == 2 and "is too small for any candidate" in err and "give --budget 4m or more" in err
    assert not (tmp_path / "p.yaml").exists()
    assert planner.PLAN_FILE == "plan.yaml"
