"""The report: built from run folders, self-contained HTML, the paper's rows, rendering and figures.

Also holds the helpers the compare and reproduce tests share: fake run folders written through
:class:`RunDir` (config, metrics, history, per-image counts, a real best checkpoint) and an HTML reader.
"""
from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vocseg.checkpoint import save_checkpoint
from vocseg.config import Config
from vocseg.data.classes import IGNORE_INDEX
from vocseg.data.voc import VOCSegmentation
from vocseg.experiments import EXPERIMENTS
from vocseg.metrics import ConfusionMatrix
from vocseg.models import create_model
from vocseg.plots import error_map, error_panel_figure, per_class_iou_figure
from vocseg.report import Doc, ReportRun, all_background_metrics, write_report
from vocseg.rundir import RunDir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_MODEL = dict(model="unet", model_kwargs={"base_channels": 4})  # 0.1 M parameters: quick to save and run


# ----------------------------------------------------------------------------- shared helpers


class HTMLReport(HTMLParser):
    """The parts of a report page the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.captions: list[str] = []
        self.rows: list[list[str]] = []
        self.text: list[str] = []
        self.external: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_caption = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        if tag in ("link", "script", "iframe") or (tag == "a" and (attrs.get("href") or "").startswith("http")):
            self.external.append(tag)
        if tag == "tr":
            self._row = []
        if tag in ("td", "th"):
            self._cell = []
        if tag == "figcaption":
            self._in_caption = True
            self.captions.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_caption:
            self.captions[-1] += data

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def read_report(md_path: Path, html_path: Path) -> HTMLReport:
    """Parse the HTML; check it is self-contained (every image a valid embedded PNG) and that the
    Markdown points at the same number of PNG files under figures/."""
    page = HTMLReport()
    page.feed(html_path.read_text(encoding="utf-8"))
    page.close()
    assert not page.external
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    md = md_path.read_text(encoding="utf-8")
    refs = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(refs) == len(page.imgs)
    for ref in refs:
        assert ref.startswith("figures/") and (md_path.parent / ref).read_bytes()[:8] == PNG_SIGNATURE
    return page


def fake_predictions(masks: list[np.ndarray], error_rate: float, seed: int) -> list[np.ndarray]:
    """Each mask with a share ``error_rate`` of its pixels set to a wrong class (void left void)."""
    rng = np.random.default_rng(seed)
    preds = []
    for mask in masks:
        pred = mask.copy()
        flip = (rng.random(mask.shape) < error_rate) & (mask != IGNORE_INDEX)
        pred[flip] = (pred[flip].astype(np.int64) + rng.integers(1, 21, int(flip.sum()))) % 21
        pred[mask == IGNORE_INDEX] = 0
        preds.append(pred)
    return preds


def per_image_counts(preds: list[np.ndarray], masks: list[np.ndarray], n: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Per-image, per-class intersections and unions, void ignored (hand-computed with numpy)."""
    inter, union = np.zeros((len(masks), n), np.int64), np.zeros((len(masks), n), np.int64)
    for i, (p, m) in enumerate(zip(preds, masks)):
        valid = m != IGNORE_INDEX
        gt, pr = np.bincount(m[valid], minlength=n)[:n], np.bincount(p[valid], minlength=n)[:n]
        inter[i] = np.bincount(m[valid & (p == m)], minlength=n)[:n]
        union[i] = gt + pr - inter[i]
    return inter, union


def write_fake_run(path: Path, data_root: Path, *, error_rate: float = 0.2, seed: int = 0, **cfg_changes) -> RunDir:
    """A finished run folder whose numbers all come from one set of fake predictions on the val split
    (metrics from a ConfusionMatrix, per-image counts from numpy), with a real best checkpoint."""
    cfg = Config(**{**TINY_MODEL, "data_root": str(data_root), "val_holdout": 0.0, "seed": seed, "out": str(path),
                    "epochs": 3, **cfg_changes})
    run = RunDir(path)
    run.prepare(resume=False, overwrite=False)
    run.save_config(cfg.to_dict())
    ds = VOCSegmentation(data_root, cfg.val_split)
    masks = [ds.load(i)[1] for i in range(len(ds))]
    preds = fake_predictions(masks, error_rate, seed=1000 * seed + int(error_rate * 100))
    cm = ConfusionMatrix(21)
    for p, m in zip(preds, masks):
        cm.update(torch.from_numpy(p), torch.from_numpy(m))
    metrics = {**cm.compute(), "loss": 1.0 + error_rate, "ce_loss": 1.0 + error_rate, "split": cfg.val_split,
               "num_images": len(ds), "best_epoch": 2, "epochs_run": 3, "stopped_early": False,
               "seconds_per_epoch": 1.5, "parameters": 122193, "confusion_matrix": cm.matrix.tolist()}
    run.write_metrics(metrics)
    run.write_per_image(list(ds.ids), *per_image_counts(preds, masks))
    run.write_history([{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_miou": 0.1 * e,
                        "val_pixel_accuracy": 0.5, "lr": 1e-3, "seconds": 1.5} for e in (1, 2, 3)])
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=cfg.num_classes, **cfg.model_kwargs)
    save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "model_name": cfg.model,
                     "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "class_names": None}, run.best_path)
    return run


# ----------------------------------------------------------------------------- the report from run folders


def test_report_of_the_papers_experiments_from_run_folders(tmp_path, tiny_voc, vocseg_cache):
    """Four experiments finished (one with two seeds), three not run: every experiment has its row with
    its paper name, the HTML is self-contained, and the seeds are one row, mean ± std."""
    runs = []
    for k, exp in enumerate(EXPERIMENTS):
        path = tmp_path / "runs" / exp.name
        if k < 4:
            write_fake_run(path, tiny_voc, error_rate=0.4 - 0.1 * k)
        runs.append(ReportRun(exp.name, RunDir(path), exp, exp.name))
    write_fake_run(tmp_path / "runs" / "weighted-seed1", tiny_voc, error_rate=0.15, seed=1)
    runs.append(ReportRun("weighted-seed1", RunDir(tmp_path / "runs" / "weighted-seed1"), EXPERIMENTS[3], "weighted"))
    md, html = write_report(tmp_path, runs, title="Study", intro="Made by a test.")
    page = read_report(md, html)

    table = {row[0]: row for row in page.rows if row and row[-1] in ("done", "not run")}
    for exp in EXPERIMENTS:
        assert table[exp.name][1] == exp.title and table[exp.name][2] == f"Table {exp.table}"
    assert [table[e.name][-1] for e in EXPERIMENTS] == ["done"] * 4 + ["not run"] * 3
    assert "±" in table["weighted"][6] and "±" not in table["augment"][6]  # mIoU: mean ± std over 2 seeds
    assert table["weighted"][-2] == "2" and table["baseline"][-2] == "1"  # the seeds column
    assert any(row[0] == "all-background predictor" for row in page.rows)
    # curves of 5 runs, the comparison figure, per-class bars, the confusion matrix
    assert len(page.imgs) == 5 + 3
    assert any("every model" in c for c in page.captions) and any("confusion matrix" in c for c in page.captions)
    text = page.all_text
    assert "Synthetic numbers are not VOC numbers" in text and "averaged per batch" in text
    assert "weighted beats augment by" in text or "augment beats weighted by" in text  # builds_on pairs
    assert "4 test images; seeds: 2 of weighted, 1 of augment." in text


def test_report_without_paper_experiments_has_no_paper_columns(tmp_path, tiny_voc, vocseg_cache):
    write_fake_run(tmp_path / "a", tiny_voc, error_rate=0.1)
    runs = [ReportRun("a", RunDir(tmp_path / "a")), ReportRun("never", RunDir(tmp_path / "never"))]
    md, html = write_report(tmp_path / "report", runs, title="Two runs", intro="Test.", device="cpu")
    page = read_report(md, html)
    header = next(row for row in page.rows if row and row[0] == "run")
    assert "paper IoU" not in header and header[-1] == "status"
    results = page.rows[page.rows.index(header) + 1:][:3]  # the results table comes first
    assert [(row[0], row[-1]) for row in results] == [("a", "done"), ("never", "not run"),
                                                      ("all-background predictor", "computed on val")]
    assert "Paper:" not in page.all_text and "Tables 5–11" not in page.all_text


def test_all_background_metrics_hand_computed():
    # 60 background, 30 class 1, 10 class 3; classes 2, 4.. absent
    bg = all_background_metrics(np.array([60, 30, 0, 10, 0]))
    assert bg["pixel_accuracy"] == pytest.approx(0.6)
    assert bg["mean_iou"] == pytest.approx(0.6 / 3)
    assert bg["mean_accuracy"] == pytest.approx(1 / 3)
    assert bg["fw_iou"] == pytest.approx(0.36)


# ----------------------------------------------------------------------------- rendering and figures


def test_doc_renders_the_same_blocks_to_markdown_and_html(tmp_path):
    (tmp_path / "figures").mkdir()
    per_class_iou_figure({"a": {"background": 0.9, "cat": None}, "b": {"background": 0.8, "cat": 0.3}},
                         tmp_path / "figures" / "bars.png", title="bars")
    doc = Doc()
    doc.h(1, "Title")
    doc.p("plain `code` and **bold**")
    doc.p("careful", "note")
    doc.ul(["one", "two"])
    doc.table(["name", "mIoU", "runs"], [["a|b", "0.5000 ± 0.0100", "2/3"], ["c", "–", "1/3"]])
    doc.images([("figures/bars.png", "per-class bars")])
    md = doc.markdown()
    assert "# Title" in md and "> **Note.** careful" in md and "- two" in md
    assert "| a\\|b | 0.5000 ± 0.0100 | 2/3 |" in md and "|---|---:|---:|" in md  # numbers right-aligned
    page = HTMLReport()
    page.feed(doc.html(tmp_path, "Title"))
    assert page.rows[1] == ["a|b", "0.5000 ± 0.0100", "2/3"]
    assert "<code>code</code>" in doc.html(tmp_path, "Title") and len(page.imgs) == 1


def test_error_panel_marks_exactly_the_wrong_scored_pixels(tmp_path):
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 8
    mask[0, :] = IGNORE_INDEX
    pred = mask.copy()
    pred[5:10, 5:7] = 0  # 10 wrong pixels
    pred[0, :] = 3  # void: never an error
    errors = error_map(image, mask, pred)
    red = np.all(errors == (230, 30, 30), axis=-1)
    assert red.sum() == 10 and red[5:10, 5:7].all()
    assert np.all(errors[0] == (150, 150, 150))
    error_panel_figure(image, mask, pred, tmp_path / "panel.png", title="x", class_names=["background"] * 21)
    assert (tmp_path / "panel.png").read_bytes()[:8] == PNG_SIGNATURE
