"""One rule's choice ablated at equal optimizer steps, on every dataset family: immune to the machine's speed.

At equal wall time (bench_auto.py) a variant's score mixes what its choice does with how many steps the
machine gave it that run, and this machine's speed drifts between consecutive runs by up to 30%
(docs/results.md). Here each family's plan is made once (`vocseg plan --budget B`, kept in the family's
folder so a rerun trains the same config) and trained for the steps the plan estimated for that budget,
without a budget, with the loader in the main process: the plan and each variant then see the same steps,
batches and augmentation draws, and differ only in the keys the variant sets.

The results are written as bench_auto.py writes them (``auto`` and ``auto+TAG`` per family), so
benchmarks/lofo.py fits each variant's choice leave-one-family-out on them:

    python benchmarks/bench_equal_steps.py --budget 5m --variant photometric_off=photometric=false \\
        --variant photometric_on=photometric=true
    python benchmarks/lofo.py --out bench-equal --budget 5m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import yaml

from bench_auto import family_root, run_train


def family_plan(root: Path, budget: str, folder: Path, seed: int) -> tuple[dict[str, Any], int]:
    """The family's planned config (with training seed ``seed``) and its estimated steps: planned once, kept in
    the family's folder, so every seed trains the same plan (a re-plan times steps again and may differ)."""
    from vocseg.training.planner import make_plan

    saved = folder / "plan.json"
    if not saved.is_file():
        plan = make_plan(root, budget, log=lambda *_: None)
        saved.write_text(json.dumps({"config": plan.config.to_dict(), "steps": plan.recipe.steps}, indent=1))
    done = json.loads(saved.read_text())
    return {**done["config"], "seed": seed}, done["steps"]


def run_config(config: dict[str, Any], steps: int, out: Path) -> dict:
    """Train ``config`` for ``steps`` steps, no budget, loading in the main process (the same draws each time)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump({**config, "budget": None, "iters": steps, "num_workers": 0, "out": None}))
    return run_train(["--config", str(path)], out)


def run_family(name: str, args: argparse.Namespace) -> dict:
    extra = dict(args.dataset)
    root = Path(extra[name]) if name in extra else family_root(name, Path(args.data_dir), args.data_seed)
    out = Path(args.out) / args.budget / name / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    config, steps = family_plan(root, args.budget, out.parent, args.seed)
    done = out / "results.json"
    row: dict = json.loads(done.read_text()) if done.exists() else {}
    arms = [("auto", {})] + [(f"auto+{tag}", changes) for tag, changes in args.variant]
    for key, changes in arms:
        if key in row or (key != "auto" and all(config.get(k) == v for k, v in changes.items())):
            continue  # already trained, or the plan already chose it (lofo.py shows it as the same choice)
        row[key] = {**run_config({**config, **changes}, steps, out / key), "planned_steps": steps}
        print(f"  {name} {key} ({steps} steps): {row[key]}", flush=True)
        done.write_text(json.dumps(row, indent=1))  # after every arm, so an interrupted run loses one
    return row


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    tag, sep, assignments = text.partition("=")
    changes = {}
    for item in assignments.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"--variant {text!r}: expected TAG=KEY=VALUE[,KEY=VALUE]")
        changes[key.strip()] = yaml.safe_load(value)
    if not sep or not tag:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: expected TAG=KEY=VALUE[,KEY=VALUE]")
    return tag, changes


def _dataset(text: str) -> tuple[str, str]:
    name, sep, root = text.partition("=")
    if not sep or not name or not (Path(root) / "ImageSets" / "Segmentation").is_dir():
        raise argparse.ArgumentTypeError(f"--dataset {text!r}: expected NAME=ROOT, ROOT a VOC-format dataset")
    return name, root


def main() -> None:
    from vocseg.data.families import family_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="5m", help="the budget each family's plan (and its steps) is made for")
    p.add_argument("--families", nargs="*", default=family_names(), choices=family_names())
    p.add_argument("--seed", type=int, default=0, help="training seed of every arm")
    p.add_argument("--data-seed", type=int, default=0, help="seed the families are generated with")
    p.add_argument("--data-dir", default="bench-auto/data")
    p.add_argument("--out", default="bench-equal")
    p.add_argument("--variant", type=_variant, action="append", default=[], metavar="TAG=KEY=VALUE[,KEY=VALUE]",
                   help="also train the plan with these config keys set, as auto+TAG (repeatable)")  # fmt: skip
    p.add_argument("--dataset", type=_dataset, action="append", default=[], metavar="NAME=ROOT",
                   help="also a VOC-format dataset beyond the families, for rules scored on data not fitted on")  # fmt: skip
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"plans for {args.budget}, trained at their estimated steps; seed {args.seed}", flush=True)  # fmt: skip
    rows = {name: run_family(name, args) for name in [*args.families, *(name for name, _ in args.dataset)]}
    cols = ["auto", *(f"auto+{tag}" for tag, _ in args.variant)]
    print(f"\n{'family':<18}{'steps':>7}" + "".join(f"{c:>22}" for c in cols))
    for name, row in rows.items():
        steps = row.get("auto", {}).get("planned_steps", 0)
        base = row.get("auto", {}).get("miou")
        cells = []
        for c in cols:
            m = row.get(c, {}).get("miou")
            cells.append("same choice" if c not in row else "failed" if m is None else
                         f"{m:.4f}" + (f" ({m / base:.2f}x)" if base and c != "auto" else ""))  # fmt: skip
        print(f"{name:<18}{steps:>7}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
