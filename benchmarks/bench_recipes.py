"""Models and recipes at equal wall-clock time on the built-in synthetic data (docs/results.md).

    python benchmarks/bench_recipes.py --budget 15m                      # one after another
    python benchmarks/bench_recipes.py --budget 15m --cores-per-run 2    # side by side, each on its own cores
    python benchmarks/bench_recipes.py --budget 15m --seed 1 --runs strong_cpu/transfer_unet paper/transfer_unet

Runs (each ``vocseg train ... --budget``, trained from scratch, scored on the synthetic val split):

* ``strong_cpu/transfer_unet``: strong.yaml's recipe sized for a small machine (configs/strong_cpu.yaml:
  the ResNet-18 U-Net with strong.yaml's pieces sized for 2 CPU cores);
* ``strong_cpu-unweighted/transfer_unet``: v6 (below) without class weights (what they add);
* ``strong_cpu-no-tta/transfer_unet``: the same scored single-scale (what multi-scale testing adds);
* ``strong_cpu-v1`` to ``-v4`` and ``-v6`` (each ``/transfer_unet``): strong_cpu.yaml's earlier versions
  (v6: the current one without the aux head; v5 is v6, whose runs only spent more of the budget);
* ``strong_cpu-wd0.05``, ``-copy-paste``, ``-dice``, ``-aspp`` (on v3), ``-lr2e-3``, ``-all-train`` (on v4),
  ``-copy-paste1.0``, ``-all-train-v5``, ``-lr3e-4``, ``-lovasz``, ``-narrow-decoder``,
  ``-wide-decoder``, ``-inverse-sqrt``, ``-ema``, ``-r34``, ``-batch4``, ``-vflip``, ``-rotate15``, ``-aux``,
  ``-ls0.1`` (on v5/v6; each ``/transfer_unet``): a version of strong_cpu.yaml plus
  weight decay 0.05, copy-paste 0.5, ce+dice, ASPP, lr 0.002, training on all of train with the last
  epoch's weights and validation every 10th epoch, copy-paste on every crop, lr 0.0003, ce+lovasz,
  decoder widths 128-64-32-16 or 256-128-64-64, inverse-square-root class weights, a weight average
  with decay 0.999, a ResNet-34 encoder, batch 4, vertical flips, rotations of up to 15 degrees, the auxiliary
  FCN head on layer3 (weight 0.4; this is v7, the current version), or label smoothing 0.1 (what each
  adds at equal time);
* ``paper/transfer_unet``: the paper's final recipe (configs/weighted.yaml: Adam, native size, flips,
  class weights, cosine) for the same model with the same speed switches (issue 12);
* ``strong_cpu/unpool``: strong_cpu.yaml for the paper's best model (issue 11);
* ``peer-fp32`` and ``peer-bf16``: segmentation_models_pytorch's Unet-R34 plain loop (bench_peer.py).

With ``--cores-per-run N`` every run is pinned to its own N cores (``os.sched_setaffinity``) and given N
torch threads, so runs side by side do not share cores: the machine needs N x runs cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_peer import VOCSEG_ARGS

DEVICE = "cpu"  # the comparison is on CPU cores (the peer loop runs on the CPU too); --device changes it
STRONG_CPU = ["train", *VOCSEG_ARGS]
# strong_cpu.yaml's earlier versions, on which the variants below were measured (docs/results.md):
# v5/v6 are the current one (v7) without the aux head, v4 that without copy-paste, v3 that with AdamW at 1e-3
STRONG_CPU_V6 = [*STRONG_CPU, "--model-arg", "aux=false"]
STRONG_CPU_V4 = [*STRONG_CPU_V6, "--copy-paste", "0"]
STRONG_CPU_V3 = [*STRONG_CPU_V4, "--lr", "0.001"]
ALL_TRAIN = ["--val-holdout", "0", "--monitor", "last", "--val-every", "10"]
RUNS: dict[str, list[str]] = {
    "strong_cpu/transfer_unet": STRONG_CPU,
    "strong_cpu-unweighted/transfer_unet": [*STRONG_CPU_V6, "--class-weighting", "none"],
    "strong_cpu-no-tta/transfer_unet": [*STRONG_CPU, "--tta", "none"],
    # strong_cpu.yaml's earlier versions (docs/results.md): v1, strong.yaml's rescale 0.5-2.0 with 128 crops
    # and single-scale testing; v2, 192 crops at 0.75-1.5 tested at mmsegmentation's six scales; v3, v4
    "strong_cpu-v1/transfer_unet": [
        *STRONG_CPU_V3,
        *("--image-size", "128", "--scale-range", "0.5", "2.0", "--tta", "none"),
    ],
    "strong_cpu-v2/transfer_unet": [
        *STRONG_CPU_V3,
        *("--image-size", "192", "--scale-range", "0.75", "1.5"),
        *("--tta-scales", "0.5", "0.75", "1.0", "1.25", "1.5", "1.75"),
    ],
    "strong_cpu-v3/transfer_unet": STRONG_CPU_V3,
    "strong_cpu-v4/transfer_unet": STRONG_CPU_V4,
    # one more piece each, on the version it was measured on (docs/results.md, "Tried on top of strong_cpu.yaml")
    "strong_cpu-wd0.05/transfer_unet": [*STRONG_CPU_V3, "--weight-decay", "0.05"],
    "strong_cpu-copy-paste/transfer_unet": [*STRONG_CPU_V3, "--copy-paste", "0.5"],
    "strong_cpu-dice/transfer_unet": [*STRONG_CPU_V3, "--loss", "ce+dice"],
    "strong_cpu-aspp/transfer_unet": [*STRONG_CPU_V3, "--model-arg", "aspp=true"],
    "strong_cpu-lr2e-3/transfer_unet": [*STRONG_CPU_V4, "--lr", "0.002"],
    # every train image, no checkpoint choice, curves on val every 10th epoch (the field's protocol)
    "strong_cpu-all-train/transfer_unet": [*STRONG_CPU_V4, *ALL_TRAIN],
    "strong_cpu-copy-paste1.0/transfer_unet": [*STRONG_CPU_V6, "--copy-paste", "1.0"],
    "strong_cpu-all-train-v5/transfer_unet": [*STRONG_CPU_V6, *ALL_TRAIN],
    "strong_cpu-lr3e-4/transfer_unet": [*STRONG_CPU_V6, "--lr", "0.0003"],
    "strong_cpu-lovasz/transfer_unet": [*STRONG_CPU_V6, "--loss", "ce+lovasz"],
    "strong_cpu-inverse-sqrt/transfer_unet": [*STRONG_CPU_V6, "--class-weighting", "inverse_sqrt"],
    "strong_cpu-ema/transfer_unet": [*STRONG_CPU_V6, "--ema-decay", "0.999"],
    "strong_cpu-narrow-decoder/transfer_unet": [*STRONG_CPU_V6, "--model-arg", "decoder_channels=[128,64,32,16]"],
    "strong_cpu-wide-decoder/transfer_unet": [*STRONG_CPU_V6, "--model-arg", "decoder_channels=[256,128,64,64]"],
    "strong_cpu-r34/transfer_unet": [*STRONG_CPU_V6, "--model-arg", "encoder=resnet34"],
    "strong_cpu-batch4/transfer_unet": [*STRONG_CPU_V6, "--batch-size", "4"],
    "strong_cpu-vflip/transfer_unet": [*STRONG_CPU_V6, "--vflip", "0.5"],
    "strong_cpu-rotate15/transfer_unet": [*STRONG_CPU_V6, "--rotate", "15"],
    "strong_cpu-aux/transfer_unet": [*STRONG_CPU_V6, "--model-arg", "aux=true"],  # = v7, the current one
    "strong_cpu-ls0.1/transfer_unet": [*STRONG_CPU_V6, "--label-smoothing", "0.1"],
    "strong_cpu-v6/transfer_unet": STRONG_CPU_V6,
    "paper/transfer_unet": [
        "train",
        "--config",
        "configs/weighted.yaml",
        "--model",
        "transfer_unet",
        *("--model-arg", "encoder=resnet18", "--model-arg", "pretrained=false", "--model-arg", "aspp=false"),
        "--channels-last",  # the same speed switches as strong_cpu.yaml: only the recipe differs
        "--patience",
        "null",
    ],
    "strong_cpu/unpool": [*STRONG_CPU, "--model", "unpool"],  # config rewritten: see command()
    "peer-fp32": ["peer-fp32"],
    "peer-bf16": ["peer-bf16"],
}


def command(name: str, budget: str, out: Path, threads: int | None, seed: int = 0) -> list[str]:
    spec = RUNS[name]
    if spec[0].startswith("peer"):
        cmd = [
            sys.executable,
            "benchmarks/bench_peer.py",
            "--which",
            spec[0],
            "--budget",
            budget,
            "--out",
            str(out / name.replace("/", "_")),
            "--seed",
            str(seed),
        ]
        return cmd + (["--threads", str(threads)] if threads else [])
    args = list(spec)
    if "unpool" in spec:  # unpool takes no encoder arguments: strong_cpu.yaml without its model_kwargs
        args = _with_config(args, _strong_cpu_without_model_kwargs(out))
    return [
        sys.executable,
        "-m",
        "vocseg",
        *args,
        "--budget",
        budget,
        "--out",
        str(out / name.replace("/", "_")),
        "--no-progress",
        "--overwrite",
        "--device",
        DEVICE,
        "--seed",
        str(seed),
    ]


def _strong_cpu_without_model_kwargs(out: Path) -> Path:
    import yaml

    cfg = yaml.safe_load(Path("configs/strong_cpu.yaml").read_text())
    cfg["model_kwargs"] = {}
    path = out / "strong_cpu-no-model-kwargs.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _with_config(args: list[str], config: Path) -> list[str]:
    return [str(config) if a == "configs/strong_cpu.yaml" else a for a in args]


def launch(name: str, cmd: list[str], cores: list[int] | None, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if cores:
        env.update(OMP_NUM_THREADS=str(len(cores)), MKL_NUM_THREADS=str(len(cores)))
    preexec = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, preexec_fn=preexec)


def result(name: str, out: Path) -> dict:
    folder = out / name.replace("/", "_")
    if RUNS[name][0].startswith("peer"):
        r = json.loads((folder / f"{RUNS[name][0]}.json").read_text())
        return {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"], "steps": r["steps"]}
    m = json.loads((folder / "metrics.json").read_text())
    return {"miou": m["mean_iou"], "pixel_accuracy": m["pixel_accuracy"], "steps": m.get("steps")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="15m")
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--out", default="bench-recipes")
    p.add_argument("--cores-per-run", type=int, default=None, help="run side by side, each pinned to N cores")
    p.add_argument("--first-core", type=int, default=0)
    p.add_argument("--device", default="cpu", help="device of the vocseg runs (the peer runs on the CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (the peer loop's too)")
    args = p.parse_args()
    global DEVICE
    DEVICE = args.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs, t0 = {}, time.perf_counter()
    for i, name in enumerate(args.runs):
        cores = None
        if args.cores_per_run:
            start = args.first_core + i * args.cores_per_run
            cores = list(range(start, start + args.cores_per_run))
        cmd = command(name, args.budget, out, args.cores_per_run, args.seed)
        print(f"{name}: {' '.join(cmd)}" + (f"  [cores {cores}]" if cores else ""), flush=True)
        procs[name] = launch(name, cmd, cores, out / f"{name.replace('/', '_')}.log")
        if not args.cores_per_run:
            procs[name].wait()
    for proc in procs.values():
        proc.wait()
    print(f"\nall runs done in {time.perf_counter() - t0:.0f} s; budget {args.budget} each")
    print(f"{'run':<24} {'mIoU':>7} {'pixel acc':>9} {'steps':>7}")
    for name in args.runs:
        try:
            r = result(name, out)
            print(f"{name:<24} {r['miou']:>7.4f} {r['pixel_accuracy']:>9.4f} {r['steps'] or '-':>7}")
        except (OSError, ValueError, KeyError) as e:
            print(f"{name:<24} failed ({e}); see {out / (name.replace('/', '_') + '.log')}")


if __name__ == "__main__":
    main()
