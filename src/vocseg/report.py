"""The reproduction report: ``DIR/report.md`` (images under ``DIR/figures/``) and a self-contained
``DIR/report.html`` (images embedded as base64 data URIs, inline CSS, nothing external).

It holds, for the experiments of :data:`vocseg.reproduce.EXPERIMENTS` found in ``DIR/runs/``:

* one results table (loss, mIoU, pixel accuracy, mean accuracy, fw IoU) beside the paper's reported
  loss / IoU / pixel accuracy, with an all-background predictor row computed from the test split;
* each run's train/val loss curves (the paper's Figures 2-8);
* one test image with the ground truth and every model's mask and overlay (Figures 9-11);
* per-class IoU of every model; a row-normalised confusion matrix of the best model;
* seconds per epoch and parameters; the recipe each run actually used (quick overrides included);
* the data (root, images per split, synthetic or not), seeds and versions.

Both files are rendered from one list of blocks, so they always say the same thing.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import platform
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from .errors import VocsegError

FIGURES = "figures"
SYNTHETIC_DISCLAIMER = (
    "The data is synthetic: these runs used vocseg's built-in synthetic dataset, not PASCAL VOC 2012. "
    "Synthetic numbers are not VOC numbers and cannot be compared with the paper's; they only show "
    "that the pipeline works end to end and how the experiments rank against each other on this data."
)


# ----------------------------------------------------------------------------- collecting the runs


@dataclass
class Run:
    name: str
    exp: Any  # reproduce.Experiment
    run_dir: Path
    status: str  # done / failed / not run
    entry: dict[str, Any] = field(default_factory=dict)  # reproduce.json's record
    cfg: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.metrics is not None


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


def _read_file(path: Path, parse: Any, error: type[Exception]) -> Any:
    """Parse a run file; a corrupt one is an error naming it (delete it, or the run folder, to redo the run)."""
    try:
        return parse(path.read_text())
    except (error, UnicodeDecodeError) as e:
        raise VocsegError(f"{path} is corrupt ({e}); delete it (or its run folder) and rerun to redo that run") from None


def collect_runs(out: Path, experiments: Sequence[Any]) -> tuple[list[Run], dict[str, Any]]:
    from .reproduce import load_manifest

    manifest = load_manifest(out)
    runs = []
    for exp in experiments:
        run_dir = out / "runs" / exp.name
        entry = manifest["experiments"].get(exp.name, {})
        run = Run(exp.name, exp, run_dir, "not run", entry)
        if (run_dir / "config.yaml").is_file():
            run.cfg = _read_file(run_dir / "config.yaml", yaml.safe_load, yaml.YAMLError)
        if (run_dir / "metrics.json").is_file():
            run.metrics = _read_file(run_dir / "metrics.json", json.loads, ValueError)
            run.history = _read_history(run_dir / "history.csv")
            run.status = "done"
        elif entry.get("status") == "failed":
            run.status = "failed"
        elif (run_dir / "last.pt").is_file():
            run.status = "interrupted"
        runs.append(run)
    return runs, manifest


# ----------------------------------------------------------------------------- data and the test split


@dataclass
class DataInfo:
    voc_root: Path
    synthetic: bool
    synthetic_seed: int | None
    split_sizes: dict[str, int]  # full splits on disk
    used: dict[str, int]  # train / early-stopping holdout / test, as the runs used them
    test_split: str
    test_ids: list[str]
    class_names: list[str]
    test_counts: np.ndarray  # pixels per class in the test split (void excluded)
    example_id: str | None
    example_classes: list[int]


def data_info(cfg_dict: dict[str, Any]) -> DataInfo:
    """What data the runs used, the test split's class counts, and the example image (the test image
    with the most object classes; ties go to the one with more foreground)."""
    from .config import config_from_dict
    from .data.builder import class_names_for, resolve_data_root, split_ids
    from .data.classes import IGNORE_INDEX
    from .data.synthetic import ID_PREFIX
    from .data.voc import VOCSegmentation, load_mask, read_split

    cfg = config_from_dict(cfg_dict, "config.yaml")
    root = resolve_data_root(cfg.data_root)
    ids = split_ids(root, cfg)
    sizes = {}
    for split in dict.fromkeys((cfg.train_split, cfg.val_split)):
        try:
            sizes[split] = len(read_split(root, split))
        except VocsegError:
            pass
    test_ids = ids.test if ids.test is not None else ids.val
    test_split = ids.test_name or ids.val_name
    used = {"train": len(ids.train), f"early stopping ({ids.val_name})": len(ids.val)}
    if ids.test is not None:
        used[f"test ({ids.test_name})"] = len(ids.test)
    synthetic = all(i.startswith(ID_PREFIX) for i in ids.train + test_ids)
    m = re.search(r"synthetic-v\d+-\d+-\d+-s(\d+)-\d+", str(root))
    names = class_names_for(cfg)

    counts = np.zeros(cfg.num_classes, np.int64)
    best_key, best_id, best_classes = None, None, []
    test_ds = VOCSegmentation(root, test_split, ids=test_ids, num_classes=cfg.num_classes)
    for i, image_id in enumerate(test_ids):
        mask = load_mask(test_ds.mask_path(i), cfg.num_classes)
        valid = mask[mask != IGNORE_INDEX]
        c = np.bincount(valid, minlength=cfg.num_classes)[: cfg.num_classes]
        counts += c
        objects = [int(k) for k in np.nonzero(c)[0] if k != 0]
        key = (len(objects), float(c[1:].sum()) / max(float(c.sum()), 1.0))
        if best_key is None or key > best_key:
            best_key, best_id, best_classes = key, image_id, objects
    return DataInfo(
        root, synthetic, int(m.group(1)) if m else None, sizes, used, test_split, list(test_ids), names,
        counts, best_id, best_classes,
    )


def all_background_metrics(counts: np.ndarray) -> dict[str, float | None]:
    """Metrics of predicting background (class 0) at every pixel, from the true class counts.

    Pixel accuracy is background's share; background's IoU is that same share (all pixels are
    predicted background), every other present class scores IoU 0, absent classes are not counted:
    mIoU = share / number of classes present. Mean accuracy = 1 / classes present; fw IoU = share^2.
    """
    total = float(counts.sum())
    if total == 0:
        return {"pixel_accuracy": None, "mean_iou": None, "mean_accuracy": None, "fw_iou": None}
    share = float(counts[0]) / total
    present = int((counts > 0).sum())
    if counts[0] == 0:
        present += 1  # background is predicted, so it has a non-empty union (IoU 0)
    return {
        "pixel_accuracy": share,
        "mean_iou": share / present,
        "mean_accuracy": (1.0 if counts[0] > 0 else 0.0) / max(int((counts > 0).sum()), 1),
        "fw_iou": share * share,
    }


# ----------------------------------------------------------------------------- figures


def _plt():
    from . import viz  # noqa: F401  (selects the Agg backend)
    import matplotlib.pyplot as plt

    return plt


def predict_example(runs: list[Run], info: DataInfo, device: str = "cpu") -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The example image, its ground truth, and each finished run's prediction (from ``best.pt``, with
    the checkpoint's own normalisation, at native resolution)."""
    import torch

    from .data.transforms import SegmentationPresetEval
    from .data.voc import VOCSegmentation
    from .evaluate import load_model

    raw = VOCSegmentation(info.voc_root, info.test_split, ids=[info.example_id], num_classes=len(info.class_names))
    image, mask = raw.load(0)
    preds = {}
    for run in runs:
        if not run.done or not (run.run_dir / "best.pt").is_file():
            continue
        model, ckpt = load_model(run.run_dir / "best.pt", device)
        norm = ckpt["normalization"]
        ds = VOCSegmentation(
            info.voc_root, info.test_split, SegmentationPresetEval(norm["mean"], norm["std"]),
            ids=[info.example_id], num_classes=len(info.class_names),
        )
        x, _ = ds[0]
        with torch.inference_mode():
            logits = model(x[None].to(device))
        preds[run.name] = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
    return image, mask, preds


def comparison_figure(image: np.ndarray, mask: np.ndarray, preds: dict[str, np.ndarray], names: list[str],
                      path: Path, title: str = "", labels: dict[str, str] | None = None) -> None:
    """Figures 9-11 in one: the image above the ground truth, then per model its overlay above its mask."""
    import math

    from matplotlib.patches import Patch

    from .viz import colorize, overlay

    plt = _plt()
    labels = labels or {}
    cols = 1 + len(preds)
    h, w = mask.shape
    panel_w = 2.4 * min(max(w / h, 0.75), 1.5)
    fig_w = max(panel_w * cols, 6.0)
    shown = {int(c) for c in np.unique(mask) if c != 255}
    for pred in preds.values():
        shown |= {int(c) for c in np.unique(pred)}
    n_items = len(shown) + 1
    ncol = max(2, min(n_items, int(fig_w / 1.35)))
    legend_h = 0.25 * math.ceil(n_items / ncol) + 0.2
    panel_h = panel_w * h / w
    fig_h = 2 * panel_h + 0.6 + 0.45 + legend_h + (0.35 if title else 0.0)
    fig, axes = plt.subplots(2, cols, figsize=(fig_w, fig_h), dpi=90, squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("image", fontsize=9)
    axes[1, 0].imshow(colorize(mask))
    axes[1, 0].set_title("ground truth", fontsize=9)
    for j, (name, pred) in enumerate(preds.items(), start=1):
        label = labels.get(name, name)
        axes[0, j].imshow(overlay(image, pred))
        axes[0, j].set_title(f"{label}\noverlay", fontsize=8)
        axes[1, j].imshow(colorize(pred))
        axes[1, j].set_title("mask", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    cmap = colorize(np.arange(256, dtype=np.uint8)[None])[0] / 255.0
    handles = [Patch(facecolor=cmap[c], edgecolor="0.5", label=names[c] if c < len(names) else str(c)) for c in sorted(shown)]
    handles.append(Patch(facecolor=cmap[255], edgecolor="0.5", label="void (not scored)"))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    top = 1 - (0.35 + 0.45) / fig_h if title else 1 - 0.45 / fig_h
    fig.subplots_adjust(left=0.01, right=0.99, bottom=legend_h / fig_h + 0.01, top=top, wspace=0.05, hspace=0.6 / panel_h)
    fig.savefig(path)
    plt.close(fig)


def confusion_figure(matrix: Sequence[Sequence[float]], names: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.38 * n + 2.5, 0.38 * n + 1.8), dpi=90)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(names, rotation=90, fontsize=8)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            if norm[i, j] >= 0.1:
                label = f"{norm[i, j]:.2f}"
                label = "1" if label == "1.00" else label.lstrip("0")
                ax.text(j, i, label, ha="center", va="center",
                        fontsize=6, color="white" if norm[i, j] > 0.6 else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves_figure(run: Run, path: Path) -> bool:
    """The run's loss curves (the paper's Figure of that experiment), titled with the experiment."""
    from .viz import plot_curves

    title = f"{run.name} (paper: Figure {run.exp.figure}, Table {run.exp.table})"
    if run.history:
        plot_curves(run.history, path, title=title)
        return True
    if (run.run_dir / "curves.png").is_file():
        shutil.copyfile(run.run_dir / "curves.png", path)
        return True
    return False


# ----------------------------------------------------------------------------- rendering (md and html)


def _f(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+%?$")


def _numeric_columns(header: list[str], rows: list[list[str]]) -> list[bool]:
    """A column is right-aligned when every filled cell of it is a number (``–`` counts as empty)."""
    flags = []
    for j in range(len(header)):
        cells = [str(r[j]).strip() for r in rows if j < len(r) and str(r[j]).strip() not in ("", "–")]
        flags.append(bool(cells) and all(_NUMBER.match(c) or re.match(r"^\d+/\d+$", c) for c in cells))
    return flags


def _inline_md_to_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return out


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{border-bottom:1px solid #bbb;padding-bottom:.15em;margin-top:1.8em}
table{border-collapse:collapse;margin:.8em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#f0f0f0}.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.note{border-left:5px solid #d9822b;background:#fff6ea;padding:.6em 1em;margin:1em 0}
.info{border-left:5px solid #3b82c4;background:#eef5fc;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0;display:inline-block;vertical-align:top}figcaption{font-size:.85em;color:#555}
img{max-width:100%;border:1px solid #ddd}.grid figure{width:32%;margin-right:1%}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}
"""


class Doc:
    """Blocks rendered to both Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, kind: str = "") -> None:
        self.blocks.append(("p", text, kind))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def images(self, items: list[tuple[str, str]], grid: bool = False) -> None:
        self.blocks.append(("img", items, grid))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"{'#' * b[1]} {b[2]}")
            elif b[0] == "p":
                if b[2] in ("note", "info"):
                    prefix = "**Note.** " if b[2] == "note" else ""
                    out.append("> " + prefix + b[1].strip().replace("\n", "  \n> "))
                else:
                    out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {item}" for item in b[1]))
            elif b[0] == "table":
                header, rows = b[1], b[2]
                esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
                num = _numeric_columns(header, rows)
                lines = ["| " + " | ".join(map(esc, header)) + " |",
                         "|" + "|".join("---:" if n else "---" for n in num) + "|"]
                lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
                out.append("\n".join(lines))
            elif b[0] == "img":
                out.append("\n\n".join(f"![{cap}]({rel})\n\n*{cap}*" for rel, cap in b[1]))
        return "\n\n".join(out) + "\n"

    def html(self, base: Path, title: str) -> str:
        parts = [
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        ]
        for b in self.blocks:
            if b[0] == "h":
                parts.append(f"<h{b[1]}>{_inline_md_to_html(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                cls = f' class="{b[2]}"' if b[2] else ""
                prefix = "<strong>Note.</strong> " if b[2] == "note" else ""
                body = _inline_md_to_html(b[1].strip()).replace("\n", "<br>\n")
                parts.append(f"<p{cls}>{prefix}{body}</p>")
            elif b[0] == "ul":
                parts.append("<ul>" + "".join(f"<li>{_inline_md_to_html(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                num = _numeric_columns(b[1], b[2])
                cls = lambda j: ' class="l"' if not num[j] else ""  # noqa: E731
                head = "".join(f"<th{cls(j)}>{_inline_md_to_html(str(c))}</th>" for j, c in enumerate(b[1]))
                body = "".join(
                    "<tr>" + "".join(f"<td{cls(j)}>{_inline_md_to_html(str(c))}</td>" for j, c in enumerate(row))
                    + "</tr>" for row in b[2]
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                figs = []
                for rel, cap in b[1]:
                    data = base64.b64encode((base / rel).read_bytes()).decode("ascii")
                    figs.append(
                        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(cap)}">'
                        f"<figcaption>{_inline_md_to_html(cap)}</figcaption></figure>"
                    )
                parts.append(f'<div class="{"grid" if b[2] else "figs"}">' + "".join(figs) + "</div>")
        parts += ["</body>", "</html>"]
        return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the report


def _versions(device: str) -> list[str]:
    import torch
    import torchvision

    from . import __version__

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


def write_report(out: str | Path, experiments: Sequence[Any] | None = None, device: str = "cpu") -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` for the runs under ``out/runs``; return their paths."""
    from .reproduce import EXPERIMENTS

    out = Path(out)
    experiments = list(experiments) if experiments is not None else list(EXPERIMENTS)
    runs, manifest = collect_runs(out, experiments)
    figdir = out / FIGURES
    figdir.mkdir(parents=True, exist_ok=True)
    done = [r for r in runs if r.done]
    ref = next((r for r in runs if r.cfg is not None and r.done), None) or next((r for r in runs if r.cfg), None)
    info = data_info(ref.cfg) if ref is not None else None
    quick = bool(manifest.get("quick"))

    doc = Doc()
    title = "Reproduction of Isayama et al., FCNs for semantic segmentation on PASCAL VOC 2012 (Tables 5–11)"
    doc.h(1, title)
    doc.p(
        f"Generated by `vocseg reproduce` into `{out}`"
        + (" with `--quick` (a CPU smoke run: few epochs, small crops, capped image counts)." if quick else ".")
        + f" {len(done)} of {len(runs)} experiments have results."
    )
    if info is not None and info.synthetic:
        doc.p(SYNTHETIC_DISCLAIMER, "note")
    if quick:
        doc.p(
            "Quick mode: every number below comes from a few epochs on a handful of small images; the "
            "recipes are the paper's, shortened (see *Recipes*). Do not read them as the study's results.",
            "note",
        )
    failed = [r for r in runs if r.status == "failed"]
    for r in failed:
        doc.p(f"Experiment **{r.name}** (Table {r.exp.table}) failed: {r.entry.get('error', '').strip()}", "note")

    # --- results
    doc.h(2, "Results")
    split = info.test_split if info else "val"
    doc.p(
        f"Ours: every metric from one confusion matrix accumulated over the whole test split (`{split}`, "
        "native resolution, void pixels ignored), using the best checkpoint by early-stopping holdout loss. "
        "`loss` is the training criterion (class-weighted for weighted runs, as the paper's Tables 8–11 "
        "seem to report it); `CE` is the plain cross-entropy, comparable across all runs. Paper: the "
        "numbers of Tables 5–11 as printed (loss, IoU, pixel accuracy; no mean accuracy or fw IoU reported)."
    )
    header = ["experiment", "paper table", "model", "loss", "CE", "mIoU", "pixel acc", "mean acc", "fw IoU",
              "paper loss", "paper IoU", "paper pixel acc", "status"]
    rows = []
    for r in runs:
        m = r.metrics or {}
        model = (r.cfg or {}).get("model", "")
        rows.append([
            r.name, f"Table {r.exp.table}", model, _f(m.get("loss")), _f(m.get("ce_loss")), _f(m.get("mean_iou")),
            _f(m.get("pixel_accuracy")), _f(m.get("mean_accuracy")), _f(m.get("fw_iou")),
            _f(r.exp.paper_loss), _f(r.exp.paper_iou), _f(r.exp.paper_pixel_accuracy), r.status,
        ])
    if info is not None:
        bg = all_background_metrics(info.test_counts)
        rows.append([
            "all-background predictor", "–", "–", "–", "–", _f(bg["mean_iou"]), _f(bg["pixel_accuracy"]),
            _f(bg["mean_accuracy"]), _f(bg["fw_iou"]), "–", "–", "–", f"computed on {split}",
        ])
    doc.table(header, rows)
    if info is not None:
        n_present = int((info.test_counts > 0).sum())
        share = float(info.test_counts[0]) / max(float(info.test_counts.sum()), 1.0)
        doc.p(
            f"The all-background row predicts class 0 everywhere: its pixel accuracy is background's share "
            f"of the test split's labelled pixels ({share:.4f}), its mIoU that share divided by the "
            f"{n_present} classes present (background's IoU equals its share; every other class scores 0)."
        )
    doc.p(
        "**Reading the paper's numbers.** The paper's best model reaches IoU 0.1147 at pixel accuracy "
        "0.7439, and its baseline 0.0634 at 0.7300. On VOC val roughly three quarters of the labelled "
        "pixels are background, so predicting background everywhere already scores a pixel accuracy of "
        "about 0.7 and an mIoU of about 0.7 / 21 ≈ 0.035: every model of the paper is barely above that "
        "trivial predictor. The paper does not say how IoU was computed; most likely it was averaged per "
        "batch (IoU per batch, averaged over batches, with classes absent from a batch handled somehow), "
        "which is neither the standard dataset-level mIoU nor comparable with it. Our mIoU is the standard "
        "one (per-class IoU from one confusion matrix over the split, averaged over the classes present), "
        "so compare the ordering of the experiments rather than the values.",
        "info",
    )

    # --- curves
    doc.h(2, "Loss curves (paper Figures 2–8)")
    doc.p(
        "Train and early-stopping-holdout loss per epoch (left axis) and holdout mIoU (right axis) of each "
        "run; the checkpoint reported above is the epoch with the lowest holdout loss."
    )
    curves = []
    for r in runs:
        rel = f"{FIGURES}/curves_{r.name}.png"
        if (r.done or r.history) and curves_figure(r, out / rel):
            curves.append((rel, f"{r.name}: train/val loss (paper Figure {r.exp.figure})"))
    if curves:
        doc.images(curves, grid=True)
    else:
        doc.p("No run has loss curves yet.")

    # --- example
    if info is not None and done and info.example_id is not None:
        doc.h(2, "One test image, every model (paper Figures 9–11)")
        image, mask, preds = predict_example(done, info, device)
        rel = f"{FIGURES}/comparison.png"
        classes = ", ".join(info.class_names[c] for c in info.example_classes) or "background only"
        labels = {
            r.name: (r.name if r.cfg.get("model") == r.name else f"{r.name} ({r.cfg.get('model')})")
            + f", mIoU {_f(r.metrics.get('mean_iou'), 3)}"
            for r in done if r.cfg
        }
        comparison_figure(image, mask, preds, info.class_names, out / rel, title=f"{info.example_id} ({split})",
                          labels=labels)
        doc.p(
            f"Test image `{info.example_id}` of `{split}`, chosen as the one with the most object classes "
            f"({classes}). Top row: image and each model's prediction overlaid on it; bottom row: ground "
            "truth and each model's colour mask (black: background; cream: void). Predictions are from "
            "`best.pt` at native resolution with the checkpoint's own normalisation."
        )
        doc.images([(rel, "image, ground truth, and every model's overlay and mask")])

    # --- per-class IoU
    if done:
        doc.h(2, "Per-class IoU")
        names = list(done[0].metrics["per_class_iou"])
        header = ["class"] + ([f"test pixels ({split})"] if info is not None else []) + [r.name for r in done]
        total = float(info.test_counts.sum()) if info is not None else 0.0
        rows = []
        for k, name in enumerate(names):
            row = [name]
            if info is not None:
                row.append(f"{info.test_counts[k] / total:.2%}" if total and k < len(info.test_counts) else "–")
            row += [_f(r.metrics["per_class_iou"].get(name)) for r in done]
            rows.append(row)
        rows.append(["mean"] + ([""] if info is not None else []) + [_f(r.metrics.get("mean_iou")) for r in done])
        doc.table(header, rows)
        doc.p("`–`: the class is neither in the ground truth nor predicted (not averaged into mIoU).")

        best = max(done, key=lambda r: r.metrics.get("mean_iou") or 0.0)
        if best.metrics.get("confusion_matrix"):
            doc.h(2, f"Confusion matrix of the best model ({best.name})")
            rel = f"{FIGURES}/confusion.png"
            confusion_figure(best.metrics["confusion_matrix"], names, out / rel,
                             f"{best.name}: confusion on {split}, row-normalised")
            doc.p(
                f"Rows: true class; columns: predicted class; each row sums to 1 (share of that class's "
                f"pixels). Best model by test mIoU: **{best.name}** ({_f(best.metrics.get('mean_iou'))})."
            )
            doc.images([(rel, f"row-normalised confusion matrix of {best.name}")])

    # --- cost
    if done:
        doc.h(2, "Cost: parameters and time")
        rows = []
        for r in done:
            m, c = r.metrics, r.cfg or {}
            rows.append([
                r.name, c.get("model", ""), f"{m.get('parameters', 0):,}", _f(m.get("seconds_per_epoch"), 1),
                f"{m.get('epochs_run')}/{c.get('epochs')}", str(m.get("best_epoch")),
                "yes" if m.get("stopped_early") else "no", r.entry.get("device", manifest.get("device", "")),
            ])
        doc.table(["experiment", "model", "parameters", "s/epoch", "epochs run", "best epoch", "stopped early",
                   "device"], rows)
        doc.p("Seconds per epoch include the early-stopping evaluation. The paper reports about 8 s per epoch "
              "for the baseline and 20 s for Wilson's model on its GPU (DataHub).")

    # --- recipes
    doc.h(2, "Recipes")
    doc.p("The config each run actually trained with (`runs/<name>/config.yaml`); YAMLs in `configs/`.")
    rows = []
    for r in runs:
        c = r.cfg or {}
        if not c:
            rows.append([r.name, r.exp.config] + ["–"] * 10)
            continue
        flips = f"h{c.get('hflip')}/v{c.get('vflip')}"
        size = "native" if c.get("image_size") is None else f"{c['image_size']} crop"
        if c.get("scale_range"):
            size += f", scale {c['scale_range']}"
        kw = ", ".join(f"{k}={v}" for k, v in (c.get("model_kwargs") or {}).items()) or "–"
        rows.append([
            r.name, r.exp.config, f"{c.get('model')} ({kw})", f"{c.get('optimizer')} {c.get('lr')}",
            str(c.get("epochs")), str(c.get("patience")), c.get("scheduler", ""), flips,
            c.get("class_weighting", ""), size, str(c.get("batch_size")),
            "all" if c.get("max_train_images") is None else str(c["max_train_images"]),
        ])
    doc.table(["experiment", "config", "model", "optimizer, lr", "epochs", "patience", "scheduler", "flips",
               "class weights", "train size", "batch", "max train images"], rows)
    if quick:
        overrides = manifest.get("quick_overrides") or {}
        doc.p("**Quick overrides** (`--quick`), applied on top of each YAML (`epochs` is a cap):")
        items = [f"all experiments: `{json.dumps(overrides.get('all', {}))}`"]
        for name, over in (overrides.get("per_experiment") or {}).items():
            items.append(f"{name}: `{json.dumps(over)}`")
        doc.ul(items)
    notes = [f"{r.name}: {note}" for r in runs for note in (r.entry.get("notes") or [])]
    if notes:
        doc.p("**Notes**")
        doc.ul(notes)

    # --- data, seeds, versions
    doc.h(2, "Data, seeds, versions")
    items = []
    if info is not None:
        kind = "synthetic (vocseg's built-in generator)" if info.synthetic else "PASCAL VOC 2012 format"
        items.append(f"data: `{info.voc_root}`, {kind}")
        items.append("splits on disk: " + ", ".join(f"{k} {v}" for k, v in info.split_sizes.items()))
        items.append("images used: " + ", ".join(f"{k} {v}" for k, v in info.used.items())
                     + " (early stopping on a holdout of the train split, the test split reported)")
        if info.synthetic and info.synthetic_seed is not None:
            items.append(f"synthetic generator seed: {info.synthetic_seed}")
    from .data.builder import HOLDOUT_SEED

    seeds = sorted({str((r.cfg or {}).get("seed")) for r in runs if r.cfg})
    items.append(f"training seed(s): {', '.join(seeds) or '–'}; holdout split seed: {HOLDOUT_SEED}")
    items += _versions(str(manifest.get("device") or device))
    doc.ul(items)

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    html_path.write_text(doc.html(out, title), encoding="utf-8")
    return md_path, html_path
