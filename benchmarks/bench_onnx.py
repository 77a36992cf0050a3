"""CPU inference latency: ONNX Runtime vs eager PyTorch (fp32 and bf16 autocast), per registered model.

    python benchmarks/bench_onnx.py [--height 384] [--width 512] [--runs 5] [--threads N] [--models fcn unet ...]

Each model is built offline (random weights: latency does not depend on them), exported in memory with
vocseg's ONNX exporter (dynamic batch/height/width, the file ``vocseg export`` writes) and timed on one
(1, 3, H, W) image: the median of ``--runs`` forwards after one warm-up, for eager fp32, eager under
bf16 autocast and onnxruntime (CPUExecutionProvider, fp32), all with the same number of threads.
Prints milliseconds and ratios (>1 means faster than eager fp32). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from vocseg.deploy.export import onnx_bytes
from vocseg.models import create_model, list_models
from vocseg.runtime.device import autocast


def median_ms(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median milliseconds of each callable. The variants take turns within every round, so a change in
    the machine's load (it may be shared) hits them alike instead of biasing whichever ran last."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations, oneDNN primitive creation, onnxruntime's arena
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def bench_model(name: str, x: torch.Tensor, runs: int, threads: int) -> dict[str, float]:
    """Median ms of eager fp32, eager bf16 autocast and onnxruntime for one model."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(name, offline=True).eval()
    cpu = torch.device("cpu")

    def eager(dtype):
        def run():
            with torch.inference_mode(), autocast(cpu, dtype):
                return model(x)

        return run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = onnx_bytes(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    return median_ms({"fp32": eager(None), "bf16": eager(torch.bfloat16), "ort": lambda: session.run(None, feed)}, runs)


def machine_line(threads: int) -> str:
    import onnxruntime as ort

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, {threads} threads | "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, python {platform.python_version()}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--runs", type=int, default=5, help="timed runs per variant (median reported)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and onnxruntime threads")
    p.add_argument("--models", nargs="+", default=list_models())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, args.height, args.width)
    print(machine_line(args.threads))
    print(f"input 1x3x{args.height}x{args.width}, median of {args.runs} interleaved runs after 1 warm-up\n")
    header = (
        f"{'model':<30} {'eager fp32':>11} {'eager bf16':>11} {'onnxruntime':>12} {'bf16/fp32':>10} {'ort/fp32':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        ms = bench_model(name, x, args.runs, args.threads)
        fp32, bf16, ort_ms = ms["fp32"], ms["bf16"], ms["ort"]
        print(
            f"{name:<30} {fp32:9.0f}ms {bf16:9.0f}ms {ort_ms:10.0f}ms {fp32 / bf16:9.2f}x {fp32 / ort_ms:8.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
