"""--tensorboard: scalars, per-class IoU and sample overlays are in the event file, read back."""

from __future__ import annotations

import pytest

from vocseg.config import Config
from vocseg.training.train import train


def test_event_file_holds_scalars_per_class_iou_and_overlays_of_validated_epochs(
    tiny_voc, tmp_path, monkeypatch, torch_global_state
):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    cfg = Config(
        model="fcn",
        data_root=str(tiny_voc),
        out=str(tmp_path / "run"),
        epochs=3,
        val_every=2,  # validated after epochs 2 and 3: epoch 1 logs its training scalars only
        batch_size=4,
        image_size=48,
        num_workers=0,
        amp="none",
        tensorboard=True,
    )
    train(cfg, progress=False, log=lambda *_: None)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_miou", "lr", "val_iou/background"} <= scalars
    assert [e.step for e in acc.Scalars("train_loss")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("val_loss")] == [2, 3]
    images = acc.Images("val_samples")
    assert [e.step for e in images] == [2, 3] and images[0].width > 0 and images[0].height > 0
