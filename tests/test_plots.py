"""Figures: colour masks and overlays checked pixel by pixel, and every figure function writes a real file."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from vocseg import plots
from vocseg.data.classes import IGNORE_INDEX, VOC_CLASSES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path) -> tuple[int, int]:
    """(width, height) of a valid PNG file."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_the_module_draws_without_a_display():
    assert matplotlib.get_backend().lower() == "agg"


# ----------------------------------------------------------------------------- masks


def test_colorize_uses_vocs_colours_and_cream_void():
    mask = np.array([[0, 1, 2], [15, 20, IGNORE_INDEX]], dtype=np.uint8)
    out = plots.colorize(mask)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    expected = [[[0, 0, 0], [128, 0, 0], [0, 128, 0]], [[192, 128, 128], [0, 64, 128], [224, 224, 192]]]
    assert out.tolist() == expected


def test_colorize_accepts_int64_masks():
    mask = np.array([[3, IGNORE_INDEX]], dtype=np.int64)
    assert plots.colorize(mask).tolist() == [[[128, 128, 0], [224, 224, 192]]]


def test_overlay_blends_foreground_only():
    image = np.array([[[10, 20, 30], [100, 100, 100], [200, 50, 0], [40, 40, 40]]], dtype=np.uint8)
    mask = np.array([[0, 1, 15, IGNORE_INDEX]], dtype=np.uint8)
    out = plots.overlay(image, mask, alpha=0.25)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[0, 0].tolist() == [10, 20, 30]  # background: unchanged
    assert out[0, 3].tolist() == [40, 40, 40]  # void: unchanged
    # aeroplane (128, 0, 0): 0.75 * (100, 100, 100) + 0.25 * (128, 0, 0) = (107, 75, 75)
    assert out[0, 1].tolist() == [107, 75, 75]
    # person (192, 128, 128): 0.75 * (200, 50, 0) + 0.25 * (192, 128, 128) = (198, 69.5, 32) -> truncated
    assert out[0, 2].tolist() == [198, 69, 32]


def test_overlay_default_alpha_is_an_even_blend_and_alpha_one_is_the_mask():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    mask = rng.integers(0, 21, (6, 7)).astype(np.uint8)
    mask[0, 0], mask[0, 1] = 0, 7
    fg = mask > 0
    half = plots.overlay(image, mask)
    expected = (0.5 * image.astype(np.float64) + 0.5 * plots.colorize(mask)).astype(np.uint8)
    assert np.abs(half[fg].astype(int) - expected[fg]).max() <= 1
    assert np.array_equal(half[~fg], image[~fg])
    full = plots.overlay(image, mask, alpha=1.0)
    assert np.array_equal(full[fg], plots.colorize(mask)[fg])
    assert np.array_equal(plots.overlay(image, mask, alpha=0.0), image)


# ----------------------------------------------------------------------------- figures


def test_plot_curves_writes_a_png(tmp_path):
    history = [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "val_miou": 0.1 * e, "lr": 1e-3} for e in (1, 2, 3)
    ]
    path = tmp_path / "curves.png"
    plots.plot_curves(history, path, title="unet")
    assert _png_size(path) == (600, 400)  # figsize (6, 4) at 100 dpi


def test_plot_curves_skips_epochs_that_were_not_validated(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 2.0, "val_loss": None, "val_miou": None},
        {"epoch": 2, "train_loss": 1.5, "val_loss": 1.7, "val_miou": 0.3},
        {"epoch": 3, "train_loss": 1.2, "val_loss": None, "val_miou": None},
        {"epoch": 4, "train_loss": 1.0, "val_loss": 1.1, "val_miou": None},  # validated, mIoU undefined
    ]
    path = tmp_path / "curves.png"
    plots.plot_curves(history, path)
    _png_size(path)
    ax, ax2 = plots.curves_figure(history).axes
    lines = {line.get_label(): line for line in [*ax.get_lines(), *ax2.get_lines()]}
    assert list(lines["train loss"].get_xdata()) == [1, 2, 3, 4]
    assert list(lines["val loss"].get_xdata()) == [2, 4] and list(lines["val loss"].get_ydata()) == [1.7, 1.1]
    assert list(lines["val mIoU"].get_xdata()) == [2, 4] and list(lines["val mIoU"].get_ydata()) == [0.3, 0.0]


def test_confusion_figure_writes_a_png(tmp_path):
    names = list(VOC_CLASSES[:4])
    matrix = np.array([[50, 3, 0, 0], [4, 20, 1, 0], [0, 0, 0, 0], [1, 0, 2, 9]])  # a class with no true pixels
    path = tmp_path / "confusion.png"
    plots.confusion_figure(matrix, names, path, "confusion")
    width, height = _png_size(path)
    assert width > 100 and height > 100


def test_confusion_figure_shows_row_shares(tmp_path, monkeypatch):
    drawn = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    plots.confusion_figure([[3, 1], [0, 0]], ["a", "b"], tmp_path / "c.png", "t")
    (fig, *_) = drawn
    image = fig.axes[0].get_images()[0].get_array()
    assert np.allclose(image, [[0.75, 0.25], [0.0, 0.0]])  # rows normalised; an empty row stays 0
    assert sorted(t.get_text() for t in fig.axes[0].texts) == [".25", ".75"]


def test_per_class_iou_figure_writes_a_png_with_one_bar_per_model_and_class(tmp_path, monkeypatch):
    drawn = []
    real_close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close", lambda fig: (drawn.append(fig), real_close(fig)))
    per_class = {"a": {"background": 0.9, "cat": None}, "b": {"background": 0.8, "cat": 0.3, "dog": 0.5}}
    path = tmp_path / "bars.png"
    plots.per_class_iou_figure(per_class, path, title="per class")
    _png_size(path)
    (fig,) = drawn
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "cat", "dog"]
    widths = sorted(round(p.get_width(), 6) for p in ax.patches)
    assert widths == sorted([0.9, 0.0, 0.0, 0.8, 0.3, 0.5])  # a missing value draws a zero-width bar


@pytest.mark.parametrize("title", ["", "with a title"])
def test_comparison_figure_writes_a_png(tmp_path, title):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (20, 30)).astype(np.uint8)
    mask[0] = IGNORE_INDEX
    preds = {"m1": np.zeros_like(mask), "m2": mask.copy()}
    plots.comparison_figure(image, mask, preds, VOC_CLASSES, tmp_path / "cmp.png", title=title, labels={"m1": "one"})
    _png_size(tmp_path / "cmp.png")


def test_error_panel_marks_exactly_the_wrong_scored_pixels(tmp_path):
    image = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = 8
    mask[0, :] = IGNORE_INDEX
    pred = mask.copy()
    pred[5:10, 5:7] = 0  # 10 wrong pixels
    pred[0, :] = 3  # void: never an error
    errors = plots.error_map(image, mask, pred)
    red = np.all(errors == (230, 30, 30), axis=-1)
    assert red.sum() == 10 and red[5:10, 5:7].all()
    assert np.all(errors[0] == (150, 150, 150))
    plots.error_panel_figure(image, mask, pred, tmp_path / "panel.png", title="x", class_names=["background"] * 21)
    assert (tmp_path / "panel.png").read_bytes()[:8] == PNG_SIGNATURE
