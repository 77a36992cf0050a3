"""Training (vocseg.train): the pieces against references, end-to-end runs through the CLI, exact resume after
SIGKILL, resuming with changes, non-finite losses and weights, and run folders that are refused or unwritable.

docs/reliability.md lists every fault tried here, what vocseg does about it, and the test that checks it.
The fault tests train a 122k-parameter U-Net (base_channels=4) on the 12-image ``tiny_voc`` set, one torch
thread, CPU, deterministic mode, no AMP: an epoch takes a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import vocseg.rundir as rundir_mod
import vocseg.training.step as engine
import vocseg.training.train as train_mod
from helpers import TRAIN_ARGS, cli, history_rows, quiet_train, snapshot, subprocess_env, tiny_config
from vocseg.checkpoint import load_checkpoint
from vocseg.cli import main
from vocseg.errors import VocsegError
from vocseg.rundir import RunDir
from vocseg.training.train import HISTORY_FIELDS, MONITOR_MODES, EarlyStopping

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")


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


def test_monitor_last_keeps_every_epoch_whatever_its_value():
    """``monitor: last`` makes no choice: each epoch replaces best.pt, even when its value got worse."""
    last = EarlyStopping(patience=None, mode=MONITOR_MODES["last"])
    assert all(last.step(loss, epoch) for epoch, loss in enumerate([1.0, 2.0, 0.5, 3.0], start=1))
    assert last.best_epoch == 4 and last.bad_epochs == 0 and not last.should_stop


def test_monitor_last_trains_to_the_last_epochs_weights(tiny_voc, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 3, "--lr", 0.1, "--monitor", "last")) == 0
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["epoch"] == last["epoch"] == 3
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == 3
    capsys.readouterr()


@pytest.mark.parametrize("monitor", ["last", "val_loss"])
def test_val_every_validates_every_nth_epoch_and_the_last(monitor, tiny_voc, tmp_path, capsys):
    """--val-every 2 over 5 epochs: validations after epochs 2, 4 and 5 only; the skipped epochs keep their
    training loss and leave the val columns empty. best.pt comes from a validated epoch (every epoch with
    monitor last, whose best.pt is then the last one)."""
    run = tmp_path / "run"
    args = _tiny_args(tiny_voc, run, "--epochs", 5, "--val-every", 2, "--monitor", monitor, "--lr", 0.1)
    assert main(args) == 0
    history = RunDir(run).read_history()
    assert [r["epoch"] for r in history if r["val_loss"] is not None] == [2, 4, 5]
    assert all(r["train_loss"] is not None and r["val_miou"] is None for r in history if r["epoch"] in (1, 3))
    assert "epoch 3/5" in capsys.readouterr().out and (run / "curves.png").is_file()
    best_epoch = json.loads((run / "metrics.json").read_text())["best_epoch"]
    assert best_epoch == 5 if monitor == "last" else best_epoch in (2, 4, 5)
    assert load_checkpoint(run / "best.pt")["epoch"] == best_epoch


def test_curves_are_drawn_off_the_training_thread_after_the_checkpoints(tiny_voc, tmp_path, monkeypatch, capsys):
    """curves.png is drawn on the writer thread, from a snapshot of the history, after that epoch's checkpoints
    (the GPU does not wait for matplotlib between epochs; docs/benchmarks.md, section (j))."""
    events = []
    draw, write = train_mod.plot_curves, train_mod.write_epoch_files

    def plot_curves(history, path, title):
        events.append(("curves", threading.get_ident(), len(history)))
        draw(history, path, title)

    def write_epoch_files(run, state, improved):
        events.append(("ckpt", threading.get_ident(), state["epoch"]))
        write(run, state, improved)

    monkeypatch.setattr(train_mod, "plot_curves", plot_curves)
    monkeypatch.setattr(train_mod, "write_epoch_files", write_epoch_files)
    run = tmp_path / "run"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 2, "--monitor", "last")) == 0
    capsys.readouterr()
    # monitor last: both epochs are checkpointed; curves are due after the first and the last epoch
    assert [(kind, n) for kind, _, n in events] == [("ckpt", 1), ("curves", 1), ("ckpt", 2), ("curves", 2)]
    assert all(thread != threading.get_ident() for _, thread, _ in events)
    assert (run / "curves.png").is_file()


@pytest.mark.parametrize(
    ("every_s", "last_is_due", "written"),
    [(0.0, True, [1, 2, 3, 4]), (1e9, True, [1, 2, 4]), (1e9, False, [1, 2, 4])],
    ids=["every-epoch", "first-improved-and-last", "last-written-after-the-loop"],
)
def test_last_checkpoint_is_written_at_most_every_interval(
    every_s, last_is_due, written, tiny_voc, tmp_path, monkeypatch, capsys
):
    """last.pt (with history.csv) is written after the first epoch, each improved one (best.pt with it) and
    the last; between, only once CHECKPOINT_EVERY_S has passed. Should the last epoch go unrecognised,
    the loop's end still writes it. Either way the finished run's files hold every epoch."""
    calls: list[tuple[int, bool]] = []
    original, judge = train_mod.write_epoch_files, train_mod.judge
    # Only the first validation (epoch 2) improves, whatever the losses: the last epoch is then written as
    # the last, not as an improved one.
    monkeypatch.setattr(train_mod, "judge", lambda s, val, epoch: judge(s, val, epoch) and epoch == 1)

    def recording(run, state, improved):
        calls.append((state["epoch"], improved))
        original(run, state, improved)

    monkeypatch.setattr(train_mod, "write_epoch_files", recording)
    monkeypatch.setattr(train_mod, "CHECKPOINT_EVERY_S", every_s)
    if not last_is_due:
        monkeypatch.setattr(train_mod, "is_last_epoch", lambda s, epoch: False)
    run = tmp_path / "run"
    args = _tiny_args(tiny_voc, run, "--epochs", 4, "--val-every", 2, "--monitor", "val_loss")
    assert main(args) == 0, capsys.readouterr().err
    assert [epoch for epoch, _ in calls] == written
    assert dict(calls)[2] is True and dict(calls)[4] is False
    assert load_checkpoint(run / "best.pt")["epoch"] == 2
    assert load_checkpoint(run / "last.pt")["epoch"] == 4 and len(RunDir(run).read_history()) == 4


def _tiny_args(tiny_voc, run, *extra):
    return [
        "train",
        "--model",
        "fcn",
        "--data-root",
        str(tiny_voc),
        "--out",
        str(run),
        "--batch-size",
        "4",
        "--image-size",
        "48",
        "--workers",
        "0",
        "--no-progress",
        "--amp",
        "none",
        *map(str, extra),
    ]


def test_train_then_evaluate_end_to_end(tiny_voc, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "fcn",
            "--data-root",
            str(tiny_voc),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--image-size",
            "48",
            "--workers",
            "0",
            "--no-progress",
            "--patience",
            "5",
            # fp32: with bf16 autocast (the auto choice on CPUs with AVX512-BF16) the evaluation's batch
            # composition moves the last digits, and this test checks the numbers are reproduced exactly.
            "--amp",
            "none",
        ]
    )
    assert rc == 0
    for name in ("config.yaml", "history.csv", "best.pt", "last.pt", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
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


def test_tensorboard_without_the_extra_is_a_clear_error(monkeypatch, tmp_path):
    from vocseg.training.train import open_tensorboard

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    with pytest.raises(VocsegError, match=r"tensorboard: true needs .* extra: pip install 'vocseg\[tensorboard\]'"):
        open_tensorboard(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize(
    "model, args",
    [
        ("unpool", []),
        ("unet", ["--model-arg", "base_channels=4"]),
        ("transfer", ["--model-arg", "pretrained=false", "--model-arg", "encoder=resnet18"]),
    ],
)
def test_every_paper_model_trains_and_evaluates_through_the_cli(model, args, tiny_voc, tmp_path, capsys):
    run = tmp_path / model
    rc = main(
        [
            "train",
            "--model",
            model,
            *args,
            "--data-root",
            str(tiny_voc),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--image-size",
            "64",
            "--workers",
            "0",
            "--no-progress",
            "--max-val-images",
            "2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--data-root", str(tiny_voc)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["model"] == model and evaluated["num_images"] == 4  # tiny_voc's val split
    assert 0.0 <= evaluated["mean_iou"] <= 1.0 and metrics["num_images"] == 2


@pytest.mark.parametrize(
    "model, args",
    [
        (
            "transfer_unet",
            [
                *("--model-arg", "pretrained=false", "--model-arg", "encoder=resnet18", "--model-arg", "aspp=true"),
                *("--model-arg", "aux=true"),  # the aux loss on layer3's grid, through the training loop
            ],
        ),
        ("lraspp_mobilenet_v3_large", ["--model-arg", "pretrained_backbone=false"]),
    ],
)
def test_new_models_train_and_evaluate_through_the_cli(model, args, tiny_voc, tmp_path, capsys):
    run = tmp_path / model
    assert (
        main(
            _tiny_args(tiny_voc, run, "--model", model, *args, "--epochs", 1, "--image-size", 64, "--max-val-images", 2)
        )
        == 0
    ), capsys.readouterr().err
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--tta", "flip"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["model"] == model and evaluated["tta"] == "flip" and 0.0 <= evaluated["mean_iou"] <= 1.0


def test_final_evaluation_applies_the_configs_tta(tiny_voc, tmp_path, capsys):
    """metrics.json of a run with ``tta: flip`` equals ``vocseg evaluate --tta flip`` on its best.pt, and
    differs from the plain evaluation (the augmentation really ran)."""
    run = tmp_path / "tta"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 1, "--tta", "flip")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    evaluated = {}
    for tta in ("flip", "none"):
        assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--tta", tta]) == 0
        evaluated[tta] = json.loads(capsys.readouterr().out)
    assert metrics["tta"] == "flip" and metrics["num_images"] == evaluated["flip"]["num_images"]
    for key in ("loss", "mean_iou", "pixel_accuracy"):
        assert metrics[key] == pytest.approx(evaluated["flip"][key], rel=1e-6), key
    assert metrics["loss"] != pytest.approx(evaluated["none"]["loss"], rel=1e-6)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_ema_average_is_validated_saved_and_evaluated(decay, tiny_voc, tmp_path, capsys):
    """With --ema-decay the checkpoints' ``model`` is the weight average, last.pt keeps the trained weights
    as ``train_model`` (best.pt leaves them out), and validation and the final evaluation score the
    average: the last validation's loss equals metrics.json's, which equals ``vocseg evaluate best.pt``.
    Decay 0 makes the average the trained weights themselves; 0.9 lags behind them."""
    run = tmp_path / "run"
    args = ("--epochs", 2, "--lr", 0.05, "--monitor", "last", "--ema-decay", decay)
    assert main(_tiny_args(tiny_voc, run, *args)) == 0
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")
    assert last["ema"]["updates"] == 6  # 12 training images in batches of 4, two epochs
    assert "train_model" not in best and "ema" not in best
    assert all(torch.equal(best["model"][k], v) for k, v in last["model"].items())
    same = [torch.allclose(v, last["train_model"][k]) for k, v in last["model"].items() if v.is_floating_point()]
    assert all(same) if decay == 0.0 else not all(same)

    metrics = json.loads((run / "metrics.json").read_text())
    assert RunDir(run).read_history()[-1]["val_loss"] == pytest.approx(metrics["loss"], rel=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(metrics["loss"], rel=1e-6)


def test_a_runs_tta_scales_score_it_and_are_evaluates_default(tiny_voc, tmp_path, capsys):
    """``tta: multiscale`` at the run's ``tta_scales``: metrics.json records them, ``vocseg evaluate`` uses
    them by default (same numbers), and other scales give other numbers."""
    run = tmp_path / "ms"
    args = ("--epochs", 1, "--tta", "multiscale", "--tta-scales", 0.75, 1.0)
    assert main(_tiny_args(tiny_voc, run, *args)) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    evaluated = {}
    for name, extra in (("own", []), ("wide", ["--tta-scales", "0.5", "1.0", "1.5"])):
        cmd = ["evaluate", str(run / "best.pt"), "--json", "--device", "cpu", "--tta", "multiscale", *extra]
        assert main(cmd) == 0
        evaluated[name] = json.loads(capsys.readouterr().out)
    assert metrics["tta_scales"] == evaluated["own"]["tta_scales"] == [0.75, 1.0]
    assert evaluated["wide"]["tta_scales"] == [0.5, 1.0, 1.5]
    assert metrics["loss"] == pytest.approx(evaluated["own"]["loss"], rel=1e-6)
    assert metrics["loss"] != pytest.approx(evaluated["wide"]["loss"], rel=1e-6)


# ----------------------------------------------------------------------------- resume with changes, run-folder failures


def test_resume_extends_epochs_and_stretches_cosine(tiny_voc, tmp_path):
    run = tmp_path / "run"
    assert main(_tiny_args(tiny_voc, run, "--epochs", 2, "--lr", 0.01, "--scheduler", "cosine")) == 0
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    rows = list(csv.DictReader((run / "history.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # Epochs 1-2 followed the 2-epoch cosine; from epoch 3 on, the curve is the 4-epoch one.
    lrs = [float(r["lr"]) for r in rows]
    cosine = lambda e, t: 0.5 * 0.01 * (1 + math.cos(math.pi * e / t))  # noqa: E731 - eq. (1), min_lr 0
    assert lrs[:2] == pytest.approx([cosine(0, 2), cosine(1, 2)])
    assert lrs[2:] == pytest.approx([cosine(2, 4), cosine(3, 4)])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # the run's original recipe file


def test_resume_refuses_flags_it_cannot_honour(tiny_voc, tmp_path, capsys):
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
    assert err.count("\n") == 0 and f"{blocker} is a file, not a folder" in err


def test_a_disk_that_fills_during_training_stops_it_naming_the_file(tiny_voc, tmp_path, monkeypatch):
    """Checkpoints are written on a background thread: its error (ENOSPC while epoch 2's best.pt is
    written) must still end the run with the file named, and epoch 1's files must stay whole."""
    import errno

    import vocseg.checkpoint as checkpoint_mod

    real_write, calls = checkpoint_mod.atomic_write_bytes, []

    def fills_up(data, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 1's best.pt and last.pt fit; epoch 2's do not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(data, path)

    monkeypatch.setattr(checkpoint_mod, "atomic_write_bytes", fills_up)
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match="No space left on device") as e:
        quiet_train(tiny_config(tiny_voc, run, epochs=3, monitor="last"))
    assert str(run / "best.pt") in str(e.value)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and load_checkpoint(run / "best.pt")["epoch"] == 1
    assert [r["epoch"] for r in history_rows(run / "history.csv")] == ["1"]


def test_curves_that_cannot_be_written_stop_the_run_naming_the_file(tiny_voc, tmp_path, monkeypatch):
    """curves.png is drawn on the writer thread: an OS error there still ends the run in the training thread
    with one message naming curves.png; that epoch's checkpoints, written first, are whole."""
    import errno

    def no_space(history, path, title):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(train_mod, "plot_curves", no_space)
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match="No space left on device") as e:
        quiet_train(tiny_config(tiny_voc, run, epochs=3, monitor="last"))
    assert str(run / "curves.png") in str(e.value)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


# ----------------------------------------------------------------------------- resume after SIGKILL


EPOCHS = 3


def _start_vocseg(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "vocseg", *map(str, args)], env=env, stdout=f, stderr=subprocess.STDOUT
        )


def _kill_during_epoch_2(proc: subprocess.Popen, run: Path, timeout: float = 120.0) -> str | None:
    """Wait until epoch 1 is saved, then SIGKILL the process from outside at once. Checkpoints are written
    on a background thread while the next epoch trains, and history.csv after last.pt, so when history.csv
    lists epoch 1 the run is already inside epoch 2 (or writing it: last.pt then holds epoch 1 or 2).
    Returns None, or what went wrong (this runs in a thread, where pytest.fail would be lost)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"run B ended (rc {proc.returncode}) before it could be killed"
        rows = history_rows(run / "history.csv")
        if rows:
            break
        if time.monotonic() > deadline:
            return f"run B saved no epoch within {timeout}s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        return f"run B finished (rc {proc.returncode}) before the kill"
    return None


def _assert_same(a: Any, b: Any, where: str) -> None:
    """Exact equality of nested checkpoint data: tensors bit for bit, floats exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _without_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "extra"),
    [(0, ["--copy-paste", 0.5, "--ema-decay", 0.9]), (1, [])],
    ids=["main-process-loading-with-copy-paste-and-ema", "one-worker"],
)
def test_resume_after_sigkill_mid_epoch_is_exact(
    workers: int, extra: list, tiny_voc: Path, tmp_path: Path, vocseg_cache: Path, capsys
) -> None:
    """Run B (``python -m vocseg train`` in a subprocess) is SIGKILLed from outside during epoch 2, then
    continued with ``vocseg train --resume``; run A trains the same 3 epochs without a break (in this
    process, while B runs). last.pt, best.pt, history and metrics must come out identical. Copy-paste
    draws in the main process when it loads without workers: the restored RNG state must cover it too.
    With a weight average (--ema-decay) both the average and the trained weights must resume exactly."""
    # lr 0.1 + val_miou: the tiny model soon predicts all background, so mIoU stops improving and the
    # early-stopping state (best epoch, bad epochs) differs from a fresh one: a resume must restore it.
    args = [
        *TRAIN_ARGS,
        "--data-root",
        tiny_voc,
        "--epochs",
        EPOCHS,
        "--workers",
        workers,
        "--lr",
        0.1,
        "--monitor",
        "val_miou",
        "--patience",
        5,
        *extra,
    ]
    run_a, run_b, log_b = tmp_path / "A", tmp_path / "B", tmp_path / "B.log"
    proc_b = _start_vocseg(["train", *args, "--out", run_b], subprocess_env(vocseg_cache), log_b)
    problem: list[str | None] = []
    killer = threading.Thread(target=lambda: problem.append(_kill_during_epoch_2(proc_b, run_b)), daemon=True)
    killer.start()
    try:
        rc_a, err_a = cli(["train", *args, "--out", run_a], capsys)
        killer.join(timeout=180)
    finally:
        if proc_b.poll() is None:
            proc_b.kill()
            proc_b.wait()
    assert rc_a == 0, err_a
    assert problem == [None], f"{problem}\n{log_b.read_text()}"

    crashed = load_checkpoint(run_b / "last.pt")
    assert 1 <= crashed["epoch"] < EPOCHS and len(crashed["history"]) == crashed["epoch"]
    assert not (run_b / "metrics.json").exists()
    # Everything an exact resume needs is in last.pt.
    assert {"model", "optimizer", "scaler", "early_stopping", "epoch", "history", "rng"} <= set(crashed)
    assert {"python", "numpy", "torch"} <= set(crashed["rng"])

    capsys.readouterr()
    assert main(["train", "--resume", str(run_b), "--no-progress"]) == 0
    assert f"resuming {run_b} after epoch {crashed['epoch']}" in capsys.readouterr().out

    last_a, last_b = load_checkpoint(run_a / "last.pt"), load_checkpoint(run_b / "last.pt")
    assert last_a["epoch"] == last_b["epoch"] == EPOCHS
    assert set(last_a) == set(last_b)
    for key in last_a:
        if key == "config":  # identical but for the run folder
            assert {**last_a[key], "out": None} == {**last_b[key], "out": None}
        elif key == "history":
            _assert_same(_without_seconds(last_a[key]), _without_seconds(last_b[key]), key)
        else:  # model weights, optimizer moments, scaler, early stopping, every RNG state
            _assert_same(last_a[key], last_b[key], key)
    best_a, best_b = load_checkpoint(run_a / "best.pt"), load_checkpoint(run_b / "best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    _assert_same(best_a["model"], best_b["model"], "best.model")

    hist_a, hist_b = history_rows(run_a / "history.csv"), history_rows(run_b / "history.csv")
    assert len(hist_a) == EPOCHS
    assert _without_seconds(hist_a) == _without_seconds(hist_b)  # train/val losses, mIoU, lr: same text
    metrics_a, metrics_b = (json.loads((r / "metrics.json").read_text()) for r in (run_a, run_b))
    metrics_a.pop("seconds_per_epoch"), metrics_b.pop("seconds_per_epoch")
    assert metrics_a == metrics_b


def test_resume_needs_last_pt(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    rc, err = cli(["train", "--resume", tmp_path / "run"], capsys)
    assert rc == 2 and f"cannot resume: {tmp_path / 'run' / 'last.pt'} not found" in err


def test_resume_and_overwrite_contradict(tmp_path: Path, capsys) -> None:
    rc, err = cli(["train", "--resume", tmp_path, "--overwrite"], capsys)
    assert rc == 2 and "--resume and --overwrite contradict each other" in err


# ----------------------------------------------------------------------------- non-finite loss


class _NaNGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward (the weights do not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison_training_step(monkeypatch, good_steps: int, how: str) -> None:
    """Make training step ``good_steps + 1`` (counting across epochs) non-finite. Evaluation runs under
    inference mode, so it is recognised by grad mode being off and left alone."""
    real = engine.weighted_ce_sums
    calls = {"n": 0}

    def poisoned(logits, target, weight, *args):
        total, w = real(logits, target, weight, *args)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > good_steps:
                total = total * float("nan") if how == "loss" else _NaNGrad.apply(total)
        return total, w

    monkeypatch.setattr(engine, "weighted_ce_sums", poisoned)


def _record_saves(monkeypatch) -> list[tuple[str, int, dict[str, torch.Tensor]]]:
    saves: list[tuple[str, int, dict[str, torch.Tensor]]] = []
    real = rundir_mod.save_checkpoint

    def recording(state, path):
        saves.append((Path(path).name, state["epoch"], {k: v.clone() for k, v in state["model"].items()}))
        real(state, path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", recording)
    return saves


def _assert_still_epoch_1(run: Path, saves) -> None:
    assert sorted((name, epoch) for name, epoch, _ in saves) == [("best.pt", 1), ("last.pt", 1)]
    epoch1 = saves[0][2]
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / name)
        assert ckpt["epoch"] == 1
        for key, value in ckpt["model"].items():
            assert torch.isfinite(value.float()).all(), f"{name}: {key} is not finite"
            assert torch.equal(value, epoch1[key]), f"{name}: {key} is not epoch 1's"
    assert len(load_checkpoint(run / "last.pt")["history"]) == 1
    assert len(history_rows(run / "history.csv")) == 1
    assert not (run / "metrics.json").exists()


# 12 training images, batch 4, drop_last: 3 steps per epoch. 4 good steps -> epoch 2, step 2 is bad.
@pytest.mark.parametrize("via", ["api", "cli"])
def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_good_checkpoints(
    via: str, tiny_voc: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    _poison_training_step(monkeypatch, good_steps=4, how="loss")
    saves = _record_saves(monkeypatch)
    run = tmp_path / "run"
    if via == "api":
        with pytest.raises(VocsegError) as e:
            quiet_train(tiny_config(tiny_voc, run, epochs=3))
        msg = str(e.value)
    else:
        rc, msg = cli(
            ["train", *TRAIN_ARGS, "--data-root", tiny_voc, "--out", run, "--epochs", 3, "--workers", 0], capsys
        )
        assert rc == 2 and msg.startswith("vocseg: error: non-finite training loss")
    assert "epoch 2" in msg and "step 2" in msg and "nan" in msg
    _assert_still_epoch_1(run, saves)


def test_non_finite_weights_after_a_finite_loss_are_not_saved(tiny_voc: Path, tmp_path: Path, monkeypatch) -> None:
    """The last step of epoch 2 has a finite loss but NaN gradients: the epoch ends with NaN weights
    (and a NaN validation loss), which must not replace last.pt."""
    _poison_training_step(monkeypatch, good_steps=5, how="grad")
    saves = _record_saves(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match="epoch 2") as e:
        quiet_train(tiny_config(tiny_voc, run, epochs=3))
    assert "non-finite" in str(e.value)
    _assert_still_epoch_1(run, saves)


def test_non_finite_loss_in_the_first_epoch_writes_no_checkpoint(tiny_voc: Path, tmp_path: Path, monkeypatch) -> None:
    _poison_training_step(monkeypatch, good_steps=0, how="loss")
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match=r"epoch 1, step 1"):
        quiet_train(tiny_config(tiny_voc, run))
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


# ----------------------------------------------------------------------------- existing run folders


def test_existing_run_is_refused_unless_resume_or_overwrite(tiny_voc: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "history.csv", "last.pt", "best.pt", "metrics.json"):
        (run / name).write_bytes(os.urandom(64))
    (run / "notes.txt").write_text("my notes")
    before = snapshot(run)
    argv = ["train", *TRAIN_ARGS, "--data-root", tiny_voc, "--out", run, "--epochs", 1, "--workers", 0]

    rc, err = cli(argv, capsys)
    assert rc == 2 and f"{run} already holds a run" in err
    assert "--resume" in err and "--overwrite" in err and "last.pt" in err
    with pytest.raises(VocsegError, match="already holds a run"):
        quiet_train(tiny_config(tiny_voc, run))
    assert snapshot(run) == before  # not a byte changed, nothing added

    rc, err = cli([*argv, "--overwrite"], capsys)
    assert rc == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # replaced by a real run
    assert (run / "notes.txt").read_text() == "my notes"  # files that are not part of a run are kept
