"""The ``vocseg`` command line: train, evaluate, reproduce, synth, stats, download, models."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from .errors import VocsegError


def _model_args(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    from .config import parse_value

    if not pairs:
        return None
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise VocsegError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .config import Config, load_config
    from .train import train

    if args.resume:
        if args.overwrite:
            raise VocsegError("--resume and --overwrite contradict each other; pick one")
        result = train(Config(out=args.resume), resume=True, progress=not args.no_progress, device=args.device)
    else:
        overrides = {
            "model": args.model, "data_root": args.data_root, "out": args.out, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "image_size": args.image_size,
            "optimizer": args.optimizer, "patience": args.patience, "device": args.device, "seed": args.seed,
            "amp": args.amp, "num_workers": args.workers, "scheduler": args.scheduler,
            "class_weighting": args.class_weighting, "monitor": args.monitor,
            "weight_decay": args.weight_decay, "max_train_images": args.max_train_images,
            "max_val_images": args.max_val_images, "deterministic": args.deterministic or None,
            "model_kwargs": _model_args(args.model_arg),
        }
        cfg = load_config(args.config, overrides)
        result = train(cfg, overwrite=args.overwrite, progress=not args.no_progress)
    m = result.metrics
    if not result.is_main:
        return 0
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731  (None: no pixel was scored)
    print(
        f"done: {m['split']} mIoU {fmt(m['mean_iou'])}  pixel acc {fmt(m['pixel_accuracy'])}  "
        f"loss {fmt(m['loss'])}  (best epoch {m['best_epoch']}) -> {result.run_dir}"
    )
    return 0


def _print_metrics(results: dict[str, Any]) -> None:
    print(f"{results['model']} on {results['split']} ({results['num_images']} images)")
    for key in ("loss", "ce_loss", "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        value = results.get(key)
        print(f"  {key:<15} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"\n  {'class':<14} {'IoU':>7} {'acc':>7}")
    for name, iou in results["per_class_iou"].items():
        acc = results.get("per_class_accuracy", {}).get(name)
        fmt = lambda v: "    n/a" if v is None else f"{v:7.4f}"  # noqa: E731
        print(f"  {name:<14} {fmt(iou)} {fmt(acc)}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint

    results = evaluate_checkpoint(
        args.checkpoint, args.data_root, args.split, args.device, args.amp, args.batch_size, args.workers,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(results))
    else:
        _print_metrics(results)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthetic import generate_synthetic_voc

    root = generate_synthetic_voc(args.out, args.train, args.val, args.seed, args.max_side, args.workers, progress=True)
    print(f"wrote {args.train} train + {args.val} val images to {root}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .data.builder import resolve_data_root
    from .data.classes import VOC_CLASSES
    from .data.stats import dataset_stats
    from .data.voc import VOCSegmentation

    ds = VOCSegmentation(resolve_data_root(args.data_root), args.split)
    stats = dataset_stats(ds)
    if args.json:
        print(json.dumps({"root": str(ds.voc_root), "split": args.split, **stats.__dict__}))
        return 0
    print(f"{ds.voc_root} split {args.split}: {stats.num_images} images")
    print(f"  mean {[round(v, 4) for v in stats.mean]}\n  std  {[round(v, 4) for v in stats.std]}")
    total = sum(stats.class_counts) + stats.void_pixels
    print(f"\n  {'class':<14} {'pixels':>12} {'share':>7}")
    for name, n in zip(VOC_CLASSES, stats.class_counts):
        print(f"  {name:<14} {n:>12,} {n / total:7.2%}")
    print(f"  {'void (255)':<14} {stats.void_pixels:>12,} {stats.void_pixels / total:7.2%}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import download_voc

    path = download_voc(args.root)
    print(f"VOC 2012 ready at {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.summary import format_model_table, model_table

    print(format_model_table(model_table(args.image_size)))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import reproduce

    reproduce(
        out=args.out, data_root=args.data_root, quick=args.quick, only=args.only, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vocseg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model")
    t.add_argument("--model", help="registered model name (see `vocseg models`)")
    t.add_argument("--config", help="YAML config; flags override it")
    t.add_argument("--data-root", help="folder holding VOCdevkit (default: built-in synthetic dataset)")
    t.add_argument("--out", help="run folder (default runs/<model>)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--image-size", type=int, help="training crop size")
    t.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    t.add_argument("--scheduler", choices=["none", "cosine"])
    t.add_argument("--class-weighting", choices=["none", "paper", "median_frequency", "inverse_sqrt"])
    t.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    t.add_argument("--monitor", choices=["val_loss", "val_miou"])
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N, mps")
    t.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"])
    t.add_argument("--seed", type=int)
    t.add_argument("--workers", type=int, help="data-loader worker processes")
    t.add_argument("--max-train-images", type=int)
    t.add_argument("--max-val-images", type=int)
    t.add_argument("--deterministic", action="store_true")
    t.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model argument, repeatable")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--data-root")
    e.add_argument("--split", default="val")
    e.add_argument("--device", default="auto")
    e.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"])
    e.add_argument("--batch-size", type=int)
    e.add_argument("--workers", type=int)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("reproduce", help="rerun the paper's experiments and write a report")
    r.add_argument("--out", required=True)
    r.add_argument("--data-root")
    r.add_argument("--quick", action="store_true", help="short CPU run on the synthetic dataset")
    r.add_argument("--only", nargs="+", metavar="NAME")
    r.add_argument("--device", default="auto")
    r.add_argument("--overwrite", action="store_true", help="retrain experiments already finished in --out")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_reproduce)

    s = sub.add_parser("synth", help="write the synthetic VOC-format dataset")
    s.add_argument("out")
    s.add_argument("--train", type=int, default=1000)
    s.add_argument("--val", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-side", type=int, default=500)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_synth)

    st = sub.add_parser("stats", help="mean/std and per-class pixel counts of a split")
    st.add_argument("--data-root")
    st.add_argument("--split", default="train")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    d = sub.add_parser("download", help="download and verify VOC 2012")
    d.add_argument("--root", required=True)
    d.set_defaults(func=cmd_download)

    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--image-size", type=int, default=512)
    m.set_defaults(func=cmd_models)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VocsegError as e:
        print(f"vocseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vocseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
