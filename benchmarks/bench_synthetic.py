"""Synthetic dataset generation speed: 1 worker vs all cores, side by side in one run.

    python benchmarks/bench_synthetic.py [--n 1000] [--max-side 500]

Prints images/second for each and the speed-up. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from vocseg.data.synthetic import generate_synthetic_voc


def timed(n: int, max_side: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_synthetic_voc(tmp, n_train=n - n // 4, n_val=n // 4, seed=0, max_side=max_side, workers=workers)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--max-side", type=int, default=500)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    print(f"{platform.machine()}, {cores} cores; {args.n} images, long side up to {args.max_side}")
    one = timed(args.n, args.max_side, 1)
    many = timed(args.n, args.max_side, cores)
    print(f"workers=1:      {one:6.1f} s  ({args.n / one:6.1f} img/s)")
    print(f"workers={cores}:      {many:6.1f} s  ({args.n / many:6.1f} img/s)")
    print(f"speed-up:       {one / many:6.2f}x")


if __name__ == "__main__":
    main()
