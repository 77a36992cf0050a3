"""vocseg.deploy.predict: masks in VOC's format equal to the model's argmax for images of every mode, EXIF
orientation, unreadable files, overwrite refusal, stem clashes, and ONNX/TorchScript sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import PREDICT_MEAN, PREDICT_STD, tiny_fcn, write_fcn_checkpoint
from vocseg.checkpoint import save_checkpoint
from vocseg.data.classes import voc_palette
from vocseg.deploy.export import export_model
from vocseg.deploy.predict import predict
from vocseg.errors import VocsegError

MEAN, STD = PREDICT_MEAN, PREDICT_STD
H, W = 48, 64


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_fcn_checkpoint(tmp_path_factory.mktemp("ckpt") / "fcn.pt")


def expected_mask(rgb: np.ndarray) -> np.ndarray:
    """Argmax of the model's logits for a uint8 RGB image, computed here independently of vocseg.deploy.predict."""
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return tiny_fcn()(x).argmax(1)[0].numpy().astype(np.uint8)


def smooth_rgb(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise: survives JPEG well enough and gives varied predictions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def write_mode_images(folder: Path) -> dict[str, np.ndarray]:
    """One image per awkward mode; returns stem -> the RGB the model should see."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = smooth_rgb()
    expected = {}
    alpha = np.where(np.arange(W)[None, :] < W // 2, 255, 0).astype(np.uint8).repeat(H, 0)
    Image.fromarray(np.dstack([rgb, alpha])).save(folder / "rgba.png")
    expected["rgba"] = rgb * (alpha[..., None] // 255)  # composited on black
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    expected["gray"] = np.repeat(rgb[..., :1], 3, axis=2)
    wide = rgb[..., 1].astype(np.uint16) * 257  # full 16-bit range
    Image.fromarray(wide).save(folder / "deep.png")
    expected["deep"] = np.clip(wide / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None].repeat(3, 2)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    expected["cmyk"] = np.array(Image.open(folder / "cmyk.jpg").convert("RGB"))
    Image.fromarray(rgb).quantize(32).save(folder / "palette.png")
    expected["palette"] = np.array(Image.open(folder / "palette.png").convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(rgb).save(folder / "rotated.jpg", quality=95, exif=exif.tobytes())
    expected["rotated"] = np.array(ImageOps.exif_transpose(Image.open(folder / "rotated.jpg")).convert("RGB"))
    return expected


def read_mask(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "P"
    assert img.getpalette()[:768] == voc_palette()
    return np.array(img)


def test_masks_are_voc_palette_pngs_equal_to_the_argmax(checkpoint, tmp_path):
    expected = write_mode_images(tmp_path / "in")
    summary = predict(checkpoint, tmp_path / "in", tmp_path / "out", device="cpu", progress=False)
    assert summary.ok and len(summary.written) == len(expected)
    assert str(summary).startswith(f"predicted {len(expected)} images in ") and str(summary).endswith("; 0 failed")
    for stem, rgb in expected.items():
        mask = read_mask(tmp_path / "out" / f"{stem}.png")
        np.testing.assert_array_equal(mask, expected_mask(rgb), err_msg=stem)
        overlay = Image.open(tmp_path / "out" / f"{stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.height >= mask.shape[0] and overlay.width > mask.shape[1]
    # EXIF orientation 6: the mask has the displayed (portrait) size, not the stored one
    assert Image.open(tmp_path / "out" / "rotated.png").size == (H, W)
    assert Image.open(tmp_path / "out" / "deep.png").size == (W, H)
    assert len(np.unique(read_mask(tmp_path / "out" / "gray.png"))) > 1  # a real test of the argmax


def test_batching_same_size_images_changes_nothing(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):  # two sizes, interleaved
        size = (H, W) if i % 2 else (W - 8, H + 8)
        Image.fromarray(smooth_rgb(*size, seed=i)).save(folder / f"img{i}.png")
    one = predict(checkpoint, folder, tmp_path / "one", device="cpu", progress=False)
    three = predict(checkpoint, folder, tmp_path / "three", batch_size=3, device="cpu", progress=False)
    assert one.ok and three.ok and len(three.written) == 5
    for i in range(5):
        a, b = read_mask(tmp_path / "one" / f"img{i}.png"), read_mask(tmp_path / "three" / f"img{i}.png")
        assert (a == b).mean() >= 0.999  # batched convs may round differently at near-ties


def test_unreadable_files_are_named_and_the_others_written(checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb()).save(folder / "good.png")
    good_jpeg = folder / "good2.jpg"
    Image.fromarray(smooth_rgb(seed=1)).save(good_jpeg)
    (folder / "truncated.jpg").write_bytes(good_jpeg.read_bytes()[:200])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not a picture")
    for batch_size in (1, 2):
        out = tmp_path / f"out{batch_size}"
        summary = predict(checkpoint, folder, out, batch_size=batch_size, device="cpu", progress=False)
        assert not summary.ok
        assert sorted(p.name for p, _ in summary.failed) == ["empty.png", "text.png", "truncated.jpg"]
        assert all(p.name in reason for p, reason in summary.failed)
        assert str(summary).endswith("; 3 failed")
        assert sorted(p.name for p in out.iterdir()) == [
            "good.png",
            "good2.png",
            "good2_overlay.png",
            "good_overlay.png",
        ]
    assert "truncated.jpg" in capsys.readouterr().err


def test_nothing_is_overwritten_without_overwrite(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        Image.fromarray(smooth_rgb()).save(folder / f"{name}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_overlay.png").write_bytes(b"mine")
    with pytest.raises(VocsegError, match="b_overlay.png"):
        predict(checkpoint, folder, out, device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["b_overlay.png"]  # nothing written at all
    assert (out / "b_overlay.png").read_bytes() == b"mine"
    summary = predict(checkpoint, folder, out, overwrite=True, device="cpu", progress=False)
    assert summary.ok and (out / "b_overlay.png").read_bytes() != b"mine"


def test_same_stems_do_not_clobber_each_other(checkpoint, tmp_path):
    rgbs = {}
    for i, rel in enumerate(["a/x.png", "b/x.png", "b/x.jpg", "c/y.png"]):
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        rgbs[rel] = smooth_rgb(seed=i)
        Image.fromarray(rgbs[rel]).save(path, quality=95)
    inputs = [tmp_path / "in" / d for d in ("a", "b", "c")]
    summary = predict(checkpoint, inputs, tmp_path / "out", device="cpu", progress=False)
    assert summary.ok
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png") if not p.name.endswith("_overlay.png"))
    assert names == ["a__x_png.png", "b__x_jpg.png", "b__x_png.png", "y.png"]
    for rel, name in [("a/x.png", "a__x_png.png"), ("b/x.png", "b__x_png.png")]:
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / name), expected_mask(rgbs[rel]))


@pytest.mark.slow
def test_exported_sources_give_the_checkpoints_masks(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    write_mode_images(tmp_path / "in")
    predict(checkpoint, tmp_path / "in", tmp_path / "pt", device="cpu", progress=False)
    for fmt, name in [("onnx", "model.onnx"), ("torchscript", "model.ts")]:
        exported = export_model(checkpoint, fmt, tmp_path / name)
        summary = predict(exported, tmp_path / "in", tmp_path / fmt, device="cpu", progress=False)
        assert summary.ok and len(summary.written) == 6
        for mask in (tmp_path / "pt").glob("*.png"):
            if mask.name.endswith("_overlay.png"):
                continue
            a, b = read_mask(mask), read_mask(tmp_path / fmt / mask.name)
            assert (a == b).mean() >= 0.999, (fmt, mask.name)  # fp differences may flip near-ties


def test_tta_and_slide_options(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb(37, 53)).save(folder / "odd.png")
    for kwargs in ({"tta": "flip"}, {"slide": (32, 16)}, {"tta": "multiscale", "slide": (32, 24)}):
        summary = predict(checkpoint, folder, tmp_path / "out", overwrite=True, device="cpu", progress=False, **kwargs)
        assert summary.ok and Image.open(tmp_path / "out" / "odd.png").size == (53, 37)


def test_multiscale_at_scale_one_is_flip_and_a_runs_scales_are_its_default(checkpoint, tmp_path):
    """``tta_scales=(1.0,)`` is the image and its mirror: the same masks as ``tta="flip"``. A checkpoint whose
    config has ``tta_scales`` predicts with them unless told otherwise."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(37 + i, 53, seed=i)).save(folder / f"img{i}.png")
    flip = predict(checkpoint, folder, tmp_path / "flip", tta="flip", device="cpu", progress=False)
    one = predict(
        checkpoint, folder, tmp_path / "one", tta="multiscale", tta_scales=[1.0], device="cpu", progress=False
    )
    ckpt = torch.load(checkpoint, weights_only=True)
    own = tmp_path / "own.pt"
    save_checkpoint({**ckpt, "config": {**ckpt["config"], "tta_scales": [1.0]}}, own)
    default = predict(own, folder, tmp_path / "own", tta="multiscale", device="cpu", progress=False)
    wide = predict(checkpoint, folder, tmp_path / "wide", tta="multiscale", device="cpu", progress=False)
    assert flip.ok and one.ok and default.ok and wide.ok
    differ = 0
    for i in range(3):
        a = read_mask(tmp_path / "flip" / f"img{i}.png")
        np.testing.assert_array_equal(a, read_mask(tmp_path / "one" / f"img{i}.png"))
        np.testing.assert_array_equal(a, read_mask(tmp_path / "own" / f"img{i}.png"))
        differ += int((a != read_mask(tmp_path / "wide" / f"img{i}.png")).sum())
    assert differ > 0  # the default six scales are a different prediction: the scales really were used


def test_argument_errors(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb()).save(folder / "a.png")
    out = tmp_path / "out"
    with pytest.raises(VocsegError, match="nope.png"):
        predict(checkpoint, [folder / "a.png", tmp_path / "nope.png"], out, progress=False)
    with pytest.raises(VocsegError, match="matches no image"):
        predict(checkpoint, str(tmp_path / "*.webp"), out, progress=False)
    with pytest.raises(VocsegError, match="none, flip, multiscale"):
        predict(checkpoint, folder, out, tta="hflip", progress=False)
    with pytest.raises(VocsegError, match=r"tta_scales \[0.5\] need tta 'multiscale', got tta 'flip'"):
        predict(checkpoint, folder, out, tta="flip", tta_scales=[0.5], progress=False)
    weird = tmp_path / "model.bin"
    weird.write_bytes(b"x")
    with pytest.raises(VocsegError, match=r"\.onnx"):
        predict(weird, folder, out, progress=False)
    with pytest.raises(VocsegError, match="replace an input"):
        predict(checkpoint, folder / "a.png", folder, overwrite=True, progress=False)  # a.png is the input
    assert not out.exists()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_image_is_refused_and_skipped(checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_rgb(20, 20)).save(folder / "small.png")
    Image.fromarray(smooth_rgb(40, 40)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL would only warn between 1x and 2x this
    summary = predict(checkpoint, folder, tmp_path / "out", device="cpu", progress=False)
    assert [p.name for p, _ in summary.failed] == ["big.png"] and "too large" in summary.failed[0][1]
    assert [p.name for p, _, _ in summary.written] == ["small.png"]
