"""The planned recipe against the fixed one and the peer, on every dataset family, at equal wall time.

On each family (`vocseg synth --family NAME`, generated once under --data-dir), side by side in one run:

* ``auto``: `vocseg train --recipe auto --budget B` (planning, fingerprint included, counts in the budget);
* ``strong_cpu``: `vocseg train --config strong_cpu --budget B`, the fixed recipe tuned on the built-in data;
* ``peer-fp32`` / ``peer-bf16``: segmentation_models_pytorch's Unet-R34 plain loop (bench_peer.py);
* ``auto+TAG`` for each ``--variant TAG=FLAGS``: the plan with FLAGS overriding it (an ablation of one rule's
  choice; benchmarks/lofo.py fits each such choice leave-one-family-out on the results).

Every contender runs in its own process, one after another, and is scored by vocseg's confusion matrix on
the family's val split. Ratios are printed per family (auto / peer, auto / strong_cpu).

    pip install -e ".[bench]"
    python benchmarks/bench_auto.py --budget 5m --families builtin shape_texture --which auto strong_cpu peer-fp32
    python benchmarks/bench_auto.py --budget 5m --which auto --variant "crop128=--image-size 128"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CONTENDERS = ("auto", "strong_cpu", "peer-fp32", "peer-bf16")


def family_root(name: str, data_dir: Path, seed: int) -> Path:
    """The family's dataset, generated on first use."""
    from vocseg.data.families import generate_family

    root = data_dir / f"{name}-s{seed}"
    voc = root / "VOCdevkit" / "VOC2012"
    if not (voc / "class_names.txt").is_file():
        generate_family(name, root, seed=seed)
    return voc


def run_train(args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "vocseg", "train", *args, "--out", str(out), "--no-progress", "--overwrite"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    (out.parent / f"{out.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"miou": None, "error": (done.stderr or done.stdout).strip().splitlines()[-1:], "seconds": 0}
    m = json.loads((out / "metrics.json").read_text())
    return {"miou": m["mean_iou"], "steps": m.get("steps"), "seconds": time.perf_counter() - t0}


def run_peer(root: Path, budget: str, bf16: bool, out: Path, seed: int) -> dict:
    which = "peer-bf16" if bf16 else "peer-fp32"
    cmd = [sys.executable, str(HERE / "bench_peer.py"), "--which", which, "--budget", budget, "--data-root",
           str(root), "--out", str(out), "--seed", str(seed)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    (out / f"{which}.log").parent.mkdir(parents=True, exist_ok=True)
    (out / f"{which}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return {"miou": None, "error": done.stderr.strip().splitlines()[-1:], "seconds": 0}
    return json.loads((out / f"{which}.json").read_text())


def run_family(name: str, args: argparse.Namespace) -> dict:
    root = family_root(name, Path(args.data_dir), args.data_seed)
    out = Path(args.out) / args.budget / name / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    common = ["--data-root", str(root), "--budget", args.budget, "--seed", str(args.seed)]
    row: dict = {}
    for which in args.which:
        if which == "auto":
            row[which] = run_train(["--recipe", "auto", *common], out / "auto")
        elif which == "strong_cpu":
            row[which] = run_train(["--config", "strong_cpu", *common], out / "strong_cpu")
        else:
            row[which] = run_peer(root, args.budget, which == "peer-bf16", out, args.seed)
        print(f"  {name} {which}: {row[which]}", flush=True)
    for tag, flags in args.variant:
        row[f"auto+{tag}"] = run_train(["--recipe", "auto", *common, *flags], out / f"auto+{tag}")
        print(f"  {name} auto+{tag}: {row[f'auto+{tag}']}", flush=True)
    # Merged into the family's earlier results, so a later --variant run adds a column and loses none.
    done = out / "results.json"
    merged = {**(json.loads(done.read_text()) if done.exists() else {}), **row}
    done.write_text(json.dumps(merged, indent=1))
    return merged


def _variant(text: str) -> tuple[str, list[str]]:
    tag, sep, flags = text.partition("=")
    if not sep or not tag or not flags.strip():
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected TAG=FLAGS, e.g. 'crop128=--image-size 128'")
    return tag, shlex.split(flags)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def main() -> None:
    from vocseg.data.families import family_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="15m")
    p.add_argument("--families", nargs="+", default=family_names(), choices=family_names())
    p.add_argument("--which", nargs="*", default=list(CONTENDERS[:3]), choices=CONTENDERS)
    p.add_argument("--seed", type=int, default=0, help="training seed of every contender")
    p.add_argument("--data-seed", type=int, default=0, help="seed the families are generated with")
    p.add_argument("--data-dir", default="bench-auto/data")
    p.add_argument("--out", default="bench-auto")
    p.add_argument("--variant", type=_variant, action="append", default=[], metavar="TAG=FLAGS",
                   help="also run the plan with these train flags overriding it, as auto+TAG (repeatable)")  # fmt: skip
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; budget {args.budget}; seed {args.seed}", flush=True)  # fmt: skip
    rows = {name: run_family(name, args) for name in args.families}
    cols = [*args.which, *(f"auto+{tag}" for tag, _ in args.variant)]
    head = "".join(f"{w:>14}" for w in cols)
    print(f"\n{'family':<18}{head}{'auto/peer32':>13}{'auto/peer16':>13}{'auto/strong':>13}")
    for name, row in rows.items():
        m = {w: row[w].get("miou") for w in cols}
        cells = "".join(f"{v:>14.4f}" if v is not None else f"{'failed':>14}" for v in m.values())
        ratios = [_ratio(m.get("auto"), m.get(w)) for w in ("peer-fp32", "peer-bf16", "strong_cpu")]
        print(f"{name:<18}{cells}" + "".join(f"{r:>13}" for r in ratios))


if __name__ == "__main__":
    main()
