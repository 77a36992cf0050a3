"""Training with ``augment_on: device`` (vocseg.data.device_augment) on CPU: batches finished by DeviceAugment,
the same draws as ``augment_on: workers``, a run that is reproducible and resumes exactly, and the same run with
``augment_ahead``."""

from __future__ import annotations

import threading

import pytest
import torch

import vocseg.data.device_augment as device_augment
from helpers import quiet_train, tiny_config
from vocseg.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")

RECIPE = dict(photometric=True, copy_paste=0.5, lr=0.01)  # every step the device path does, rotation aside


def test_one_epoch_on_the_device_matches_the_workers(tiny_voc, tmp_path, monkeypatch):
    """The same seed draws the same crops either way; the images differ by interpolation rounding (at most a
    few levels of 255 on some pixels), so the losses agree closely but not exactly."""
    shapes = []
    finish = device_augment.DeviceAugment.__call__

    def spy(self, batch):
        images, masks = finish(self, batch)
        shapes.append((tuple(images.shape), images.dtype, tuple(masks.shape), masks.dtype))
        return images, masks

    monkeypatch.setattr(device_augment.DeviceAugment, "__call__", spy)
    workers = quiet_train(tiny_config(tiny_voc, tmp_path / "workers", epochs=1, augment_on="workers", **RECIPE))
    assert shapes == []  # the workers' path does not call DeviceAugment
    device = quiet_train(tiny_config(tiny_voc, tmp_path / "device", epochs=1, augment_on="device", **RECIPE))
    # 12 images, batches of 4 at 48 px (drop_last keeps 3 full batches)
    assert shapes == [((4, 3, 48, 48), torch.float32, (4, 48, 48), torch.int64)] * 3
    (row_w,), (row_d,) = workers.history, device.history
    assert row_d["train_loss"] == pytest.approx(row_w["train_loss"], rel=1e-3)
    assert row_d["val_loss"] == pytest.approx(row_w["val_loss"], rel=1e-2)


def test_device_path_is_reproducible_and_resumes_exactly(tiny_voc, tmp_path):
    """Run A trains 2 epochs; run B trains 1, then resumes for the second: same weights, same history."""
    a = quiet_train(tiny_config(tiny_voc, tmp_path / "a", epochs=2, augment_on="device", **RECIPE))
    quiet_train(tiny_config(tiny_voc, tmp_path / "b", epochs=1, augment_on="device", **RECIPE))
    b = quiet_train(
        tiny_config(tiny_voc, tmp_path / "b", epochs=1, augment_on="device", **RECIPE),
        resume=True,
        changes={"epochs": 2},
    )
    drop_seconds = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop_seconds(a.history) == drop_seconds(b.history) and len(a.history) == 2
    last_a, last_b = load_checkpoint(a.run_dir / "last.pt"), load_checkpoint(b.run_dir / "last.pt")
    for name, tensor in last_a["model"].items():
        assert torch.equal(tensor, last_b["model"][name]), name


@pytest.mark.parametrize("workers", [0, 1], ids=["main-process-loading", "one-worker"])
def test_augment_ahead_trains_as_inline(tiny_voc, tmp_path, monkeypatch, workers):
    """augment_ahead finishes the same batches on a thread of its own (which then also drives the loader and
    its worker): the same history and weights exactly, and DeviceAugment really ran on another thread."""
    threads = set()
    finish = device_augment.DeviceAugment.__call__

    def spy(self, batch):
        threads.add(threading.get_ident())
        return finish(self, batch)

    monkeypatch.setattr(device_augment.DeviceAugment, "__call__", spy)
    options = dict(epochs=2, augment_on="device", num_workers=workers, **RECIPE)
    inline = quiet_train(tiny_config(tiny_voc, tmp_path / "inline", **options))
    assert threads == {threading.get_ident()}
    threads.clear()
    ahead = quiet_train(tiny_config(tiny_voc, tmp_path / "ahead", augment_ahead=True, **options))
    assert threads and threading.get_ident() not in threads
    drop_seconds = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop_seconds(ahead.history) == drop_seconds(inline.history)
    last_i, last_a = load_checkpoint(inline.run_dir / "last.pt"), load_checkpoint(ahead.run_dir / "last.pt")
    for name, tensor in last_i["model"].items():
        assert torch.equal(tensor, last_a["model"][name]), name
    assert not [t for t in threading.enumerate() if t.name == "vocseg-prefetch"]
