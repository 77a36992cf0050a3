"""`vocseg reproduce` and its report: the configs, the paper's numbers, skip/resume, and a self-contained HTML."""
from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vocseg import reproduce as R
from vocseg.config import FIELD_NAMES, load_config
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.errors import VocsegError
from vocseg.models import list_models
from vocseg.report import all_background_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHEAP = ["baseline", "cosine"]


# ----------------------------------------------------------------------------- configs and numbers


def test_every_config_loads_and_names_a_registered_model():
    folder = R.config_dir()
    paths = sorted(folder.glob("*.yaml"))
    assert {p.name for p in paths} >= {e.config for e in R.EXPERIMENTS} | {"modern.yaml"}
    for path in paths:
        cfg = load_config(path)
        assert cfg.model in list_models(), path
        raw = yaml.safe_load(path.read_text())
        assert set(raw) == FIELD_NAMES, f"{path.name} is not a complete Config: {FIELD_NAMES ^ set(raw)}"


def test_configs_follow_the_papers_recipes():
    cfg = {e.name: load_config(R.config_dir() / e.config) for e in R.EXPERIMENTS}
    for c in cfg.values():  # the protocol: early stopping on a holdout of train, native size, flips only
        assert c.val_holdout > 0 and c.image_size is None and c.scale_range is None and c.optimizer == "adam"
        assert c.monitor == "val_loss"
    b = cfg["baseline"]
    assert (b.model, b.lr, b.epochs, b.patience, b.scheduler, b.hflip, b.vflip, b.class_weighting) == (
        "fcn", 0.001, 13, 3, "none", 0.0, 0.0, "none")
    assert (cfg["cosine"].scheduler, cfg["cosine"].epochs, cfg["cosine"].patience) == ("cosine", 13, 3)
    a = cfg["augment"]
    assert (a.scheduler, a.hflip, a.vflip, a.epochs, a.patience) == ("cosine", 0.5, 0.5, 30, 9)
    w = cfg["weighted"]
    assert (w.class_weighting, w.lr, w.epochs, w.patience, w.hflip) == ("paper", 0.00185, 30, 9, 0.5)
    u = cfg["unpool"]
    assert (u.model, u.class_weighting, u.lr, u.epochs, u.patience) == ("unpool", "paper", 0.00185, 30, 9)
    t = cfg["transfer"]
    assert (t.model, t.lr, t.epochs, t.patience, t.class_weighting) == ("transfer", 0.00185, 50, 9, "paper")
    assert t.model_kwargs["encoder"] == "resnet34" and t.model_kwargs["pretrained"] is True
    n = cfg["unet"]
    assert (n.model, n.lr, n.epochs, n.patience, n.class_weighting) == ("unet", 0.001, 30, 9, "paper")
    assert n.model_kwargs.get("base_channels", 64) == 64


def test_experiments_hold_the_papers_numbers():
    assert [e.name for e in R.EXPERIMENTS] == ["baseline", "cosine", "augment", "weighted", "unpool", "transfer", "unet"]
    assert [e.table for e in R.EXPERIMENTS] == [5, 6, 7, 8, 9, 10, 11]
    assert [e.figure for e in R.EXPERIMENTS] == [2, 3, 4, 5, 6, 7, 8]
    base = R.get_experiment("baseline")  # Table 5
    assert (base.paper_loss, base.paper_iou, base.paper_pixel_accuracy) == (
        1.227619285168855, 0.063400418619098873, 0.7300453704336415)
    tl = R.get_experiment("transfer")  # Table 10
    assert (tl.paper_loss, tl.paper_iou, tl.paper_pixel_accuracy) == (
        1.5542771544145502, 0.11469616238837657, 0.7439139420571534)
    unet = R.get_experiment("unet")  # Table 11
    assert (unet.paper_loss, unet.paper_iou, unet.paper_pixel_accuracy) == (
        1.8510422473368437, 0.0866359447169563, 0.7346816464610721)
    assert R.get_experiment("unpool").paper_loss == pytest.approx(1.600414732228155)  # Table 9


def test_unknown_experiment_names_list_the_valid_ones(tmp_path):
    with pytest.raises(VocsegError, match=r"'nope'.*valid names: baseline, cosine, augment"):
        R.reproduce(tmp_path / "out", only=["baseline", "nope"])
    assert not (tmp_path / "out").exists()


def test_all_background_metrics_hand_computed():
    # 60 background, 30 class 1, 10 class 3; classes 2, 4.. absent
    bg = all_background_metrics(np.array([60, 30, 0, 10, 0]))
    assert bg["pixel_accuracy"] == pytest.approx(0.6)
    assert bg["mean_iou"] == pytest.approx(0.6 / 3)
    assert bg["mean_accuracy"] == pytest.approx(1 / 3)
    assert bg["fw_iou"] == pytest.approx(0.36)


@pytest.mark.parametrize("cached", [False, True])
def test_quick_transfer_trains_from_scratch_only_without_cached_weights(tmp_path, monkeypatch, cached):
    monkeypatch.setattr(R, "imagenet_weights_cached", lambda encoder: cached)
    cfg, applied, notes = R.experiment_config(R.get_experiment("transfer"), tmp_path, quick=True)
    assert cfg.model_kwargs["pretrained"] is cached
    assert cfg.out == str(tmp_path / "runs" / "transfer") and cfg.data_root is None
    assert cfg.epochs == R.quick_overrides(R.get_experiment("transfer"))["epochs"] < 50
    assert cfg.image_size == R.QUICK["image_size"]
    assert ("from scratch" in " ".join(notes)) is not cached
    full, applied_full, _ = R.experiment_config(R.get_experiment("transfer"), tmp_path, quick=False)
    assert full.model_kwargs["pretrained"] is True and full.epochs == 50 and applied_full == {}


# ----------------------------------------------------------------------------- end to end


class _Collector(HTMLParser):
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


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    generate_synthetic_voc(root, n_train=16, n_val=8, seed=1, max_side=96, workers=1)
    return root


@pytest.fixture
def tiny_quick(monkeypatch):
    monkeypatch.setattr(R, "QUICK", dict(epochs=2, image_size=64, scale_range=None, max_train_images=None,
                                         max_val_images=None, batch_size=4, num_workers=0))
    monkeypatch.setattr(R, "QUICK_PER_EXPERIMENT", {})


class _Interrupt:
    """A log that interrupts training right after the first epoch of the first run is saved."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt


@pytest.mark.slow
def test_reproduce_quick_resume_skip_and_self_contained_report(
    tmp_path, tiny_data, tiny_quick, vocseg_cache, torch_global_state
):
    out = tmp_path / "out"
    runs = out / "runs"

    # 1. Interrupted after epoch 1 of the first experiment: last.pt, no metrics.json.
    log = _Interrupt()
    with pytest.raises(KeyboardInterrupt):
        R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=log)
    assert (runs / "baseline" / "last.pt").is_file() and not (runs / "baseline" / "metrics.json").exists()
    assert not (runs / "cosine").exists()

    # 2. Rerun: the interrupted run resumes after epoch 1, the other one trains.
    lines: list[str] = []
    result = R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=lines.append)
    assert result.status == {"baseline": "resumed", "cosine": "trained"}
    assert any("resuming" in line and "after epoch 1" in line for line in lines)
    for name in CHEAP:
        metrics = json.loads((runs / name / "metrics.json").read_text())
        assert metrics["epochs_run"] == 2 and metrics["split"] == "val" and metrics["num_images"] == 8
    history = (runs / "baseline" / "history.csv").read_text().strip().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2"]
    manifest = json.loads((out / "reproduce.json").read_text())
    assert manifest["quick"] is True and manifest["experiments"]["cosine"]["quick_overrides"]["epochs"] == 2

    # 3. The HTML report parses and carries everything, images embedded as PNG data URIs.
    parser = _Collector()
    parser.feed(result.report_html.read_text(encoding="utf-8"))
    parser.close()
    assert not parser.external
    assert len(parser.imgs) == len(CHEAP) + 2  # curves per run, the comparison figure, the confusion matrix
    for src in parser.imgs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    results = {row[0]: row for row in parser.rows if row and row[-1] in ("done", "not run", "failed")}
    for name in CHEAP:
        assert results[name][-1] == "done"
        assert any(c.startswith(f"{name}: train/val loss") for c in parser.captions)
    assert results["augment"][-1] == "not run"
    assert any(row[0] == "all-background predictor" for row in parser.rows)
    assert any("every model" in c for c in parser.captions)  # the comparison figure (Figures 9-11)
    assert any("confusion matrix" in c for c in parser.captions)
    text = " ".join(parser.text)
    assert "Synthetic numbers are not VOC numbers" in text
    assert "averaged per batch" in text

    # The Markdown report points at PNG files saved under figures/.
    md = result.report_md.read_text(encoding="utf-8")
    refs = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(refs) == len(parser.imgs)
    for ref in refs:
        assert ref.startswith("figures/") and (out / ref).read_bytes()[:8] == PNG_SIGNATURE

    # 4. A third call retrains nothing.
    stamps = {p: p.stat().st_mtime_ns for name in CHEAP for p in (runs / name).glob("*") if p.is_file()}
    again = R.reproduce(out, data_root=tiny_data, quick=True, only=CHEAP, progress=False, log=lambda s: None)
    assert again.status == {"baseline": "skipped", "cosine": "skipped"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # 5. The same folder asked for a different recipe refuses instead of mixing runs.
    with pytest.raises(VocsegError, match="different config"):
        R.reproduce(out, data_root=tiny_data, quick=False, only=["baseline"], progress=False, log=lambda s: None)


def test_missing_imagenet_weights_fail_the_transfer_run_but_not_the_study(tmp_path, tiny_data, vocseg_cache, monkeypatch):
    from vocseg.models import transfer

    def offline(encoder):
        raise VocsegError(f"ImageNet weights for {encoder} are not available (test)")

    monkeypatch.setattr(transfer, "load_imagenet_state_dict", offline)
    monkeypatch.setattr(R, "imagenet_weights_cached", lambda encoder: False)
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(VocsegError, match=r"1 of 1 experiment\(s\) failed[\s\S]*transfer: ImageNet weights for resnet34"):
        R.reproduce(out, data_root=tiny_data, quick=False, only=["transfer"], progress=False, log=lines.append)
    assert any("transfer FAILED" in line for line in lines)
    manifest = json.loads((out / "reproduce.json").read_text())
    assert manifest["experiments"]["transfer"]["status"] == "failed"
    md = (out / "report.md").read_text()
    assert "**transfer** (Table 10) failed: ImageNet weights for resnet34 are not available" in md
