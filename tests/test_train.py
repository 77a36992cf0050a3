"""Training pieces against references, and a short end-to-end run through the CLI."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from vocseg.cli import main
from vocseg.config import Config, load_config
from vocseg.data.builder import split_ids
from vocseg.data.stats import dataset_stats
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.data.voc import VOCSegmentation, load_image, load_mask
from vocseg.errors import VocsegError
from vocseg.losses import class_weights, weighted_ce_sums
from vocseg.train import EarlyStopping, HISTORY_FIELDS, cosine_lr


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    out = tmp_path_factory.mktemp("voc")
    generate_synthetic_voc(out, n_train=12, n_val=5, seed=3, max_side=80, workers=1)
    return out


def test_cosine_lr_matches_torch_scheduler():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=13, eta_min=1e-4)
    for epoch in range(13):
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine_lr(epoch, 0.01, 1e-4, 13), rel=1e-9)
        opt.step()
        sched.step()


def test_paper_class_weights_hand_computed():
    w = class_weights([70, 20, 10, 0], "paper")
    assert torch.allclose(w, torch.tensor([0.3, 0.8, 0.9, 1.0]))


def test_median_frequency_and_inverse_sqrt_weights():
    counts = [600, 300, 100, 0]  # frequencies .6 .3 .1 among present classes; median .3
    mf = class_weights(counts, "median_frequency")
    assert torch.allclose(mf, torch.tensor([0.5, 1.0, 3.0, 0.0]))
    isq = class_weights(counts, "inverse_sqrt")
    raw = 1 / np.sqrt([0.6, 0.3, 0.1])
    assert torch.allclose(isq[:3], torch.tensor(raw / raw.mean(), dtype=torch.float32))
    assert isq[3] == 0
    assert class_weights(counts, "none") is None


@pytest.mark.parametrize("use_weight", [False, True])
def test_weighted_ce_sums_equals_torch_cross_entropy(use_weight):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, 9, generator=g)
    target = torch.randint(0, 5, (3, 7, 9), generator=g)
    target[0, :2] = 255
    weight = torch.rand(5, generator=g) + 0.1 if use_weight else None
    total, n = weighted_ce_sums(logits, target, weight)
    ref = F.cross_entropy(logits, target, weight=weight, ignore_index=255)
    assert torch.allclose(total / n, ref, atol=1e-6)


def test_early_stopping_patience():
    stop = EarlyStopping(patience=2, mode="min")
    assert stop.step(1.0, 1) and not stop.should_stop
    assert not stop.step(1.1, 2) and not stop.should_stop
    assert stop.step(0.9, 3) and stop.bad_epochs == 0
    stop.step(0.95, 4)
    stop.step(0.95, 5)
    assert stop.should_stop and stop.best_epoch == 3
    up = EarlyStopping(patience=None, mode="max")
    for e in range(10):
        up.step(0.0, e)
    assert not up.should_stop


def test_stats_match_numpy_and_are_cached(tiny_voc, monkeypatch, tmp_path):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path))
    ds = VOCSegmentation(tiny_voc, "train")
    images = [load_image(ds.image_path(i)).reshape(-1, 3) / 255.0 for i in range(len(ds))]
    masks = np.concatenate([load_mask(ds.mask_path(i)).ravel() for i in range(len(ds))])
    pix = np.concatenate(images)
    stats = dataset_stats(ds)
    assert np.allclose(stats.mean, pix.mean(0)) and np.allclose(stats.std, pix.std(0))
    assert stats.class_counts == np.bincount(masks[masks != 255], minlength=21).tolist()
    assert stats.void_pixels == int((masks == 255).sum())
    monkeypatch.setattr("vocseg.data.stats.compute_stats", lambda _: pytest.fail("cache not used"))
    assert dataset_stats(ds) == stats


def test_holdout_split_is_disjoint_and_fixed(tiny_voc):
    cfg = Config(data_root=str(tiny_voc), val_holdout=0.25, seed=1)
    a = split_ids(VOCSegmentation(tiny_voc, "train").voc_root, cfg)
    b = split_ids(VOCSegmentation(tiny_voc, "train").voc_root, Config(data_root=str(tiny_voc), val_holdout=0.25, seed=9))
    assert not set(a.train) & set(a.val) and len(a.val) == 3 and len(a.train) == 9
    assert a.val == b.val  # the holdout does not depend on the training seed
    assert a.test == VOCSegmentation(tiny_voc, "val").ids and a.test_name == "val"


def test_config_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "fcn", "lr": 0.002, "epochs": 4, "model_kwargs": {"a": 1}}))
    cfg = load_config(path, {"lr": 0.005, "model_kwargs": {"b": 2}, "patience": None})
    assert (cfg.lr, cfg.epochs, cfg.model_kwargs, cfg.patience) == (0.005, 4, {"a": 1, "b": 2}, None)
    path.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(VocsegError, match="learning_rate"):
        load_config(path)
    with pytest.raises(VocsegError, match="optimizer"):
        load_config(None, {"optimizer": "rmsprop"})


def test_train_then_evaluate_end_to_end(tiny_voc, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    rc = main([
        "train", "--model", "fcn", "--data-root", str(tiny_voc), "--out", str(run), "--epochs", "2",
        "--batch-size", "4", "--image-size", "48", "--workers", "0", "--no-progress", "--patience", "5",
    ])
    assert rc == 0
    for name in ("config.yaml", "history.csv", "best.pt", "last.pt", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and tuple(rows[0]) == HISTORY_FIELDS
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["image_size"] == 48 and saved["data_root"] == str(tiny_voc)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["split"] == "val" and metrics["epochs_run"] == 2
    capsys.readouterr()

    # Evaluating best.pt alone reproduces the run's own final numbers (same split, same weights).
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("mean_iou", "pixel_accuracy", "fw_iou", "mean_accuracy"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-9), key
    assert evaluated["loss"] == pytest.approx(metrics["loss"], rel=1e-5)

    # The human-readable form has the per-class table.
    assert main(["evaluate", str(run / "best.pt"), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "mean_iou" in text and "aeroplane" in text


@pytest.mark.parametrize(
    "bad, key",
    [({"epochs": "ten"}, "epochs"), ({"image_size": "160"}, "image_size"), ({"model_kwargs": None}, "model_kwargs"),
     ({"scale_range": 1.5}, "scale_range"), ({"hflip": 1.5}, "hflip"), ({"num_workers": -1}, "num_workers"),
     ({"patience": "3"}, "patience"), ({"deterministic": "yes"}, "deterministic")],
)
def test_config_values_of_the_wrong_type_name_the_key(bad, key, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(VocsegError, match=key):
        load_config(path)


def test_config_accepts_yaml_scientific_notation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmin_lr: 1e-5\nepochs: 3.0\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_config(path)
    assert (cfg.lr, cfg.min_lr, cfg.epochs) == (0.001, 1e-05, 3) and isinstance(cfg.epochs, int)


def test_tensorboard_without_the_extra_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    from vocseg.train import open_tensorboard

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(VocsegError, match=r"vocseg\[tensorboard\]"):
        open_tensorboard(tmp_path / "tb")


@pytest.mark.parametrize(
    "model, args",
    [("unpool", []), ("unet", ["--model-arg", "base_channels=4"]),
     ("transfer", ["--model-arg", "pretrained=false", "--model-arg", "encoder=resnet18"])],
)
def test_every_paper_model_trains_and_evaluates_through_the_cli(
    model, args, tiny_voc, tmp_path, monkeypatch, capsys, torch_global_state
):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / model
    rc = main([
        "train", "--model", model, *args, "--data-root", str(tiny_voc), "--out", str(run), "--epochs", "1",
        "--batch-size", "4", "--image-size", "64", "--workers", "0", "--no-progress", "--max-val-images", "2",
    ])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--data-root", str(tiny_voc)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["model"] == model and evaluated["num_images"] == 5
    assert 0.0 <= evaluated["mean_iou"] <= 1.0 and metrics["num_images"] == 2


# ----------------------------------------------------------------------------- resume with changes, run-folder failures


def _tiny_args(tiny_voc, run, *extra):
    return ["train", "--model", "fcn", "--data-root", str(tiny_voc), "--out", str(run), "--batch-size", "4",
            "--image-size", "48", "--workers", "0", "--no-progress", "--amp", "none", *map(str, extra)]


def test_resume_extends_epochs_and_stretches_cosine(tiny_voc, tmp_path, monkeypatch, capsys, torch_global_state):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 2, "--lr", 0.01, "--scheduler", "cosine")) == 0
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # Epochs 1-2 followed the 2-epoch cosine; from epoch 3 on, the curve is the 4-epoch one.
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[:2] == pytest.approx([cosine_lr(0, 0.01, 0.0, 2), cosine_lr(1, 0.01, 0.0, 2)])
    assert lrs[2:] == pytest.approx([cosine_lr(2, 0.01, 0.0, 4), cosine_lr(3, 0.01, 0.0, 4)])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # the run's original recipe file


def test_resume_refuses_flags_it_cannot_honour(tiny_voc, tmp_path, monkeypatch, capsys, torch_global_state):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 1)) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.5", "--model", "unet"]) == 2
    err = capsys.readouterr().err
    assert "cannot change lr, model" in err and "may change:" in err and "epochs" in err
    assert main(["train", "--resume", str(run), "--config", "x.yaml"]) == 2


def test_unwritable_run_folder_is_one_line_naming_the_path(tiny_voc, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(_tiny_args(tiny_voc, blocker / "run", "--epochs", 1)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(blocker) in err and "Not a directory" in err


def test_poly_schedule_with_warmup_runs_per_step(tiny_voc, tmp_path, monkeypatch, torch_global_state):
    """12 images, batch 4: 3 steps per epoch. The LR logged at each epoch's start is lr_at(step)."""
    from vocseg.config import Config
    from vocseg.schedule import lr_at
    from vocseg.train import train

    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    cfg = Config(model="fcn", data_root=str(tiny_voc), out=str(tmp_path / "run"), batch_size=4, image_size=48,
                 num_workers=0, amp="none", lr=0.01, scheduler="poly", warmup_iters=2, iters=7, epochs=99)
    result = train(cfg, progress=False, log=lambda *_: None)
    steps = [0, 3, 6]
    assert [r["lr"] for r in result.history] == pytest.approx(
        [lr_at(s, 7, 0.01, kind="poly", warmup_steps=2, power=0.9) for s in steps])
    assert result.metrics["steps"] == 7 and len(result.history) == 3  # ceil(7 / 3) epochs, the last one cut short


def test_budget_fits_the_whole_run_on_a_simulated_clock(tiny_voc, tmp_path, monkeypatch, torch_global_state):
    """Each training step costs 1 s and each validation pass 2 s on a simulated clock, so the test is exact
    whatever the machine: the run must plan its steps to end (final evaluation included) within 60 s."""
    import vocseg.schedule_runtime as sr
    import vocseg.train as train_mod
    from vocseg.config import Config

    now = [0.0]
    monkeypatch.setattr(sr, "clock", lambda: now[0])
    real_after, real_eval = sr.StepSchedule.after_step, train_mod.evaluate

    def step_costs_1s(self):
        now[0] += 1.0
        return real_after(self)

    def eval_costs_2s(*args, **kwargs):
        now[0] += 2.0
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(sr.StepSchedule, "after_step", step_costs_1s)
    monkeypatch.setattr(train_mod, "evaluate", eval_costs_2s)
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    cfg = Config(model="fcn", data_root=str(tiny_voc), out=str(tmp_path / "run"), batch_size=4, image_size=32,
                 num_workers=0, amp="none", scheduler="cosine", warmup_iters=3, budget="60s")
    result = train_mod.train(cfg, progress=False, log=lambda *_: None)
    m = result.metrics
    assert now[0] <= 60.0, f"the run took {now[0]} simulated seconds of a 60 s budget"
    assert now[0] >= 0.8 * 60, f"the plan left most of the budget unused ({now[0]} s)"
    assert m["steps"] == m["planned_steps"] and m["budget_seconds"] == 60.0
    assert result.history[-1]["lr"] < 0.3 * cfg.lr  # the cosine decayed over the planned steps


@pytest.mark.parametrize(
    "model, args",
    [("transfer_unet", ["--model-arg", "pretrained=false", "--model-arg", "encoder=resnet18", "--model-arg", "aspp=true"]),
     ("lraspp_mobilenet_v3_large", ["--model-arg", "pretrained_backbone=false"])],
)
def test_new_models_train_and_evaluate_through_the_cli(model, args, tiny_voc, tmp_path, monkeypatch, capsys,
                                                       torch_global_state):
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    run = tmp_path / model
    assert main(_tiny_args(tiny_voc, run, "--model", model, *args, "--epochs", 1, "--image-size", 64,
                           "--max-val-images", 2)) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--tta", "flip"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["model"] == model and evaluated["tta"] == "flip" and 0.0 <= evaluated["mean_iou"] <= 1.0
