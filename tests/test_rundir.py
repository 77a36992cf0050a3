"""RunDir: the one owner of a run folder's file names, status, reading and writing, and its failures."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

import vocseg.rundir as rundir_mod
from vocseg.checkpoint import load_checkpoint
from vocseg.errors import VocsegError
from vocseg.rundir import DONE, EMPTY, INTERRUPTED, PARTIAL, RunDir


def _state(epoch: int) -> dict:
    return {"model": {"w": torch.full((3,), float(epoch))}, "epoch": epoch, "optimizer": {"lr": 1.0}}


def test_status_follows_the_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.status == EMPTY
    run.prepare(resume=False, overwrite=False)
    run.save_config({"model": "fcn"})
    assert run.status == PARTIAL
    run.save_epoch(_state(1), improved=True, best_keys_dropped=("optimizer",))
    assert run.status == INTERRUPTED
    run.write_metrics({"mean_iou": 0.5})
    assert run.status == DONE
    assert run.read_metrics() == {"mean_iou": 0.5} and run.read_config() == {"model": "fcn"}
    assert "optimizer" not in run.load_best() and "optimizer" in run.load_last()


def test_history_and_per_image_round_trip(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    rows = [
        {
            "epoch": 1,
            "train_loss": 1.5,
            "val_loss": 1.25,
            "val_miou": None,
            "val_pixel_accuracy": 0.5,
            "lr": 0.001,
            "seconds": 2.0,
        }
    ]
    run.write_history(rows)
    assert run.read_history() == rows
    inter, union = np.arange(6).reshape(2, 3), np.arange(6).reshape(2, 3) + 1
    run.write_per_image(["a", "b"], inter, union)
    back = run.read_per_image()
    assert list(back["ids"]) == ["a", "b"] and (back["intersection"] == inter).all() and (back["union"] == union).all()


def test_existing_run_is_refused_then_replaced_with_overwrite(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.save_config({"a": 1})
    with pytest.raises(VocsegError, match="already holds a run"):
        run.prepare(resume=False, overwrite=False)
    run.prepare(resume=False, overwrite=True)
    assert run.status == EMPTY


def test_no_space_left_names_the_path_and_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run = RunDir(tmp_path)
    run.save_epoch(_state(1), improved=True, best_keys_dropped=())

    def full_disk(data, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir_mod, "atomic_write_bytes", full_disk)
    monkeypatch.setattr("vocseg.checkpoint.atomic_write_bytes", full_disk)
    with pytest.raises(VocsegError) as e:
        run.save_epoch(_state(2), improved=True, best_keys_dropped=())
    msg = str(e.value)
    assert str(run.best_path) in msg and "No space left on device" in msg and "\n" not in msg
    assert load_checkpoint(run.last_path)["epoch"] == 1 and load_checkpoint(run.best_path)["epoch"] == 1


def test_a_folder_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VocsegError, match=r"cannot use .*file/run as the run folder: .*file is a file, not a folder"):
        RunDir(blocker / "run").prepare(resume=False, overwrite=False)
