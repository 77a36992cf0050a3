"""vocseg.runtime.files: snapshots and background writes, and output paths created or refused up front."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from vocseg.errors import VocsegError
from vocseg.runtime.files import BackgroundWriter, atomic_write_bytes, detached_copy, output_dir, output_file

# ----------------------------------------------------------------------------- background writes


def test_detached_copy_is_a_snapshot_training_cannot_change() -> None:
    """Parameters and optimizer moments change in place after the snapshot: the copy must not follow."""
    w = torch.ones(3, requires_grad=True)
    state = {"model": {"w": w}, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}, "history": [{"e": 1}]}
    snap = detached_copy(state)
    with torch.no_grad():
        w.add_(1.0)
    state["optimizer"]["state"][0]["exp_avg"].fill_(5.0)
    state["history"].append({"e": 2})
    assert torch.equal(snap["model"]["w"], torch.ones(3)) and not snap["model"]["w"].requires_grad
    assert torch.equal(snap["optimizer"]["state"][0]["exp_avg"], torch.zeros(3))
    assert snap["history"] == [{"e": 1}]


def test_background_writes_land_in_order_off_the_calling_thread() -> None:
    writer, done, threads = BackgroundWriter(), [], set()

    def write(i: int) -> None:
        threads.add(threading.get_ident())
        done.append(i)

    for i in range(5):
        writer.submit(write, i)
    writer.close()
    assert done == [0, 1, 2, 3, 4] and threading.get_ident() not in threads


def test_a_failed_background_write_raises_in_the_training_thread(tmp_path: Path) -> None:
    """The error (naming the file) surfaces at the next submit, or at close: never lost in the thread."""
    target = tmp_path / "missing-folder" / "last.pt"
    writer = BackgroundWriter()
    writer.submit(atomic_write_bytes, b"x", target)
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        writer.submit(lambda: None)
    writer.submit(atomic_write_bytes, b"x", target)
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        writer.close()


# ----------------------------------------------------------------------------- output paths


def test_output_dir_creates_the_folder_and_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    assert output_dir(target) == target and target.is_dir()
    assert output_dir(target) == target  # an existing folder is fine


def test_output_dir_under_a_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "FILE"
    blocker.write_text("x")
    with pytest.raises(VocsegError, match=rf"cannot use {blocker}/masks as the output folder: {blocker} is a file"):
        output_dir(blocker / "masks")
    with pytest.raises(VocsegError, match=rf"{blocker} as the run folder: it is a file, not a folder"):
        output_dir(blocker, "run folder")
    with pytest.raises(VocsegError, match="is a file"):
        output_dir(blocker / "x", create=False)
    assert blocker.read_text() == "x"


def test_output_dir_check_only_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "later" / "out"
    assert output_dir(target, create=False) == target and not (tmp_path / "later").exists()


def test_output_file_refuses_a_folder_an_existing_file_and_a_file_parent(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(VocsegError, match="is a folder; give a file name"):
        output_file(tmp_path / "dir.onnx")
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"old")
    with pytest.raises(VocsegError, match="already exists"):
        output_file(existing)
    assert output_file(existing, overwrite=True) == existing and existing.read_bytes() == b"old"
    with pytest.raises(VocsegError, match=f"{existing} as the folder of the output file: it is a file"):
        output_file(existing / "model.onnx")
