"""The report's sections, in order; each appends its blocks to the document from the context alone.

One row per group (the seeds of one recipe: mean ± std when there are several); per-run figures and
costs; the paper's columns and notes only when the runs are the paper's experiments."""

from __future__ import annotations

import json
import platform
import shutil

import numpy as np
import torch
import torchvision

from ...data.builder import HOLDOUT_SEED
from ...errors import VocsegError
from ...plots import comparison_figure, confusion_figure, per_class_iou_figure, plot_curves
from ...rundir import RunDir
from ...version import __version__
from ..significance import N_BOOT, paired_bootstrap, verdict
from .data import all_background_metrics
from .example import choose_example, predict_example
from .render import Doc, fmt
from .runs import ReportContext, ReportRun, RunGroup

__all__ = ["SECTIONS", "SYNTHETIC_DISCLAIMER"]

SYNTHETIC_DISCLAIMER = (
    "The data is synthetic: these runs used vocseg's built-in synthetic dataset, not PASCAL VOC 2012. "
    "Synthetic numbers are not VOC numbers and cannot be compared with the paper's; they only show "
    "that the pipeline works end to end and how the experiments rank against each other on this data."
)
READING_THE_PAPER = (
    "**Reading the paper's numbers.** The paper's best model reaches IoU 0.1147 at pixel accuracy "
    "0.7439, and its baseline 0.0634 at 0.7300. On VOC val roughly three quarters of the labelled "
    "pixels are background, so predicting background everywhere already scores a pixel accuracy of "
    "about 0.7 and an mIoU of about 0.7 / 21 ≈ 0.035: every model of the paper is barely above that "
    "trivial predictor. The paper does not say how IoU was computed; most likely it was averaged per "
    "batch (IoU per batch, averaged over batches, with classes absent from a batch handled somehow), "
    "which is neither the standard dataset-level mIoU nor comparable with it. Our mIoU is the standard "
    "one (per-class IoU from one confusion matrix over the split, averaged over the classes present), "
    "so compare the ordering of the experiments rather than the values."
)
METRIC_KEYS = ("loss", "ce_loss", "mean_iou", "pixel_accuracy", "mean_accuracy", "fw_iou")


# ----------------------------------------------------------------------------- header


def header(doc: Doc, ctx: ReportContext) -> None:
    doc.h(1, ctx.title)
    doc.p(f"{ctx.intro} {len(ctx.done)} of {len(ctx.runs)} runs have results.")
    if ctx.info is not None and ctx.info.synthetic:
        doc.p(SYNTHETIC_DISCLAIMER, "note")
    for note in ctx.notes:
        doc.p(note, "note")
    for r in ctx.runs:
        if r.status == "failed":
            what = f"Experiment **{r.label}** (Table {r.experiment.table})" if r.experiment else f"Run **{r.label}**"
            doc.p(f"{what} failed: {str(r.entry.get('error') or '').strip()}", "note")


# ----------------------------------------------------------------------------- results


def _tta_phrase(ctx: ReportContext) -> str:
    """The final evaluation's test-time augmentation, from the runs' own metrics ("" when none used it)."""
    ttas = sorted({(r.metrics or {}).get("tta", "none") for r in ctx.done})
    if ttas in ([], ["none"]):
        return ""
    if len(ttas) > 1:
        return f", test-time augmentation as each run's `tta` says ({', '.join(ttas)})"
    return f", test-time augmentation: {ttas[0]}"


def _picked_by(ctx: ReportContext) -> str:
    """Which weights the scores come from, from the runs' own config (``monitor``)."""
    monitors = sorted({(r.cfg or {}).get("monitor", "val_loss") for r in ctx.done} or {"val_loss"})
    picked = {"val_loss": "loss", "val_miou": "mIoU"}
    chosen = [f"validation {picked.get(m, m)}" for m in monitors if m != "last"]
    kept = ([f"the best checkpoint by {' or '.join(chosen)}"] if chosen else []) + (
        ["the last epoch's weights (`monitor: last`)"] if "last" in monitors else []
    )
    return " or ".join(kept)


def _results_intro(ctx: ReportContext) -> str:
    ours = (
        f"every metric from one confusion matrix accumulated over the whole test split (`{ctx.split}`, "
        f"native resolution{_tta_phrase(ctx)}, void pixels ignored), using {_picked_by(ctx)}. "
        "`loss` is the training criterion (class-weighted for weighted runs"
        + (", as the paper's Tables 8–11 seem to report it" if ctx.paper else "")
        + "); `CE` is the plain cross-entropy, comparable across all runs."
    )
    if ctx.paper:
        text = (
            f"Ours: {ours} Paper: the numbers of Tables 5–11 as printed (loss, IoU, pixel accuracy; "
            "no mean accuracy or fw IoU reported)."
        )
    else:
        text = ours[0].upper() + ours[1:]
    if ctx.multi_seed:
        text += (
            " Rows with several seeds show mean ± standard deviation over them (`seeds`: how many; see *Statistics*)."
        )
    return text


def _results_header(ctx: ReportContext) -> list[str]:
    cols = ["experiment" if ctx.paper else "run"]
    cols += ["paper name", "paper table"] if ctx.paper else []
    cols += ["model", "loss", "CE", "mIoU", "pixel acc", "mean acc", "fw IoU"]
    cols += ["paper loss", "paper IoU", "paper pixel acc"] if ctx.paper else []
    return cols + (["seeds"] if ctx.multi_seed else []) + ["status"]


def _results_row(g: RunGroup, ctx: ReportContext) -> list[str]:
    e = g.experiment
    row = [g.name]
    if ctx.paper:
        row += [e.title, f"Table {e.table}"] if e else ["–", "–"]
    row += [g.model] + [g.metric(k).format() for k in METRIC_KEYS]
    if ctx.paper:
        row += [fmt(e.paper_loss), fmt(e.paper_iou), fmt(e.paper_pixel_accuracy)] if e else ["–"] * 3
    return row + ([str(len(g.done))] if ctx.multi_seed else []) + [g.status]


def _background_row(ctx: ReportContext) -> list[str]:
    bg = all_background_metrics(ctx.info.test_counts)
    row = ["all-background predictor"] + (["–", "–"] if ctx.paper else []) + ["–", "–", "–"]
    row += [fmt(bg["mean_iou"]), fmt(bg["pixel_accuracy"]), fmt(bg["mean_accuracy"]), fmt(bg["fw_iou"])]
    row += ["–"] * 3 if ctx.paper else []
    return row + (["–"] if ctx.multi_seed else []) + [f"computed on {ctx.split}"]


def results(doc: Doc, ctx: ReportContext) -> None:
    doc.h(2, "Results")
    doc.p(_results_intro(ctx))
    rows = [_results_row(g, ctx) for g in ctx.groups]
    if ctx.info is not None:
        rows.append(_background_row(ctx))
    doc.table(_results_header(ctx), rows)
    if ctx.info is not None:
        counts = ctx.info.test_counts
        share = float(counts[0]) / max(float(counts.sum()), 1.0)
        doc.p(
            f"The all-background row predicts class 0 everywhere: its pixel accuracy is background's share "
            f"of the test split's labelled pixels ({share:.4f}), its mIoU that share divided by the "
            f"{int((counts > 0).sum())} classes present (background's IoU equals its share; every other class scores 0)."
        )
    if ctx.paper:
        doc.p(READING_THE_PAPER, "info")


# ----------------------------------------------------------------------------- statistics


def _pairs(ctx: ReportContext) -> list[tuple[RunGroup, RunGroup]]:
    """Explicit pairs, else each paper experiment against the one it builds on, else the best group
    against every other; only pairs whose two groups have finished runs."""
    by_name = {g.name: g for g in ctx.done_groups}
    if ctx.pairs is not None:
        names = list(ctx.pairs)
    elif any(g.experiment is not None and g.experiment.builds_on for g in ctx.groups):
        names = [(g.name, g.experiment.builds_on) for g in ctx.groups if g.experiment and g.experiment.builds_on]
    else:
        ranked = sorted(ctx.done_groups, key=lambda g: g.metric("mean_iou").mean or 0.0, reverse=True)
        names = [(ranked[0].name, g.name) for g in ranked[1:]]
    return [(by_name[a], by_name[b]) for a, b in names if a in by_name and b in by_name]


def _compare(a: RunGroup, b: RunGroup) -> str:
    missing = [r.label for r in a.done + b.done if r.per_image is None]
    if missing:
        return (
            f"{a.name} vs {b.name}: not tested; {', '.join(missing)} lack{'s' if len(missing) == 1 else ''} "
            f"`{RunDir.PER_IMAGE}` (per-image results, which runs made by older vocseg versions do not have)."
        )
    try:
        result = paired_bootstrap([r.per_image for r in a.done], [r.per_image for r in b.done])
    except VocsegError as e:
        return f"{a.name} vs {b.name}: not tested ({e})."
    return (
        verdict(a.name, b.name, result)
        + f" {result.n_images} test images; seeds: {len(a.done)} of {a.name}, {len(b.done)} of {b.name}."
    )


def _groups_table(doc: Doc, ctx: ReportContext) -> None:
    rows = []
    for g in ctx.groups:
        seeds = ", ".join(str((r.cfg or {}).get("seed", "–")) for r in g.done) or "–"
        rows.append(
            [
                g.name,
                f"{len(g.done)}/{len(g.runs)}",
                seeds,
                g.metric("mean_iou").format(),
                g.metric("pixel_accuracy").format(),
                ", ".join(f"`{r.run.path.name}`" for r in g.runs),
            ]
        )
    doc.table(["group", "runs done", "seeds", "mIoU", "pixel acc", "run folders"], rows)


def statistics(doc: Doc, ctx: ReportContext) -> None:
    if not ctx.done:
        return
    doc.h(2, "Statistics")
    doc.p(
        "Runs whose configs differ only in `seed` (and in where or how fast they ran) are one group: its "
        "numbers are the mean ± sample standard deviation over its finished runs (one run: no deviation)."
    )
    _groups_table(doc, ctx)
    pairs = _pairs(ctx)
    if not pairs:
        return
    doc.p(
        f"Differences in mIoU, with a 95% confidence interval from a paired bootstrap over the test images "
        f"({N_BOOT} resamples of the images with replacement, the same for both models; within a group of "
        "several seeds the seeds are resampled too, so the interval covers seed-to-seed noise as well). "
        "Each resample's mIoU is computed from the summed per-image intersections and unions, like the "
        "dataset-level mIoU above. An interval that includes 0 means the ranking could be noise."
    )
    doc.ul([_compare(a, b) for a, b in pairs])


# ----------------------------------------------------------------------------- figures


def _curves_figure(run: ReportRun, path, title: str) -> bool:
    """The run's loss curves, titled; from its history, else its own curves image."""
    if run.history:
        plot_curves(run.history, path, title=title)
        return True
    if run.run.curves_path.is_file():
        shutil.copyfile(run.run.curves_path, path)
        return True
    return False


def curves(doc: Doc, ctx: ReportContext) -> None:
    doc.h(2, "Loss curves (paper Figures 2–8)" if ctx.paper else "Loss curves")
    doc.p(
        "Train and validation loss per epoch (left axis) and validation mIoU (right axis) of each run "
        "(validation: the early-stopping holdout, or the val split in a run without one); the scores above "
        f"use {_picked_by(ctx)}."
    )
    items = []
    for r in ctx.runs:
        e = r.experiment
        rel, path = ctx.figure(f"curves_{r.file_stem}.png")
        title = f"{r.label} (paper: Figure {e.figure}, Table {e.table})" if e else r.label
        if (r.done or r.history) and _curves_figure(r, path, title):
            items.append((rel, f"{r.label}: train/val loss" + (f" (paper Figure {e.figure})" if e else "")))
    if items:
        doc.images(items, grid=True)
    else:
        doc.p("No run has loss curves yet.")


def _example_label(g: RunGroup, run: ReportRun) -> str:
    model = (run.cfg or {}).get("model")
    label = g.name if model == g.name else f"{g.name} ({model})"
    return label + f", mIoU {fmt(run.metrics.get('mean_iou'), 3)}"


def example(doc: Doc, ctx: ReportContext) -> None:
    shown = [(g, g.first_done) for g in ctx.done_groups]
    if ctx.info is None or not shown:
        return
    image_id, classes = choose_example(ctx.info)
    if image_id is None:
        return
    doc.h(2, "One test image, every model (paper Figures 9–11)" if ctx.paper else "One test image, every model")
    image, mask, preds = predict_example([r for _, r in shown], ctx.info, image_id, ctx.device)
    rel, path = ctx.figure("comparison.png")
    labels = {r.label: _example_label(g, r) for g, r in shown}
    comparison_figure(image, mask, preds, ctx.info.class_names, path, title=f"{image_id} ({ctx.split})", labels=labels)
    names = ", ".join(ctx.info.class_names[c] for c in classes) or "background only"
    seeds = " Groups of several seeds show their first finished run." if ctx.multi_seed else ""
    doc.p(
        f"Test image `{image_id}` of `{ctx.split}`, chosen as the one with the most object classes ({names}). "
        "Top row: image and each model's prediction overlaid on it; bottom row: ground truth and each model's "
        f"colour mask (black: background; cream: void). Predictions are from `{RunDir.BEST}` at native "
        f"resolution with the checkpoint's own normalisation.{seeds}"
    )
    doc.images([(rel, "image, ground truth, and every model's overlay and mask")])


# ----------------------------------------------------------------------------- per class


def per_class(doc: Doc, ctx: ReportContext) -> None:
    groups = ctx.done_groups
    if not groups:
        return
    doc.h(2, "Per-class IoU")
    names = list(groups[0].first_done.metrics["per_class_iou"])
    counts = ctx.info.test_counts if ctx.info is not None else None
    total = float(counts.sum()) if counts is not None else 0.0
    header = ["class"] + ([f"test pixels ({ctx.split})"] if counts is not None else []) + [g.name for g in groups]
    rows = []
    for k, name in enumerate(names):
        row = [name]
        if counts is not None:
            row.append(f"{counts[k] / total:.2%}" if total and k < len(counts) else "–")
        rows.append(row + [fmt(g.per_class_iou(name)) for g in groups])
    rows.append(["mean"] + ([""] if counts is not None else []) + [fmt(g.metric("mean_iou").mean) for g in groups])
    doc.table(header, rows)
    doc.p(
        "`–`: the class is neither in the ground truth nor predicted (not averaged into mIoU)."
        + (" Groups of several seeds: the mean over their runs." if ctx.multi_seed else "")
    )
    rel, path = ctx.figure("per_class_iou.png")
    per_class_iou_figure(
        {g.name: {n: g.per_class_iou(n) for n in names} for g in groups}, path, title=f"per-class IoU on {ctx.split}"
    )
    doc.images([(rel, "per-class IoU of every model")])


def confusion(doc: Doc, ctx: ReportContext) -> None:
    if not ctx.done_groups:
        return
    best = max(ctx.done_groups, key=lambda g: g.metric("mean_iou").mean or 0.0)
    run = best.first_done
    if not run.metrics.get("confusion_matrix"):
        return
    names = list(run.metrics["per_class_iou"])
    doc.h(2, f"Confusion matrix of the best model ({best.name})")
    rel, path = ctx.figure("confusion.png")
    confusion_figure(
        run.metrics["confusion_matrix"], names, path, f"{run.label}: confusion on {ctx.split}, row-normalised"
    )
    which = f" Shown: its run `{run.run.path.name}`." if len(best.runs) > 1 else ""
    doc.p(
        f"Rows: true class; columns: predicted class; each row sums to 1 (share of that class's pixels). "
        f"Best model by test mIoU: **{best.name}** ({fmt(best.metric('mean_iou').mean)}).{which}"
    )
    doc.images([(rel, f"row-normalised confusion matrix of {best.name}")])


# ----------------------------------------------------------------------------- cost, recipes, data


def cost(doc: Doc, ctx: ReportContext) -> None:
    if not ctx.done:
        return
    doc.h(2, "Cost: parameters and time")
    rows = []
    for r in ctx.done:
        m, c = r.metrics, r.cfg or {}
        rows.append(
            [
                r.label,
                c.get("model", ""),
                f"{m.get('parameters', 0):,}",
                fmt(m.get("seconds_per_epoch"), 1),
                f"{m.get('epochs_run')}/{c.get('epochs')}",
                str(m.get("best_epoch")),
                "yes" if m.get("stopped_early") else "no",
                str(r.entry.get("device") or "–"),
            ]
        )
    doc.table(
        [
            "experiment" if ctx.paper else "run",
            "model",
            "parameters",
            "s/epoch",
            "epochs run",
            "best epoch",
            "stopped early",
            "device",
        ],
        rows,
    )
    text = "Seconds per epoch include the early-stopping evaluation."
    if ctx.paper:
        text += (
            " The paper reports about 8 s per epoch for the baseline and 20 s for Wilson's model on its GPU (DataHub)."
        )
    doc.p(text)


def _recipe_row(g: RunGroup, ctx: ReportContext) -> list[str]:
    c = next((r.cfg for r in g.runs if r.cfg), None) or {}
    first = [g.name] + ([g.experiment.config if g.experiment else "–"] if ctx.paper else [])
    if not c:
        return first + ["–"] * 10
    size = "native" if c.get("image_size") is None else f"{c['image_size']} crop"
    if c.get("scale_range"):
        size += f", scale {c['scale_range']}"
    kw = ", ".join(f"{k}={v}" for k, v in (c.get("model_kwargs") or {}).items()) or "–"
    return first + [
        f"{c.get('model')} ({kw})",
        f"{c.get('optimizer')} {c.get('lr')}",
        str(c.get("epochs")),
        str(c.get("patience")),
        c.get("scheduler", ""),
        f"h{c.get('hflip')}/v{c.get('vflip')}",
        c.get("class_weighting", ""),
        size,
        str(c.get("batch_size")),
        "all" if c.get("max_train_images") is None else str(c["max_train_images"]),
    ]


def recipes(doc: Doc, ctx: ReportContext) -> None:
    doc.h(2, "Recipes")
    where = "; YAMLs in `configs/`" if ctx.paper else ""
    doc.p(f"The config each run actually trained with (its `{RunDir.CONFIG}`){where}.")
    header = ["experiment" if ctx.paper else "run"] + (["config"] if ctx.paper else [])
    doc.table(
        header
        + [
            "model",
            "optimizer, lr",
            "epochs",
            "patience",
            "scheduler",
            "flips",
            "class weights",
            "train size",
            "batch",
            "max train images",
        ],
        [_recipe_row(g, ctx) for g in ctx.groups],
    )
    if ctx.quick_overrides is not None:
        overrides = ctx.quick_overrides
        doc.p("**Quick overrides** (`--quick`), applied on top of each YAML (`epochs` is a cap):")
        items = [f"all experiments: `{json.dumps(overrides.get('all', {}))}`"]
        items += [f"{name}: `{json.dumps(over)}`" for name, over in (overrides.get("per_experiment") or {}).items()]
        doc.ul(items)
    notes = {f"{r.group or r.label}: {note}": None for r in ctx.runs for note in (r.entry.get("notes") or [])}
    if notes:
        doc.p("**Notes**")
        doc.ul(list(notes))


def _versions(device: str) -> list[str]:
    dev = device
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    elif device == "cpu":
        dev = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"
    return [
        f"python {platform.python_version()} ({platform.platform()})",
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}",
        f"vocseg {__version__}",
        f"device: {dev}",
    ]


def _data_items(ctx: ReportContext) -> list[str]:
    info = ctx.info
    kind = "synthetic (vocseg's built-in generator)" if info.synthetic else "PASCAL VOC 2012 format"
    items = [
        f"data: `{info.voc_root}`, {kind}",
        "splits on disk: " + ", ".join(f"{k} {v}" for k, v in info.split_sizes.items()),
        "images used: "
        + ", ".join(f"{k} {v}" for k, v in info.used.items())
        + " (early stopping on a holdout of the train split, the test split reported)",
    ]
    if info.synthetic and info.synthetic_seed is not None:
        items.append(f"synthetic generator seed: {info.synthetic_seed}")
    data_keys = ("data_root", "train_split", "val_split", "val_holdout", "max_val_images", "num_classes")
    if len({tuple(str(r.cfg.get(k)) for k in data_keys) for r in ctx.runs if r.cfg}) > 1:
        items.append("**the runs used different data or test splits**: the data above is the first run's")
    return items


def data_seeds_versions(doc: Doc, ctx: ReportContext) -> None:
    doc.h(2, "Data, seeds, versions")
    items = _data_items(ctx) if ctx.info is not None else []
    seeds = sorted({str((r.cfg or {}).get("seed")) for r in ctx.runs if r.cfg})
    items.append(f"training seed(s): {', '.join(seeds) or '–'}; holdout split seed: {HOLDOUT_SEED}")
    doc.ul(items + _versions(ctx.device))


SECTIONS = (header, results, statistics, curves, example, per_class, confusion, cost, recipes, data_seeds_versions)
