"""Plain helpers shared by several test files (fixtures live in conftest.py). Import them with
``from helpers import ...``: pytest's default import mode puts tests/ on ``sys.path``.

Training and the CLI:

- ``TRAIN_ARGS`` / ``tiny_config``: a 122k-parameter U-Net (base_channels=4) on CPU, one batch of 4 at 48 px,
  deterministic, no AMP; the command-line flags and the Python-API twin.
- ``quiet_train``: ``train()`` without progress bars or log lines.
- ``cli``: run ``vocseg ARGV`` in-process, return (exit code, stderr).
- ``snapshot``: every entry under a folder, to check that nothing changed.
- ``subprocess_env``: the environment for ``python -m vocseg`` in a child process.
- ``history_rows``: the rows of a run's history.csv.

Reports (test_report, test_compare, test_reproduce):

- ``write_fake_run``: a finished run folder written through :class:`RunDir` from fake predictions.
- ``fake_predictions`` / ``per_image_counts``: those predictions and their per-image counts.
- ``read_report`` / ``HTMLReport``: parse and check a written report.

Model weights (test_models, test_transfer_unet, test_torchvision_models):

- ``IMAGENET_NORM``, ``R18`` / ``R18_FILE``: torchvision's ImageNet normalisation and ResNet-18 weights file.
- ``random_resnet_state`` / ``assert_encoder_equals``: a ResNet state dict no fresh init matches, and the check
  that a model's encoder holds it.
"""

from __future__ import annotations

import base64
import csv
import io
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import vocseg
from vocseg.checkpoint import save_checkpoint
from vocseg.cli import main
from vocseg.config import Config
from vocseg.data.classes import IGNORE_INDEX, VOC_CLASSES, voc_palette
from vocseg.data.voc import VOCSegmentation
from vocseg.metrics import ConfusionMatrix
from vocseg.models import count_parameters, create_model
from vocseg.rundir import RunDir
from vocseg.training.train import train

SRC = Path(vocseg.__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- training and the CLI

TRAIN_ARGS = [
    "--model", "unet", "--model-arg", "base_channels=4", "--batch-size", "4", "--image-size", "48",
    "--device", "cpu", "--amp", "none", "--deterministic", "--seed", "0", "--no-progress",
]  # fmt: skip


def tiny_config(data_root: Path, out: Path, **changes: Any) -> Config:
    """The Python-API twin of TRAIN_ARGS."""
    base = dict(
        model="unet", model_kwargs={"base_channels": 4}, data_root=str(data_root), out=str(out), epochs=2,
        batch_size=4, image_size=48, num_workers=0, device="cpu", amp="none", deterministic=True, seed=0,
    )  # fmt: skip
    return Config(**{**base, **changes}).validate()


def quiet_train(cfg: Config, **kwargs: Any):
    return train(cfg, progress=False, log=lambda *a, **k: None, **kwargs)


def cli(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run ``vocseg ARGV`` in-process; return (exit code, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder`` (symlinks not followed): file bytes, link targets, directories."""
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = p.read_bytes()
    return out


def subprocess_env(cache: Path) -> dict[str, str]:
    """This environment, plus: the stats cache at ``cache``, one thread, vocseg importable from src/."""
    env = dict(os.environ)
    env.update(
        VOCSEG_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )  # fmt: skip
    return env


def history_rows(path: Path) -> list[dict[str, str]]:
    """history.csv rows; [] while the file is missing or half-written."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, csv.Error):
        return []
    return [r for r in rows if r.get("seconds") not in (None, "")]


# ----------------------------------------------------------------------------- reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_MODEL = dict(model="unet", model_kwargs={"base_channels": 4})  # 0.1 M parameters: quick to save and run


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
    cfg = Config(
        **{
            **TINY_MODEL,
            "data_root": str(data_root),
            "val_holdout": 0.0,
            "seed": seed,
            "out": str(path),
            "epochs": 3,
            **cfg_changes,
        }
    )
    run = RunDir(path)
    run.prepare(resume=False, overwrite=False)
    run.save_config(cfg.to_dict())
    ds = VOCSegmentation(data_root, cfg.val_split)
    masks = [ds.load(i)[1] for i in range(len(ds))]
    preds = fake_predictions(masks, error_rate, seed=1000 * seed + int(error_rate * 100))
    cm = ConfusionMatrix(21)
    for p, m in zip(preds, masks):
        cm.update(torch.from_numpy(p), torch.from_numpy(m))
    metrics = {
        **cm.compute(),
        "loss": 1.0 + error_rate,
        "ce_loss": 1.0 + error_rate,
        "split": cfg.val_split,
        "num_images": len(ds),
        "best_epoch": 2,
        "epochs_run": 3,
        "stopped_early": False,
        "seconds_per_epoch": 1.5,
        "parameters": 122193,
        "confusion_matrix": cm.matrix.tolist(),
    }
    run.write_metrics(metrics)
    run.write_per_image(list(ds.ids), *per_image_counts(preds, masks), ds.mask_digests())
    run.write_history(
        [
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "val_loss": 2.2 / e,
                "val_miou": 0.1 * e,
                "val_pixel_accuracy": 0.5,
                "lr": 1e-3,
                "seconds": 1.5,
            }
            for e in (1, 2, 3)
        ]
    )
    torch.manual_seed(seed)
    model = create_model(cfg.model, num_classes=cfg.num_classes, **cfg.model_kwargs)
    save_checkpoint(
        {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "model_name": cfg.model,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
            "class_names": None,
        },
        run.best_path,
    )
    return run


# ----------------------------------------------------------------------------- model weights (test_models, test_transfer_unet)

IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
R18 = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
R18_FILE = os.path.basename(R18.url)  # resnet18-f37072fd.pth


def random_resnet_state(arch: str = "resnet18", seed: int = 7) -> dict:
    """A torchvision ResNet state dict (fc included) that no fresh init matches."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)()
    for p in model.parameters():
        torch.nn.init.normal_(p)
    for _, b in model.named_buffers():
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)
    return model.state_dict()


def assert_encoder_equals(model, state):
    enc = model.encoder.state_dict()
    expected = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert set(enc) == set(expected)
    for k, v in expected.items():
        assert torch.equal(enc[k], v), k


# Models made only of modules and ops that cheaper models already export: torch.export, ONNX
# (tests/deploy/test_export.py) and the largest forward are not run again for them.
COVERED_BY = {
    "fcn_resnet50": "deeplabv3_resnet50 (backbone) and its head (FCNHead's conv, BN, ReLU, conv are a subset)",
    "fcn_resnet101": "deeplabv3_resnet50 (backbone at its depth) and its head",
    "deeplabv3_resnet101": "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large": "lraspp_mobilenet_v3_large (backbone) and deeplabv3_resnet50 (head)",
    "transfer_unet-aux": "transfer_unet (the aux head runs only in training)",
}


# A random "fcn" checkpoint that predicts many classes: what the predict and video tests segment with.
PREDICT_MEAN, PREDICT_STD = [0.45, 0.43, 0.40], [0.23, 0.22, 0.24]


def tiny_fcn() -> torch.nn.Module:
    """The registered "fcn" with random BN statistics, so the argmax varies over pixels and classes."""
    torch.manual_seed(0)
    model = create_model("fcn", num_classes=21, offline=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def write_fcn_checkpoint(path: Path) -> Path:
    """:func:`tiny_fcn` saved as a vocseg checkpoint with VOC's class names at ``path``."""
    save_checkpoint(
        {
            "model": tiny_fcn().state_dict(),
            "model_name": "fcn",
            "model_kwargs": {},
            "num_classes": 21,
            "class_names": list(VOC_CLASSES),
            "normalization": {"mean": PREDICT_MEAN, "std": PREDICT_STD},
            "config": {"model": "fcn", "num_classes": 21},
        },
        path,
    )
    return path


# ----------------------------------------------------------------------------- image/mask folders

FOLDER_CLASSES = ["background", "disc", "square"]


def folder_sample(seed: int, size: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[4:20, 4:20] = 1
    mask[22:36, 26:44] = 2
    mask[0, 0] = 255
    return image, mask


def make_folders(
    root: Path, n: int = 10, *, images="images", masks="masks", suffix=".png", sub: str = "", palette: bool = True
) -> Path:
    """``n`` images (PNG: lossless, so the pixels can be compared) and index masks, palette or grayscale."""
    for i in range(n):
        image, mask = folder_sample(i)
        (root / images / sub).mkdir(parents=True, exist_ok=True)
        (root / masks / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / images / sub / f"im{i:02d}.png")
        m = Image.fromarray(mask, mode="L")
        if palette:
            m = m.convert("P")
            m.putpalette(voc_palette())
        m.save(root / masks / sub / f"im{i:02d}{suffix}")
    return root


def folder_dataset(root: Path, n: int = 12) -> Path:
    """images/ + masks/ + classes.txt: ``n`` images with every one of FOLDER_CLASSES labelled."""
    make_folders(root, n)
    (root / "classes.txt").write_text("\n".join(FOLDER_CLASSES) + "\n")
    return root


# torchvision's segmentation models that vocseg registers, with their VOC-label weights.
TORCHVISION_SEGMENTATION = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)


def assert_frozen_encoder(model: torch.nn.Module) -> None:
    """``freeze_encoder=True``: only the decoder and classifier train; the encoder's weights and BN
    statistics stay as they were through a training forward and backward."""
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters())
    model.train()
    assert model.training and model.decoder.training
    assert not any(m.training for m in model.encoder.modules())  # BN statistics stay fixed
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k


# ----------------------------------------------------------------------------- the paper's tables (tests/models/test_<model>.py)


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    """Parameters of a (transposed) conv with a k x k kernel."""
    return k * k * cin * cout + (cout if bias else 0)


def table_count(layers: list[tuple[str, int, int, int]]) -> int:
    """Parameters of (type, cin, cout, k) rows written out from the paper's tables."""
    total = 0
    for kind, cin, cout, k in layers:
        if kind in ("conv", "deconv"):
            total += conv(cin, cout, k)
        elif kind in ("conv_nobias", "deconv_nobias"):
            total += conv(cin, cout, k, bias=False)
        elif kind in ("bn", "in_affine"):  # BatchNorm2d / affine InstanceNorm2d: weight and bias
            total += 2 * cout
        elif kind not in ("relu", "pool", "unpool", "in"):
            raise AssertionError(f"unknown row type {kind!r}")
    return total


def resnet_without_fc(weights: torchvision.models.WeightsEnum, fc_in: int = 512) -> int:
    """torchvision's parameter count of a ResNet less its 1000-class fc head."""
    return weights.meta["num_params"] - (fc_in * 1000 + 1000)


def assert_parameter_count(name: str, expected: int, num_classes: int = 21, **kwargs: Any) -> None:
    """The registered model ``name`` built with ``kwargs`` has ``expected`` parameters (shapes only)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    assert count_parameters(model) == expected, (name, kwargs)
