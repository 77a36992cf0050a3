"""Two-process data-parallel training through torchrun (gloo, CPU): the sharded evaluation must give
exactly the metrics a single process computes on the same checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.evaluate import evaluate_checkpoint


def test_torchrun_two_processes_matches_single_process_eval(tmp_path, monkeypatch):
    data = tmp_path / "data"
    generate_synthetic_voc(data, n_train=12, n_val=5, seed=1, max_side=64, workers=1)
    run = tmp_path / "run"
    env = {**os.environ, "VOCSEG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "vocseg",
        "train",
        "--model",
        "fcn",
        "--data-root",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--image-size",
        "32",
        "--workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        "--amp",
        "none",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Known intermittent gloo teardown abort on a loaded 2-core machine (about 1 run in 10 inside the
        # suite, never in 10 standalone runs; see the closing note): one fresh retry, the same assertions.
        shutil.rmtree(run, ignore_errors=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # only rank 0 reports
    metrics = json.loads((run / "metrics.json").read_text())
    monkeypatch.setenv("VOCSEG_CACHE", str(tmp_path / "cache"))
    single = evaluate_checkpoint(run / "best.pt", data, "val", device="cpu", num_workers=0, progress=False)
    for key in ("mean_iou", "pixel_accuracy", "fw_iou"):
        assert single[key] == pytest.approx(metrics[key], abs=1e-12), key
    assert single["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
