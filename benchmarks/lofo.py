"""Leave-one-family-out: is each ablated rule choice fitted on the other families a gain on the one left out?

Reads bench_auto.py's results (``auto`` and the ``auto+TAG`` variants, one folder per family). For every
variant and every family F, the choice is fitted without F: take the variant when its mIoU over the plan's,
as a geometric mean over the OTHER families, is above 1. That choice is then scored on F alone, which it
never saw. A family where the variant's config equals the plan's (the rule already chose that value) says
nothing about the choice: it is shown and left out of the fitting.

    python benchmarks/bench_auto.py --budget 5m --which auto --variant "crop128=--image-size 128"
    python benchmarks/lofo.py --budget 5m
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml


def load(out: Path, budget: str, seed: int) -> dict[str, dict]:
    """{family: results row} for every family bench_auto.py has results of at this budget and seed."""
    rows = {}
    for path in sorted((out / budget).glob(f"*/seed{seed}/results.json")):
        rows[path.parent.parent.name] = json.loads(path.read_text())
    return rows


def changed_keys(run_dir: Path, a: str, b: str) -> list[str]:
    """Config keys where run ``b`` differs from run ``a`` (the output folder aside)."""
    ca, cb = (yaml.safe_load((run_dir / w / "config.yaml").read_text()) for w in (a, b))
    return sorted(k for k in ca.keys() | cb.keys() if k != "out" and ca.get(k) != cb.get(k))


def fit_without(ratios: dict[str, float], left_out: str) -> tuple[bool, float]:
    """Whether the variant is taken when fitted on every family but ``left_out``, and its fitted gain."""
    others = [r for f, r in ratios.items() if f != left_out]
    gain = math.exp(sum(map(math.log, others)) / len(others)) if others else 1.0
    return gain > 1.0, gain


def report(tag: str, rows: dict[str, dict], run_dirs: dict[str, Path]) -> None:
    key = f"auto+{tag}"
    print(f"\n{key}: fitted on the other families, scored on the one left out")
    print(f"{'family':<18}{'plan':>8}{'variant':>9}{'ratio':>8}{'fit gain':>10}{'taken':>7}{'held-out':>10}  changed")
    ratios, shown = {}, {}
    for fam, row in rows.items():
        a, b = row.get("auto", {}).get("miou"), row.get(key, {}).get("miou")
        if a and b:
            changed = changed_keys(run_dirs[fam], "auto", key)
            shown[fam] = (a, b, changed)
            if any(k not in ("val_every", "warmup_iters") for k in changed):
                ratios[fam] = b / a
    held = []
    for fam, (a, b, changed) in shown.items():
        if fam not in ratios:
            print(f"{fam:<18}{a:>8.4f}{b:>9.4f}{b / a:>8.2f}{'':>10}{'':>7}{'':>10}  same choice: {changed}")
            continue
        taken, gain = fit_without(ratios, fam)
        score = ratios[fam] if taken else 1.0
        held.append(score)
        print(f"{fam:<18}{a:>8.4f}{b:>9.4f}{ratios[fam]:>8.2f}{gain:>10.3f}{'yes' if taken else 'no':>7}"
              f"{score:>10.3f}  {', '.join(changed)}")  # fmt: skip
    if held:
        mean = math.exp(sum(map(math.log, held)) / len(held))
        print(f"held-out score of the fitted choice over the plan, geometric mean of {len(held)}: {mean:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="5m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-auto", help="bench_auto.py's --out")
    args = p.parse_args()
    rows = load(Path(args.out), args.budget, args.seed)
    if not rows:
        raise SystemExit(f"no results under {args.out}/{args.budget}/*/seed{args.seed}/: run bench_auto.py first")
    run_dirs = {fam: Path(args.out) / args.budget / fam / f"seed{args.seed}" for fam in rows}
    tags = sorted({k.removeprefix("auto+") for row in rows.values() for k in row if k.startswith("auto+")})
    for tag in tags:
        report(tag, rows, run_dirs)


if __name__ == "__main__":
    main()
