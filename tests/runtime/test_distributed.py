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
from vocseg.evaluation.evaluate import evaluate_checkpoint


@pytest.mark.slow
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


# Two ranks plan a time budget from clocks that disagree (rank 1's steps take twice as long): both must
# follow rank 0's plan, or the rank that planned fewer steps leaves the other waiting in an all-reduce.
# Each rank prints the plan it makes alone (before joining the group), then the plan it follows.
_PLAN_ON_RANK = """
import sys, torch, torch.distributed as dist
import vocseg.training.lr_schedule as sr
from vocseg.config import Config
rank, init_file = int(sys.argv[1]), sys.argv[2]
sr.clock = lambda: 10.0  # 10 s of the budget spent, on every rank
def plan():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    steps = sr.LrSchedule(Config(budget="60s", warmup_iters=0), optimizer, spe=10, num_eval_images=4, started=0.0)
    steps.step_seconds, steps.eval_seconds = 0.1 * (rank + 1), 1.0
    steps._plan(replan=True)
    return steps.total_steps
alone = plan()
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
print(alone, plan())
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_follow_rank_zeros_budget_plan(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    init = tmp_path / "init"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PLAN_ON_RANK, str(rank), str(init)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    (alone0, plan0), (alone1, plan1) = ([int(v) for v in out.split()] for out, _ in outs)
    assert alone0 > alone1  # the clocks disagree (rank 1 alone would plan fewer steps) ...
    assert plan0 == plan1 == alone0  # ... and both ranks follow rank 0's plan
