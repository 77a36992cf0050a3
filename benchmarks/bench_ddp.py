"""Data-parallel scaling: 1 process against N processes (torchrun, gloo on CPU or NCCL on GPUs).

    python benchmarks/bench_ddp.py [--procs 2] [--images 96] [--epochs 2]

Trains the baseline FCN for --epochs on the same --images training images with the same total batch
(8 per step: 8 per process for 1 process, 8/N for N processes), so both do the same optimisation, and
reports the median seconds per epoch (the epoch after the first) and the speed-up. On a machine with
fewer cores than N x torch threads, processes compete for cores: the scaling printed is what you get.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(procs: int, args, out: Path) -> float:
    common = [
        "train",
        "--model",
        "fcn",
        "--epochs",
        str(args.epochs),
        "--max-train-images",
        str(args.images),
        "--max-val-images",
        "16",
        "--image-size",
        "128",
        "--batch-size",
        str(8 // procs),
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
        "--overwrite",
        "--device",
        "cpu",
    ]
    if procs == 1:
        cmd = [sys.executable, "-m", "vocseg", *common]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={procs}",
            "-m",
            "vocseg",
            *common,
        ]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // procs)))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out / "history.csv") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    later = sorted(seconds[1:]) or seconds  # the first epoch pays for start-up
    return later[len(later) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp) / "one")
        many = run(args.procs, args, Path(tmp) / "many")
    print(f"machine: {os.cpu_count()} cores; fcn, {args.images} images, total batch 8, 128 px crops, CPU (gloo)")
    print(f"1 process:   {one:6.1f} s/epoch")
    print(f"{args.procs} processes: {many:6.1f} s/epoch")
    print(f"speed-up:    {one / many:6.2f}x (ideal {args.procs}x)")


if __name__ == "__main__":
    main()
