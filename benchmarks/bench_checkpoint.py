"""Per-epoch checkpoints written in the training thread, on a background thread, and on a background thread
at most every CHECKPOINT_EVERY_S seconds (train.py's default).

    python benchmarks/bench_checkpoint.py [--config configs/strong_cpu.yaml] [--steps 40] [--epochs 3]
        [--repeats 3] [--device auto] [--dir DIR]

Each side trains the config's model on random batches of its crop size for ``--epochs`` epochs of
``--steps`` steps and saves best.pt, last.pt and history.csv after every epoch, as ``vocseg train`` does:
"sync" writes them before the next epoch starts (the code before this benchmark); "background" snapshots
the state (tensors copied to the CPU) and writes it on a worker thread while the next epoch trains. Both
count everything, so the background side pays for the snapshot, for the thread's competition with
training for CPU time, and for waiting on the last write. "throttled" is "background" writing only after
the first and last epochs and when CHECKPOINT_EVERY_S seconds have passed since its last write, as
``vocseg train`` does; epochs of a few steps (``--steps 6``: a 60-image dataset) show what it saves.
Medians of interleaved repeats; ratios printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vocseg.config import load_config, replace
from vocseg.rundir import RunDir
from vocseg.runtime.device import autocast, resolve_amp, resolve_device
from vocseg.runtime.files import BackgroundWriter, detached_copy
from vocseg.training.builders import build_model, build_optimizer, resolve_channels_last
from vocseg.training.train import CHECKPOINT_EVERY_S, interval_due, write_epoch_files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/strong_cpu.yaml")
    p.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--dir", default=None, help="where the run folders go (default: a temporary folder)")
    args = p.parse_args()
    cfg = load_config(args.config)
    cfg = resolve_channels_last(replace(cfg, model_kwargs={**cfg.model_kwargs, "pretrained": False}))
    device = resolve_device(args.device)
    amp = resolve_amp(cfg.amp, device)
    model = build_model(cfg, for_loading=True).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    side = cfg.image_size or 256
    x = torch.randn(cfg.batch_size, 3, side, side, device=device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size, side, side), device=device)

    def step() -> None:
        with autocast(device, amp):
            out = model(x)  # a dict of the main and aux heads' logits with aux: the main head's loss here
            loss = F.cross_entropy(out["out"] if isinstance(out, dict) else out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the host waits for the step, as the training loop's loss logging makes it

    def state(epoch: int) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "history": [{"epoch": e + 1, "train_loss": 1.0, "seconds": 1.0} for e in range(epoch)],
            "rng": {"torch": torch.get_rng_state()},
        }

    def sync(run: RunDir) -> None:
        for epoch in range(args.epochs):
            for _ in range(args.steps):
                step()
            write_epoch_files(run, state(epoch + 1), True)

    def background(run: RunDir) -> None:
        saver = BackgroundWriter()
        try:
            for epoch in range(args.epochs):
                for _ in range(args.steps):
                    step()
                saver.submit(write_epoch_files, run, detached_copy(state(epoch + 1)), True)
        finally:
            saver.close()

    def throttled(run: RunDir) -> None:
        saver, saved_at = BackgroundWriter(), None
        try:
            for epoch in range(args.epochs):
                for _ in range(args.steps):
                    step()
                now = time.perf_counter()
                if interval_due(epoch + 1 == args.epochs, saved_at, now, CHECKPOINT_EVERY_S):
                    saver.submit(write_epoch_files, run, detached_copy(state(epoch + 1)), True)
                    saved_at = now
        finally:
            saver.close()

    for _ in range(3):
        step()  # warm-up: allocator, kernels, optimizer state
    print(f"{cfg.model} {dict(cfg.model_kwargs)} on {device}, amp {amp}, batch {cfg.batch_size} x {side}")
    print(f"{args.epochs} epochs x {args.steps} steps, a save after each; {args.repeats} interleaved repeats")
    sides = {"sync": sync, "background": background, "throttled": throttled}
    times: dict[str, list[float]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.repeats):
            for name, fn in sides.items():
                run = RunDir(Path(tmp) / f"{name}{r}")
                run.path.mkdir(parents=True)
                t0 = time.perf_counter()
                fn(run)
                times[name].append(time.perf_counter() - t0)
        last_mb = (run.last_path.stat().st_size + run.best_path.stat().st_size) / 2**20
    print(f"files per epoch: best.pt + last.pt = {last_mb:.0f} MiB")
    for name, ts in times.items():
        print(f"{name:>10}: median {statistics.median(ts):.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})")
    ratio = statistics.median(times["sync"]) / statistics.median(times["background"])
    print(f"background writes are {ratio:.2f}x as fast as writes in the training thread (whole epochs)")
    ratio = statistics.median(times["background"]) / statistics.median(times["throttled"])
    print(f"writing at most every {CHECKPOINT_EVERY_S:.0f} s is {ratio:.2f}x as fast as after every epoch")


if __name__ == "__main__":
    main()
