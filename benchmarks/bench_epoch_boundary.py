"""What training waits for between epochs, in isolation: vocseg's own training run, every step timed.

    python benchmarks/bench_epoch_boundary.py --data-root /tmp/synth500                     # strong.yaml
    python benchmarks/bench_epoch_boundary.py --data-root D --set augment_ahead=false --set augment_ahead=true
    python benchmarks/bench_epoch_boundary.py --override image_size=64 --override batch_size=4 \\
        --override max_train_images=64 --epochs 3 --set "augment_on=device augment_ahead=true"  # a CPU dry run

Each variant (one per --set, or the config as it is) trains --epochs epochs in this process through
``vocseg.training.train.train``: the persistent loader, the background checkpoints, history and curves as a
run has them, validation only after the last epoch (validation is the one wait the issue allows, and it is
timed apart in history.csv). The clock reads after every optimizer step; a step's loss is read back
(``loss.item()``) before its backward is queued, so the interval between two reads is one step as the GPU
runs it, give or take one backward. The median interval within epochs is the steady step; each interval
that crosses an epoch boundary, less that median, is what the boundary costs (the loader's next first
batch, the epoch's bookkeeping, a checkpoint handed to its thread). The GPU still has the last backward
queued when the host reaches the boundary, so this is an upper bound on its idle time there.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

import vocseg.training.train as train_module
from vocseg.config import load_config, replace


class StepTimes:
    """Records the clock after every step (``Session.after_step``) and as each epoch's training pass starts and
    ends (``train_one_epoch``, called once the epoch's loader is set), by wrapping both for the run."""

    def __init__(self) -> None:
        self.steps: list[list[float]] = []  # per epoch: the clock after each step
        self.passes: list[tuple[float, float]] = []  # per epoch: (training pass entered, left)
        self._after_step = train_module.Session.after_step
        self._train_one_epoch = train_module.train_one_epoch

    def __enter__(self) -> StepTimes:
        clock = self

        def after_step(session) -> bool:
            clock.steps[-1].append(time.perf_counter())
            return clock._after_step(session)

        def train_one_epoch(*args, **kwargs):
            clock.steps.append([])
            entered = time.perf_counter()
            try:
                return clock._train_one_epoch(*args, **kwargs)
            finally:
                clock.passes.append((entered, time.perf_counter()))

        train_module.Session.after_step = after_step
        train_module.train_one_epoch = train_one_epoch
        return self

    def __exit__(self, *exc) -> None:
        train_module.Session.after_step = self._after_step
        train_module.train_one_epoch = self._train_one_epoch

    def summary(self) -> dict:
        """The steady step (median interval within epochs) and, per boundary, what it costs beyond a step:
        ``end`` (last step to the pass's return), ``between`` (bookkeeping, checkpoint hand-off, the next
        loader) and ``first`` (entering the next pass to its first step, less one steady step)."""
        step = statistics.median(b - a for marks in self.steps for a, b in itertools.pairwise(marks))
        parts = {"end": [], "between": [], "first": []}
        for k in range(len(self.steps) - 1):
            parts["end"].append(self.passes[k][1] - self.steps[k][-1])
            parts["between"].append(self.passes[k + 1][0] - self.passes[k][1])
            parts["first"].append(self.steps[k + 1][0] - self.passes[k + 1][0] - step)
        total = [sum(p) for p in zip(*parts.values())]
        return {"step_s": step, "parts": parts, "total": total, "steps": sum(map(len, self.steps))}


def run_variant(cfg) -> dict:
    """Train ``cfg`` (into its ``out``): its step times and the history's seconds per epoch."""
    with StepTimes() as clock:
        result = train_module.train(cfg, overwrite=True, progress=False, log=lambda *_: None)
    summary = clock.summary()
    summary["epoch_s"] = [row["seconds"] for row in result.history]
    return summary


def parse_pairs(pairs: list[str]) -> dict:
    """KEY=VALUE strings (YAML values) as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/strong.yaml")
    ap.add_argument("--data-root", default=None, help="a VOC tree (default: the built-in synthetic data)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--override", action="append", default=[], help="KEY=VALUE for every variant")
    ap.add_argument(
        "--set", action="append", default=[], help="'KEY=VALUE [KEY=VALUE ...]': one variant each, in order"
    )
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: a boundary needs two epochs")
    base = load_config(args.config, {"data_root": args.data_root, "train_split": args.train_split})
    base = replace(base, **parse_pairs(args.override))
    # speed does not depend on the weights, and none can be downloaded where this runs
    kwargs = {**base.model_kwargs, "pretrained": False} if base.model.startswith("transfer") else base.model_kwargs
    base = replace(base, model_kwargs=kwargs, epochs=args.epochs, iters=None, budget=None, val_every=args.epochs,
                   tta="none", warmup_iters=0, patience=None)  # fmt: skip
    variants = [(s, parse_pairs(s.split())) for s in args.set] or [("as configured", {})]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(
        f"{args.config}, {args.epochs} epochs, batch {base.batch_size} x {base.image_size}; {gpu}; torch {torch.__version__}"
    )
    print(f"{'variant':<40} {'steps':>5} {'step ms':>8}  boundary ms, median (each): total = end + between + first")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, changes) in enumerate(variants):
            r = run_variant(replace(base, out=str(Path(tmp) / f"v{i}"), **changes))
            ms = {k: statistics.median(v) * 1e3 for k, v in r["parts"].items()}
            each = " ".join(f"{t * 1e3:.0f}" for t in r["total"])
            print(f"{label:<40} {r['steps']:>5} {r['step_s'] * 1e3:>8.1f}  {statistics.median(r['total']) * 1e3:.0f} "
                  f"({each}) = {ms['end']:.0f} + {ms['between']:.0f} + {ms['first']:.0f}; "
                  f"{statistics.median(r['total']) / r['step_s']:.2f} steps", flush=True)  # fmt: skip
            print(f"{'':<40} epochs s: {' '.join(f'{x:.1f}' for x in r['epoch_s'])} (the last validates)", flush=True)


if __name__ == "__main__":
    main()
