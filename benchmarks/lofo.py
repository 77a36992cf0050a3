"""Leave-one-family-out: is each ablated rule choice fitted on the other families a gain on the one left out?

Reads bench_auto.py's (or bench_equal_steps.py's) results (``auto`` and the ``auto+TAG`` variants, one
folder per family and seed); a family's ratio is the variant's mIoU over the plan's, a geometric mean over
the seeds both have. For every variant and every family F, the choice is fitted without F and scored on F
alone, which it never saw. Two kinds of choice are fitted:

- constant: take the variant everywhere when its geometric-mean ratio over the OTHER families is above 1;
- with ``--feature epochs``, a threshold on how many times the plan's run sees each training image: take the
  variant on one side of a threshold placed between the other families' values, the side and place that
  score best on them (a constant choice is the threshold beyond every family, and wins ties).

A family where the variant's config equals the plan's (the rule already chose that value) says nothing about
the choice: it is shown and left out of the fitting.

    python benchmarks/bench_auto.py --budget 5m --which auto --variant "crop128=--image-size 128"
    python benchmarks/lofo.py --budget 5m
    python benchmarks/lofo.py --out bench-equal --budget 5m --seeds 0 1 2 --feature epochs
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import yaml


def load(out: Path, budget: str, seeds: list[int]) -> dict[str, dict[int, dict]]:
    """{family: {seed: results row}} for every family with results at this budget and one of these seeds."""
    rows: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        for path in sorted((out / budget).glob(f"*/seed{seed}/results.json")):
            rows.setdefault(path.parent.parent.name, {})[seed] = json.loads(path.read_text())
    return rows


def plan_steps_and_config(family_dir: Path) -> tuple[int, dict] | None:
    """The plan's steps and config: bench_equal_steps.py's plan.json (the estimate it trained to), else the
    first seed's ``auto`` run from bench_auto.py (the steps it took in its budget); None where neither exists."""
    saved = family_dir / "plan.json"
    if saved.is_file():
        plan = json.loads(saved.read_text())
        return plan["steps"], plan["config"]
    for seed_dir in sorted(family_dir.glob("seed*")):
        results, config = seed_dir / "results.json", seed_dir / "auto" / "config.yaml"
        steps = json.loads(results.read_text()).get("auto", {}).get("steps") if results.is_file() else None
        if steps and config.is_file():
            return steps, yaml.safe_load(config.read_text())
    return None


def epochs_seen(family_dir: Path) -> float | None:
    """How many times the plan's run sees each training image: steps x batch / images trained on (None where
    a family has no plan run)."""
    found = plan_steps_and_config(family_dir)
    if found is None:
        return None
    steps, c = found
    names = (Path(c["data_root"]) / "ImageSets" / "Segmentation" / f"{c['train_split']}.txt").read_text().split()
    trained = len(names) - round(len(names) * (c.get("val_holdout") or 0.0))
    return steps * c["batch_size"] / max(1, trained)


def geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else 1.0


def changed_keys(run_dir: Path, a: str, b: str) -> list[str]:
    """Config keys where run ``b`` differs from run ``a`` (the output folder aside)."""
    ca, cb = (yaml.safe_load((run_dir / w / "config.yaml").read_text()) for w in (a, b))
    return sorted(k for k in ca.keys() | cb.keys() if k != "out" and ca.get(k) != cb.get(k))


def fit_without(ratios: dict[str, float], left_out: str) -> tuple[bool, float]:
    """Whether the variant is taken when fitted on every family but ``left_out``, and its fitted gain."""
    gain = geomean([r for f, r in ratios.items() if f != left_out])
    return gain > 1.0, gain


def fit_threshold(ratios: dict[str, float], feature: dict[str, float], left_out: str) -> tuple[bool, float, str]:
    """The threshold rule fitted without ``left_out``: whether it takes the variant on ``left_out``, its
    fitted gain (over the other families) and the rule in words."""
    others = sorted((feature[f], r) for f, r in ratios.items() if f != left_out)
    everywhere = geomean([r for _, r in others])
    best = (True, everywhere, "everywhere") if everywhere > 1.0 else (False, 1.0, "nowhere")
    cuts = [(a * b) ** 0.5 for (a, _), (b, _) in zip(others, others[1:]) if a < b]
    for cut in cuts:
        for below in (True, False):
            gain = geomean([r if (v < cut) == below else 1.0 for v, r in others])
            if gain > best[1] + 1e-9:  # a threshold must beat the constant choice, not tie it
                side = "below" if below else "at or above"
                best = ((feature[left_out] < cut) == below, gain, f"{side} {cut:.1f}")
    return best


def family_ratios(key: str, rows: dict[str, dict[int, dict]], out: Path) -> dict[str, tuple]:
    """{family: (plan mIoU, variant mIoU, ratio, per-seed ratios, changed keys)}, means over the seeds both have."""
    found = {}
    for fam, seeds in rows.items():
        pairs = {s: (row["auto"]["miou"], row[key]["miou"]) for s, row in seeds.items()
                 if row.get("auto", {}).get("miou") and row.get(key, {}).get("miou")}  # fmt: skip
        if pairs:
            first = min(pairs)
            changed = changed_keys(out / fam / f"seed{first}", "auto", key)
            per_seed = [b / a for a, b in pairs.values()]
            a, b = (sum(p[i] for p in pairs.values()) / len(pairs) for i in (0, 1))
            found[fam] = (a, b, geomean(per_seed), per_seed, changed)
    return found


def report(tag: str, rows: dict[str, dict[int, dict]], out: Path, feature: dict[str, float] | None) -> None:
    key = f"auto+{tag}"
    rule = "a threshold on epochs seen" if feature else "a constant choice"
    print(f"\n{key}: {rule}, fitted on the other families, scored on the one left out")
    print(f"{'family':<18}{'plan':>8}{'variant':>9}{'ratio':>8}{'seeds':>14}{'fit gain':>10}{'taken':>7}"
          f"{'held-out':>10}  rule / changed")  # fmt: skip
    found = family_ratios(key, rows, out)
    ratios = {f: v[2] for f, v in found.items() if any(k not in ("val_every", "warmup_iters") for k in v[4])}
    held = []
    for fam, (a, b, ratio, per_seed, changed) in found.items():
        spread = f"{len(per_seed)}: {min(per_seed):.2f}-{max(per_seed):.2f}"
        if fam not in ratios:
            print(f"{fam:<18}{a:>8.4f}{b:>9.4f}{ratio:>8.2f}{spread:>14}{'':>27}  same choice: {changed}")
            continue
        if feature and all(f in feature for f in ratios):
            taken, gain, words = fit_threshold(ratios, feature, fam)
            words = f"{words} ({feature[fam]:.0f} here)"
        else:
            (taken, gain), words = fit_without(ratios, fam), ", ".join(changed)
        score = ratio if taken else 1.0
        held.append(score)
        print(f"{fam:<18}{a:>8.4f}{b:>9.4f}{ratio:>8.2f}{spread:>14}{gain:>10.3f}{'yes' if taken else 'no':>7}"
              f"{score:>10.3f}  {words}")  # fmt: skip
    if held:
        print(f"held-out score of the fitted choice over the plan, geometric mean of {len(held)}: {geomean(held):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="5m")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds to average ratios over")
    p.add_argument("--out", default="bench-auto", help="bench_auto.py's (or bench_equal_steps.py's) --out")
    p.add_argument("--feature", choices=["epochs"], help="fit a threshold on this plan figure, not a constant")
    args = p.parse_args()
    out = Path(args.out) / args.budget
    rows = load(Path(args.out), args.budget, args.seeds)
    if not rows:
        raise SystemExit(f"no results under {out}/*/seed{{{','.join(map(str, args.seeds))}}}/: run bench_auto.py first")
    feature = None
    if args.feature:
        feature = {fam: v for fam in rows if (v := epochs_seen(out / fam)) is not None}
        print("epochs seen by each family's planned run: " + ", ".join(f"{f} {v:.0f}" for f, v in feature.items()))
    tags = sorted({k.removeprefix("auto+") for seeds in rows.values() for row in seeds.values() for k in row
                   if k.startswith("auto+")})  # fmt: skip
    for tag in tags:
        report(tag, rows, out, feature)


if __name__ == "__main__":
    main()
