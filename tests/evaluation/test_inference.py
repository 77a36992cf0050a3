"""predict_logits: plain forward, flip and multi-scale TTA, sliding windows, against hand computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vocseg.errors import VocsegError
from vocseg.evaluation.inference import MULTISCALE_SCALES, predict_logits, tta_cost, window_starts

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


class TinyNet(nn.Module):
    """A 3x3 conv net plus a whole-image term: not flip-symmetric and not local, so TTA and windows matter."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1))
        self.glob = nn.Linear(3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.glob(x.mean(dim=(2, 3)))[..., None, None]


class ShapeRecorder(nn.Module):
    """Constant logits; records every input shape it is called with."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes, self.shapes = classes, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x.new_ones((x.shape[0], self.classes, *x.shape[2:]))


def model() -> nn.Module:
    return TinyNet().eval()


def test_none_is_the_plain_forward():
    m, x = model(), torch.randn(2, 3, 13, 21)
    out = predict_logits(m, x)
    with torch.no_grad():
        torch.testing.assert_close(out, m(x), rtol=0, atol=0)
    assert out.is_inference() and out.dtype == torch.float32


def test_flip_is_the_mean_of_both_views_probabilities():
    m, x = model(), torch.randn(2, 3, 11, 17)
    with torch.no_grad():
        p = (m(x).softmax(1) + m(x.flip(-1)).flip(-1).softmax(1)) / 2
    out = predict_logits(m, x, tta="flip")
    torch.testing.assert_close(out, p.log(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.softmax(1), p, rtol=1e-5, atol=1e-6)  # still logits of the averaged probs


def test_multiscale_matches_a_hand_computed_average():
    m, x = model(), torch.randn(1, 3, 8, 12)
    views = []
    with torch.no_grad():
        for size in [(4, 6), (8, 12), (12, 18)]:  # scales 0.5, 1.0, 1.5
            xs = (
                x
                if size == (8, 12)
                else F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=size[0] < 8)
            )
            for flip in (False, True):
                logits = m(xs.flip(-1)).flip(-1) if flip else m(xs)
                if size != (8, 12):
                    logits = F.interpolate(logits, size=(8, 12), mode="bilinear", align_corners=False)
                views.append(logits.softmax(1))
    expected = (sum(views) / len(views)).log()
    out = predict_logits(m, x, tta="multiscale", scales=(0.5, 1.0, 1.5))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_multiscale_default_scales_and_odd_size():
    rec = ShapeRecorder().eval()
    out = predict_logits(rec, torch.randn(1, 3, 333, 517), tta="multiscale")
    expected = [(1, 3, round(333 * s), round(517 * s)) for s in MULTISCALE_SCALES for _ in range(2)]
    assert rec.shapes == expected
    assert out.shape == (1, 3, 333, 517)
    torch.testing.assert_close(out.softmax(1), torch.full_like(out, 1 / 3))


@pytest.mark.parametrize("shape", [(1, 3, 20, 30), (2, 3, 7, 9)])
def test_slide_with_a_crop_bigger_than_the_image_is_a_plain_forward(shape):
    m, x = model(), torch.randn(*shape)
    with torch.no_grad():
        expected = m(x)
    torch.testing.assert_close(predict_logits(m, x, slide=(32, 16)), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "shape,slide", [((1, 3, 37, 53), (16, 10)), ((2, 3, 64, 33), (32, 32)), ((1, 3, 5, 41), (8, 3))]
)
def test_slide_on_a_translation_equivariant_model_is_the_whole_image_forward(shape, slide):
    torch.manual_seed(1)
    m, x = nn.Conv2d(3, 4, 1).eval(), torch.randn(*shape)
    with torch.no_grad():
        expected = m(x)
    torch.testing.assert_close(predict_logits(m, x, slide=slide), expected, rtol=1e-5, atol=1e-6)


def test_slide_divides_by_the_window_count():
    rec = ShapeRecorder(classes=2).eval()
    out = predict_logits(rec, torch.randn(1, 3, 37, 53), slide=(16, 10))
    torch.testing.assert_close(out, torch.ones_like(out), rtol=0, atol=0)  # overlaps averaged, not summed
    assert len(rec.shapes) == len(window_starts(37, 16, 10)) * len(window_starts(53, 16, 10))
    assert set(rec.shapes) == {(1, 3, 16, 16)}  # every window has the full crop size


@pytest.mark.parametrize(
    "size,crop,stride", [(37, 16, 10), (16, 16, 5), (10, 16, 4), (100, 33, 33), (1, 1, 1), (50, 7, 3)]
)
def test_windows_cover_every_pixel_and_stay_inside(size, crop, stride):
    starts = window_starts(size, crop, stride)
    covered = torch.zeros(size, dtype=torch.int64)
    for s in starts:
        assert s >= 0 and (s + crop <= size or (s == 0 and size < crop))
        covered[s : s + crop] += 1
    assert (covered > 0).all()
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("tta", ["none", "flip", "multiscale"])
def test_tta_cost_is_the_pixels_the_views_push_through_the_model(tta):
    """tta_cost (what a time budget reserves) against the views predict_logits really runs."""
    rec = ShapeRecorder().eval()
    h, w = 333, 517
    predict_logits(rec, torch.randn(1, 3, h, w), tta=tta)
    pixels = sum(s[2] * s[3] for s in rec.shapes) / (h * w)
    assert tta_cost(tta) == pytest.approx(pixels, rel=0.01)
    assert tta_cost("flip") == 2.0 and tta_cost("multiscale") == pytest.approx(2 * 8.6875)  # 2 x sum(s^2)
    assert tta_cost("multiscale", (0.5, 1.0)) == pytest.approx(2 * 1.25)
    with pytest.raises(VocsegError, match="unknown tta 'hflip'.*none, flip, multiscale"):
        tta_cost("hflip")


def test_tta_and_slide_compose():
    m, x = model(), torch.randn(1, 3, 29, 41)
    out = predict_logits(m, x, tta="flip", slide=(16, 12))
    with torch.no_grad():
        a = predict_logits(m, x, slide=(16, 12)).softmax(1)
        b = predict_logits(m, x.flip(-1), slide=(16, 12)).flip(-1).softmax(1)
    torch.testing.assert_close(out, ((a + b) / 2).log(), rtol=1e-5, atol=1e-6)


def test_amp_returns_float32_close_to_fp32():
    m, x = model(), torch.randn(1, 3, 24, 24)
    out = predict_logits(m, x, tta="flip", amp_dtype=torch.bfloat16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, predict_logits(m, x, tta="flip"), rtol=0.05, atol=0.05)


def test_errors_name_the_problem():
    m, x = model(), torch.randn(1, 3, 8, 8)
    with pytest.raises(VocsegError, match="none, flip, multiscale"):
        predict_logits(m, x, tta="hflip")
    with pytest.raises(VocsegError, match="stride"):
        predict_logits(m, x, slide=(8, 9))
    with pytest.raises(VocsegError, match="eval"):
        predict_logits(TinyNet().train(), x)
    with pytest.raises(VocsegError, match="float"):
        predict_logits(m, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(VocsegError, match="scales"):
        predict_logits(m, x, tta="multiscale", scales=(1.0, 0.0))
