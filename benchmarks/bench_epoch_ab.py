"""Epoch time of one config with one key set two ways, alternating: what a choice costs per step in the loop.

    python benchmarks/bench_epoch_ab.py RUN/config.yaml photometric=true photometric=false [--epochs 3] [--rounds 2]

Compares choices that should not change the step count (an augmentation, a loader setting) without the
noise of separate budget runs: on a 2-core cloud machine the steps two 15-minute runs make, one after the
other, can differ by 30% (docs/results.md, the eighth session). Each side trains ``--epochs`` epochs without
a budget, validating only after the last, in its own process; the sides alternate ``--rounds`` times. The
median epoch time (each run's first epoch left out: it pays for the cache and the first step) is printed
per side, with the ratio A/B.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml


def run_side(base: dict, key: str, value, epochs: int, out: Path) -> list[float]:
    """Train ``base`` with ``key: value`` for ``epochs`` epochs; the seconds of each epoch."""
    cfg = {**base, key: value, "budget": None, "iters": None, "epochs": epochs, "val_every": epochs,
           "tta": "none", "out": str(out)}  # fmt: skip
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "vocseg", "train", "--config", str(path), "--no-progress", "--overwrite"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{key}={value}: training failed: {(done.stderr or done.stdout).strip()[-500:]}")
    with open(out / "history.csv", newline="") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="a run's config.yaml (a plan's, for example)")
    ap.add_argument("a", help="KEY=VALUE (YAML value) for side A")
    ap.add_argument("b", help="KEY=VALUE for side B: the same key")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    (key, a), (key_b, b) = (side.split("=", 1) for side in (args.a, args.b))
    if key != key_b:
        sys.exit(f"both sides must set the same key, got {key!r} and {key_b!r}")
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2: each run's first epoch is left out")
    base = yaml.safe_load(args.config.read_text())
    medians: dict[str, list[float]] = {args.a: [], args.b: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label, side, value in (("a", args.a, a), ("b", args.b, b)):
                secs = run_side(base, key, yaml.safe_load(value), args.epochs, Path(tmp) / f"round{r}-{label}")
                medians[side].append(statistics.median(secs[1:]))
                print(f"round {r} {side}: epochs {[round(x, 1) for x in secs]} s", flush=True)
    ma, mb = (statistics.median(medians[side]) for side in (args.a, args.b))
    print(f"median epoch: {args.a} {ma:.2f} s, {args.b} {mb:.2f} s, A/B {ma / mb:.2f}")


if __name__ == "__main__":
    main()
