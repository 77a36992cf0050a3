"""vocseg: train, evaluate, predict, export, compare and reproduce semantic-segmentation models on
PASCAL VOC 2012 and VOC-format data. Run `vocseg COMMAND --help` for a command's options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from .config import FIELD_NAMES, HINTS, Config, apply_overrides, load_config, parse_value, replace
from .errors import VocsegError
from .version import __version__

FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# A config flag's default: "not given" (so the YAML's value stands), distinct from "--patience null".
UNSET = argparse.SUPPRESS
# Flags that keep an older or shorter spelling beside the one generated from the config field.
FLAG_ALIASES = {"num_workers": ["--workers"], "model_kwargs": ["--model-arg"]}


# ----------------------------------------------------------------------------- config -> flags


def _field_kind(hint: Any) -> tuple[type, bool]:
    """``(base type, is a list)`` of a Config annotation such as ``int | None`` or ``list[float] | None``."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    args = [a for a in args if a is not type(None)]
    if len(args) != 1:
        return object, False  # e.g. int | str: parsed with YAML rules, checked by the config
    base = typing.get_origin(args[0]) or args[0]
    return base, base is list


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config field, with the field's help text and choices: defined once, in config.py."""
    group = parser.add_argument_group("training options (each overrides the YAML config)")
    for f in dataclasses.fields(Config):
        add_field_flag(group, f.name, UNSET, FLAG_ALIASES.get(f.name, []))


def add_field_flag(parser: Any, name: str, default: Any, aliases: Sequence[str] = (), default_text: str = "") -> None:
    """The flag ``--<name>`` of the Config field ``name``: its type, help text and choices come from the
    field, so another command's ``--amp`` or ``--tta`` offers exactly what the config accepts."""
    f = FIELDS[name]
    base, is_list = _field_kind(HINTS[name])
    shown = default_text or (_default_text(f) if default is UNSET else ("null" if default is None else str(default)))
    kwargs: dict[str, Any] = {
        "dest": name,
        "default": default,
        "help": f"{f.metadata.get('help', '')} (default: {shown})",
    }
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif base is dict:
        kwargs.update(action="append", metavar="KEY=VALUE")
    elif is_list:
        kwargs.update(nargs="+", type=parse_value, metavar="VALUE")
    elif f.metadata.get("choices"):
        kwargs["choices"] = f.metadata["choices"]
    else:
        kwargs.update(type=parse_value if base is not str else str, metavar=name.upper())
    parser.add_argument(f"--{name.replace('_', '-')}", *aliases, **kwargs)


def _default_text(f: dataclasses.Field) -> str:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return "null" if default is None else str(default)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The Config fields the user set on the command line (``null`` included); the others are absent and
    left to the YAML."""
    out = {name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)}
    if "model_kwargs" in out:
        out["model_kwargs"] = _model_args(out["model_kwargs"])
    return out


def _model_args(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise VocsegError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def _slide(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        crop, stride = (int(v) for v in text.split(","))
    except ValueError:
        raise VocsegError(f"--slide expects CROP,STRIDE in pixels (e.g. 512,341), got {text!r}") from None
    if crop < 1 or stride < 1 or stride > crop:
        raise VocsegError(f"--slide {text}: need crop >= stride >= 1")
    return crop, stride


# ----------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    from .training.lr_schedule import clock
    from .training.train import train

    overrides = config_overrides(args)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.resume:
        if args.overwrite:
            raise VocsegError("--resume and --overwrite contradict each other; pick one")
        if args.config:
            raise VocsegError("--resume continues the run's own config; --config cannot be used with it")
        result = train(Config(out=args.resume), resume=True, progress=progress, changes=overrides)
    elif args.recipe == "auto":
        started = clock()  # the budget pays for the planning too
        cfg, files = _auto_recipe(args, overrides)
        result = train(cfg, overwrite=args.overwrite, progress=progress, run_files=files, started=started)
    else:
        cfg = load_config(args.config, overrides)
        result = train(cfg, overwrite=args.overwrite, progress=progress)
    if not result.is_main:
        return 0
    m = result.metrics
    print(
        f"done: {m['split']} mIoU {_fmt(m['mean_iou'])}  pixel acc {_fmt(m['pixel_accuracy'])}  "
        f"loss {_fmt(m['loss'])}  (best epoch {m['best_epoch']}"
        f"{'' if m.get('tta', 'none') == 'none' else ', tta ' + m['tta']}) -> {result.run_dir}"
    )
    return 0


def _auto_recipe(args: argparse.Namespace, overrides: dict[str, Any]) -> tuple[Config, dict[str, bytes]]:
    """``--recipe auto``: plan on the data (vocseg plan), then let the flags given win over the plan."""
    from .training.planner import FINGERPRINT_FILE, PLAN_FILE, fingerprint_json, make_plan

    if args.config:
        raise VocsegError("--recipe auto plans the whole config; drop --config (or plan with `vocseg plan`, then edit)")
    if overrides.get("budget") is None:
        raise VocsegError("--recipe auto needs --budget (e.g. --budget 15m): the plan is sized to it")
    base = load_config(None, overrides)
    plan = make_plan(base.data_root, base.budget, base.device, base)
    overrides = apply_overrides({"model_kwargs": plan.config.model_kwargs}, overrides)  # as onto a config's
    for key in set(overrides) & set(plan.recipe.values):
        if overrides[key] != plan.recipe.values[key]:
            why = f"given on the command line (the plan chose {plan.recipe.values[key]!r}: {plan.recipe.reasons[key]})"
            plan.recipe.set(key, overrides[key], why)
    plan.config = replace(plan.config, **overrides)
    print(plan.summary())
    return plan.config, {PLAN_FILE: plan.yaml_text().encode(), FINGERPRINT_FILE: fingerprint_json(plan).encode()}


def cmd_plan(args: argparse.Namespace) -> int:
    from .training.planner import make_plan, write_plan

    base = Config(seed=args.seed)
    plan = make_plan(args.data, args.budget, args.device, base)
    print(plan.summary())
    target, fingerprint = write_plan(plan, args.out, overwrite=args.overwrite)
    print(f"wrote {target} and {fingerprint}; train it with: vocseg train --config {target}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"  # None: no pixel was scored


def _print_metrics(results: dict[str, Any]) -> None:
    print(f"{results['model']} on {results['split']} ({results['num_images']} images)")
    for key in ("loss", "ce_loss", "pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        print(f"  {key:<15} {_fmt(results.get(key))}")
    print(f"\n  {'class':<14} {'IoU':>7} {'acc':>7}")
    for name, iou in results["per_class_iou"].items():
        acc = results.get("per_class_accuracy", {}).get(name)
        print(f"  {name:<14} {_fmt(iou):>7} {_fmt(acc):>7}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.evaluate import evaluate_checkpoint

    if (args.checkpoint is None) == (args.model is None):
        raise VocsegError("give a CHECKPOINT, or --model NAME --weights WEIGHTS for a pretrained model (not both)")
    if args.model is not None and args.weights is None:
        raise VocsegError("--model needs --weights (e.g. COCO_WITH_VOC_LABELS_V1, or a state-dict file)")
    results = evaluate_checkpoint(
        args.checkpoint,
        args.data_root,
        args.split,
        args.device,
        args.amp,
        args.batch_size,
        args.num_workers,
        progress=not args.json and sys.stderr.isatty(),
        model_name=args.model,
        weights=args.weights,
        tta=args.tta,
        tta_scales=args.tta_scales,
        slide=_slide(args.slide),
        save_dir=args.save_dir,
    )
    if args.json:
        print(json.dumps(results))
    else:
        _print_metrics(results)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy.predict import predict
    from .deploy.video import is_video, plan_videos, predict_videos

    paths = list(args.paths)
    if args.model is None:
        if len(paths) < 2:
            raise VocsegError("usage: vocseg predict CHECKPOINT|MODEL.onnx INPUT... --out DIR")
        source = paths.pop(0)
    else:
        if args.weights is None:
            raise VocsegError("--model needs --weights (e.g. COCO_WITH_VOC_LABELS_V1)")
        source = None
    videos = [p for p in paths if is_video(p)]
    images = [p for p in paths if not is_video(p)]
    common = dict(
        tta=args.tta, tta_scales=args.tta_scales, slide=_slide(args.slide), device=args.device, amp=args.amp,
        overwrite=args.overwrite, progress=not args.no_progress and sys.stderr.isatty(),
        model_name=args.model, weights=args.weights,
    )  # fmt: skip
    if videos:  # refused before any image is written
        plan_videos(videos, args.out, masks=args.masks, overwrite=args.overwrite)
    failed = 0
    if images:
        summary = predict(source, images, args.out, batch_size=args.batch_size, **common)
        print(summary)
        failed += len(summary.failed)
    if videos:
        video_summary = predict_videos(source, videos, args.out, masks=args.masks, **common)
        for written in video_summary.written:
            print(written)
        print(video_summary)
        failed += len(video_summary.failed)
    return 1 if failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .deploy.export import export_model

    path = export_model(args.checkpoint, args.format, args.out, opset=args.opset, overwrite=args.overwrite)
    print(f"exported {args.checkpoint} as {args.format} -> {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .study.compare import compare

    md, html = compare(args.runs, args.out, device=args.device, labels=args.labels)
    print(f"report: {md}\n        {html}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .study.reproduce import reproduce

    reproduce(
        out=args.out,
        data_root=args.data_root,
        quick=args.quick,
        only=args.only,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
        seeds=args.seeds,
    )
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.families import FAMILIES, generate_family
    from .data.synthetic import generate_synthetic_voc

    if args.family is None:
        train, val = args.train or 1000, args.val or 300
        root = generate_synthetic_voc(args.out, train, val, args.seed, args.max_side or 500, args.workers, True)
    else:
        family = FAMILIES.get(args.family) if args.family in FAMILIES else None
        train, val = args.train or getattr(family, "n_train", 0), args.val or getattr(family, "n_val", 0)
        root = generate_family(
            args.family, args.out, args.train, args.val, args.seed, args.workers, True, args.max_side
        )
    print(f"wrote {train} train + {val} val images to {root}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .data.builder import resolve_data_root
    from .data.classes import NUM_CLASSES, class_names
    from .data.stats import dataset_stats
    from .data.voc import VOCSegmentation

    layout = resolve_data_root(args.data_root)
    names = class_names(len(layout.class_names or []) or NUM_CLASSES, layout.class_names)
    ds = VOCSegmentation(layout, args.split, num_classes=len(names))
    stats = dataset_stats(ds)
    if args.json:
        print(json.dumps({"root": str(ds.voc_root), "split": args.split, "class_names": names, **stats.__dict__}))
        return 0
    print(f"{ds.voc_root} split {args.split}: {stats.num_images} images")
    print(f"  mean {[round(v, 4) for v in stats.mean]}\n  std  {[round(v, 4) for v in stats.std]}")
    total = sum(stats.class_counts) + stats.void_pixels
    width = max(14, *(len(n) for n in names))
    print(f"\n  {'class':<{width}} {'pixels':>12} {'share':>7}")
    for name, n in zip(names, stats.class_counts):
        print(f"  {name:<{width}} {n:>12,} {n / total:7.2%}")
    print(f"  {'void (255)':<{width}} {stats.void_pixels:>12,} {stats.void_pixels / total:7.2%}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import download_voc

    path = download_voc(args.root)
    print(f"VOC 2012 ready at {path}")
    if args.sbd:
        from .data.sbd import prepare_sbd

        print(prepare_sbd(args.root))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .data.importers import import_coco, import_labelme
    from .data.layout import read_class_names

    if args.format == "labelme":
        names = read_class_names(args.classes) if args.classes else None
        report = import_labelme(args.src, args.out, class_names=names)
    else:
        report = import_coco(args.annotations, args.images, args.out)
    print(report)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import config_dir, resolve_config_path, shipped_configs

    if args.action == "list":
        for name in shipped_configs():
            print(name)
        print(f"(in {config_dir()}; `vocseg config show NAME` prints one, `vocseg train --config NAME` trains it)")
        return 0
    if not args.name:
        raise VocsegError(f"vocseg config show needs a NAME: one of {', '.join(shipped_configs())}")
    sys.stdout.write(resolve_config_path(args.name).read_text())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.summary import format_model_table, model_table

    print(format_model_table(model_table(args.image_size)))
    return 0


# ----------------------------------------------------------------------------- the parser


def _add_inference_flags(p: argparse.ArgumentParser) -> None:
    add_field_flag(p, "tta", "none")
    add_field_flag(p, "tta_scales", None, default_text="the run's own, else 0.5 0.75 1.0 1.25 1.5 1.75")
    p.add_argument("--slide", metavar="CROP,STRIDE", help="sliding-window inference for images larger than CROP")
    add_field_flag(p, "device", "auto")
    p.add_argument("--model", help="a registry model with pretrained --weights instead of a checkpoint")
    p.add_argument("--weights", help="pretrained weights for --model, e.g. COCO_WITH_VOC_LABELS_V1")


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model", description="Train a model into a run folder.")
    t.add_argument("--config", help="YAML config; flags override it")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR (may extend --epochs)")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--no-progress", action="store_true", help="no progress bars (off anyway when not a terminal)")
    t.add_argument(
        "--recipe",
        choices=["auto"],
        help="auto: plan the recipe on the data, machine and --budget first (vocseg plan), keeping plan.yaml and "
        "fingerprint.json in the run folder; flags given still win",
    )
    add_config_flags(t)
    t.set_defaults(func=cmd_train)


def _evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="evaluate a checkpoint or a pretrained model on a split")
    e.add_argument("checkpoint", nargs="?", help="a run's best.pt (or last.pt)")
    add_field_flag(e, "data_root", None, default_text="the run's data")
    e.add_argument("--split", default="val")
    add_field_flag(e, "amp", None, default_text="the run's own")
    e.add_argument("--batch-size", type=int)
    add_field_flag(e, "num_workers", None, ["--workers"], default_text="the run's own")
    e.add_argument("--save-dir", help="also write masks, best/worst panels, per-class IoU and confusion figures")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    _add_inference_flags(e)
    e.set_defaults(func=cmd_evaluate)


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment your own images with a checkpoint or an exported ONNX file")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="CHECKPOINT INPUT",
        help="a .pt or .onnx file, then images, folders or globs, and videos (.mp4 .mov .avi .mkv .webm)",
    )
    p.add_argument("--masks", action="store_true", help="also write a palette mask PNG per video frame")
    p.add_argument("--out", required=True, help="folder for the masks and overlays")
    p.add_argument(
        "--batch-size", type=int, help="images per forward (same-size images only; default 1 on CPU, 8 on GPU)"
    )
    add_field_flag(p, "amp", "none")
    p.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    p.add_argument("--no-progress", action="store_true")
    _add_inference_flags(p)
    p.set_defaults(func=cmd_predict)


def _other_parsers(sub) -> None:
    x = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript")
    x.add_argument("checkpoint")
    x.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    x.add_argument("--out", required=True, help="output file")
    x.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    x.add_argument("--overwrite", action="store_true")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("compare", help="one report comparing any run folders")
    c.add_argument("runs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", required=True)
    c.add_argument("--labels", nargs="+", help="a label per run (default: folder names)")
    add_field_flag(c, "device", "auto")
    c.set_defaults(func=cmd_compare)

    r = sub.add_parser("reproduce", help="rerun the paper's experiments and write a report")
    r.add_argument("--out", required=True)
    add_field_flag(r, "data_root", None)
    r.add_argument("--quick", action="store_true", help="short CPU run on the synthetic dataset")
    r.add_argument("--only", nargs="+", metavar="NAME")
    r.add_argument("--seeds", type=int, default=1, help="train each experiment this many times (mean, std, CIs)")
    add_field_flag(r, "device", "auto")
    r.add_argument("--overwrite", action="store_true", help="retrain experiments already finished in --out")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_reproduce)

    _data_parsers(sub)
    _import_parser(sub)
    pl = sub.add_parser(
        "plan",
        help="choose a recipe for a dataset, this machine and a time budget",
        description="Fingerprint the training split, time candidate models here, and write a complete config "
        "with the reason for each choice (docs/planning.md).",
    )
    pl.add_argument("data", nargs="?", metavar="DATA", help="dataset root (default: the built-in data)")
    pl.add_argument("--budget", default="15m", help="wall-clock budget of the run, e.g. 15m, 1h (default 15m)")
    add_field_flag(pl, "device", "auto")
    pl.add_argument("--seed", type=int, default=0)
    pl.add_argument("--out", default="plan.yaml", help="the plan's config (fingerprint.json is written beside it)")
    pl.add_argument("--overwrite", action="store_true")
    pl.set_defaults(func=cmd_plan)
    cf = sub.add_parser("config", help="list or print the configs vocseg ships (strong, strong_cpu, ...)")
    cf.add_argument("action", choices=["list", "show"])
    cf.add_argument("name", nargs="?", metavar="NAME", help="for show: a shipped config, e.g. strong")
    cf.set_defaults(func=cmd_config)
    m = sub.add_parser("models", help="list the registered models")
    m.add_argument("--image-size", type=int, default=512)
    m.set_defaults(func=cmd_models)


def _data_parsers(sub) -> None:
    s = sub.add_parser("synth", help="write the synthetic VOC-format dataset, or one of the dataset families")
    s.add_argument("out")
    s.add_argument(
        "--family",
        help="a structurally different family (builtin, shape_texture, small_objects, few, imbalanced, "
        "photo_background; docs/planning.md) with its own defaults",
    )
    s.add_argument("--train", type=int, help="training images (default 1000; a family's own)")
    s.add_argument("--val", type=int, help="validation images (default 300; a family's own)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-side", type=int, help="longest image side (default 500; a family's own)")
    s.add_argument("--workers", type=int)
    s.set_defaults(func=cmd_synth)

    st = sub.add_parser("stats", help="mean/std and per-class pixel counts of a split")
    st.add_argument("--data-root")
    st.add_argument("--split", default="train")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)

    d = sub.add_parser("download", help="download and verify VOC 2012 (and SBD with --sbd)")
    d.add_argument("--root", required=True)
    d.add_argument("--sbd", action="store_true", help="also SBD, converted, and the train_aug split")
    d.set_defaults(func=cmd_download)


def _import_parser(sub) -> None:
    im = sub.add_parser(
        "import",
        help="turn labelme or COCO polygon annotations into a VOC-format dataset",
        description="Write OUT/VOCdevkit/VOC2012 (images, palette masks, an 80/20 split, class_names.txt) "
        "from labelme or COCO annotations; see docs/import.md.",
    )
    formats = im.add_subparsers(dest="format", required=True, metavar="{labelme,coco}")
    lm = formats.add_parser("labelme", help="a folder of labelme JSON files")
    lm.add_argument("src", metavar="SRC", help="folder holding the labelme *.json files")
    lm.add_argument("out", metavar="OUT", help="writes OUT/VOCdevkit/VOC2012 (refused if it holds anything)")
    lm.add_argument(
        "--classes",
        metavar="FILE",
        help="class list, one a line, fixing the indices (labelme's labels.txt works as it is); "
        "default: background, then the labels found, sorted",
    )
    co = formats.add_parser("coco", help="a COCO instance-annotation file and its image folder")
    co.add_argument("annotations", metavar="ANNOTATIONS.json")
    co.add_argument("images", metavar="IMAGES", help="folder the images' file_name paths are relative to")
    co.add_argument("out", metavar="OUT", help="writes OUT/VOCdevkit/VOC2012 (refused if it holds anything)")
    im.set_defaults(func=cmd_import)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vocseg", description=__doc__)
    p.add_argument("--version", action="version", version=f"vocseg {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    _other_parsers(sub)
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
