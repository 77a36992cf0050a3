"""vocseg.deploy.video: overlay videos with every frame at the input's size and rate, per-frame masks equal to
segment() on the decoded frames, odd sizes padded, display rotation applied, outputs refused or replaced,
unreadable files named, no partial output after a crash, the missing-extra message, and memory that does
not grow with the clip's length."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import PREDICT_MEAN, PREDICT_STD, write_fcn_checkpoint
from vocseg.data.classes import voc_palette
from vocseg.deploy import video
from vocseg.deploy.predict import Predictor, load_predictor, segment
from vocseg.deploy.video import (
    VIDEO_SUFFIXES,
    VideoReadError,
    is_video,
    plan_videos,
    predict_video,
    predict_videos,
)
from vocseg.errors import VocsegError
from vocseg.plots import overlay

av = pytest.importorskip("av")

MEAN, STD = PREDICT_MEAN, PREDICT_STD
H, W, FRAMES, RATE = 48, 64, 12, Fraction(24)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_fcn_checkpoint(tmp_path_factory.mktemp("ckpt") / "fcn.pt")


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return load_predictor(checkpoint, "cpu")


def channel_predictor(fail_after: int | None = None) -> Predictor:
    """A model-free predictor: class 1, 2 or 3 where red, green or blue is the largest channel, 0 where all
    are dark. ``fail_after``: raise on that call (a crash mid-clip)."""
    calls = 0

    def model(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if fail_after is not None and calls > fail_after:
            raise RuntimeError("model crashed")
        return torch.cat([torch.full_like(x[:, :1], 0.5), x], dim=1)

    names = ["background", "red", "green", "blue"]
    return Predictor(model, names, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], torch.device("cpu"), "stub")


def clip_frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A dark gradient with a red, a green and a blue rectangle moving across it."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 60 // w, yy * 60 // h, np.full_like(xx, 30)], axis=-1).astype(np.uint8)
    for k, colour in enumerate([(230, 40, 40), (40, 220, 60), (50, 60, 240)]):
        x0 = (3 * i + 17 * k) % max(1, w - w // 4)
        y0 = (k * h // 3 + i) % max(1, h - h // 4)
        img[y0 : y0 + h // 4, x0 : x0 + w // 4] = colour
    return img


def write_clip(
    path: Path,
    frames: int = FRAMES,
    h: int = H,
    w: int = W,
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(clip_frame(i, h, w), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB, decoded here (the reference for the masks)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def video_info(path: Path) -> tuple[int, tuple[int, int], Fraction, str, list[np.ndarray]]:
    """Frame count, (width, height), average rate, codec name and the frames of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return len(frames), (stream.width, stream.height), stream.average_rate, stream.codec_context.name, frames


def read_mask(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode == "P" and img.getpalette()[:768] == voc_palette()
    return np.array(img)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def test_is_video_goes_by_the_suffix_in_any_case():
    assert VIDEO_SUFFIXES == (".mp4", ".mov", ".avi", ".mkv", ".webm")
    assert all(is_video(f"a/clip{s}") and is_video(Path(f"CLIP{s.upper()}")) for s in VIDEO_SUFFIXES)
    assert not any(is_video(p) for p in ("x.jpg", "x.png", "mp4", "x.mp4.txt"))


def test_overlay_video_has_every_frame_at_the_input_size_and_rate(predictor, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    summary = predict_video(predictor, clip, tmp_path / "out", progress=False)
    out = tmp_path / "out" / "clip_overlay.mp4"
    assert summary.overlay == out and summary.masks is None and summary.frames == FRAMES
    count, size, rate, codec, frames = video_info(out)
    assert (count, size, rate) == (FRAMES, (W, H), RATE)
    assert (
        codec
        == ("h264" if video.pick_codec(av) == "libx264" else "mpeg4")
        == {"libx264": "h264"}.get(summary.codec, summary.codec)
    )
    text = str(summary)
    assert text.startswith(f"segmented {FRAMES} frames of {clip} in ") and f"-> {out} (64x48, 24 fps, " in text
    # the frames are the overlays of the decoded input, up to the encoder's loss (yuv420p halves the colour
    # resolution, and this random model's classes change from pixel to pixel): far nearer them than the input
    for got, rgb in zip(frames, decoded_frames(clip)):
        error = np.abs(got - overlay(rgb, segment(predictor, [rgb])[0]).astype(float)).mean()
        assert error < 15 and error < np.abs(got - rgb.astype(float)).mean() / 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_overlay.mp4"]  # no temporary left


def test_masks_equal_segment_on_the_decoded_frames(predictor, tmp_path):
    clip = write_clip(tmp_path / "clip.mov")
    summary = predict_video(predictor, clip, tmp_path / "out", masks=True, tta="flip", progress=False)
    folder = tmp_path / "out" / "clip_masks"
    assert summary.masks == folder and str(summary).endswith(f"and {FRAMES} masks in {folder}")
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(FRAMES)]
    classes = set()
    for i, rgb in enumerate(decoded_frames(clip)):
        mask = read_mask(folder / f"{i:06d}.png")
        np.testing.assert_array_equal(mask, segment(predictor, [rgb], tta="flip")[0], err_msg=f"frame {i}")
        classes.update(np.unique(mask).tolist())
    assert len(classes) > 1  # a real test of the argmax


def test_odd_sizes_are_padded_by_one_pixel_and_masks_keep_the_frame_size(tmp_path):
    clip = write_clip(tmp_path / "odd.mkv", frames=4, h=H - 1, w=W - 1, codec="ffv1", pix_fmt="yuv444p")
    summary = predict_video(channel_predictor(), clip, tmp_path / "out", masks=True, progress=False)
    count, size, _, _, frames = video_info(summary.overlay)
    assert (count, size, summary.size) == (4, (W, H), (W, H))
    assert read_mask(summary.masks / "000000.png").shape == (H - 1, W - 1)
    # padding repeats the last row and column (no crop): the bottom-right corner is the frame's own
    first = decoded_frames(clip)[0]
    want = overlay(first, segment(channel_predictor(), [first])[0])
    assert np.abs(frames[0][:-1, :-1].astype(float) - want).mean() < 6
    assert np.abs(frames[0][-1].astype(float) - frames[0][-2]).mean() < 6


def test_display_rotation_is_applied_like_exif(tmp_path):
    clip = write_clip(tmp_path / "phone.mp4", frames=3, rotation=90)
    predictor = channel_predictor()
    summary = predict_video(predictor, clip, tmp_path / "out", masks=True, progress=False)
    assert summary.size == (H, W)  # portrait, as displayed
    for i, rgb in enumerate(decoded_frames(clip)):
        upright = np.rot90(rgb)  # 90 degrees counter-clockwise, as the display matrix says
        np.testing.assert_array_equal(read_mask(summary.masks / f"{i:06d}.png"), segment(predictor, [upright])[0])


def test_mpeg4_when_ffmpeg_has_no_libx264(tmp_path, monkeypatch):
    monkeypatch.setattr(video, "CODECS", ("no-such-encoder", "mpeg4"))
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    summary = predict_video(channel_predictor(), clip, tmp_path / "out", progress=False)
    count, size, rate, codec, _ = video_info(summary.overlay)
    assert (summary.codec, codec, count, size, rate) == ("mpeg4", "mpeg4", 5, (W, H), RATE)


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", frames=3)
    out = tmp_path / "out"
    predict_video(channel_predictor(), clip, out, progress=False)
    with pytest.raises(VocsegError, match="already exists") as e:
        predict_video(channel_predictor(), clip, out, progress=False)
    assert str(out / "clip_overlay.mp4") in str(e.value)
    (out / "clip_overlay.mp4").unlink()
    (out / "clip_masks").mkdir()
    (out / "clip_masks" / "stale.png").write_bytes(b"old")
    with pytest.raises(VocsegError, match="already exists") as e:
        predict_video(channel_predictor(), clip, out, masks=True, progress=False)
    assert str(out / "clip_masks") in str(e.value)
    assert not (out / "clip_overlay.mp4").exists()  # refused before anything was written

    write_clip(tmp_path / "clip.mp4", frames=5)  # a new clip under the same name replaces everything
    summary = predict_video(channel_predictor(), clip, out, masks=True, overwrite=True, progress=False)
    assert video_info(summary.overlay)[0] == 5
    assert sorted(p.name for p in summary.masks.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert leftovers(out) == []


@pytest.mark.parametrize("content", ["text", "truncated", "empty"])
def test_an_unreadable_video_is_a_vocseg_error_naming_it(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    if content == "text":
        bad.write_text("not a video at all\n" * 20)
    elif content == "empty":
        bad.write_bytes(b"")
    else:
        data = write_clip(tmp_path / "whole.mp4", frames=30).read_bytes()
        bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VideoReadError, match=r"cannot (read|decode) video") as e:
        predict_video(channel_predictor(), bad, tmp_path / "out", masks=True, progress=False)
    assert str(bad) in str(e.value) and "[Errno" not in str(e.value)
    assert not (tmp_path / "out" / "broken_overlay.mp4").exists() and leftovers(tmp_path / "out") == []


def test_a_missing_video_is_named(tmp_path):
    with pytest.raises(VocsegError, match="does not exist") as e:
        predict_video(channel_predictor(), tmp_path / "nope.mp4", tmp_path / "out", progress=False)
    assert str(tmp_path / "nope.mp4") in str(e.value)


def test_a_crash_mid_clip_leaves_no_output_under_the_final_names(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="model crashed"):
        predict_video(channel_predictor(fail_after=5), clip, out, masks=True, progress=False)
    assert list(out.iterdir()) == []  # neither the video, nor the masks, nor their temporary names


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4", frames=2)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(VocsegError) as e:
        predict_video(channel_predictor(), clip, tmp_path / "out", progress=False)
    assert str(e.value) == "reading and writing video needs the Python package 'av' of the 'video' extra: " + (
        "pip install 'vocseg[video]'"
    )
    assert is_video(clip)  # needs no PyAV


def test_bad_options_are_refused_before_reading(tmp_path):
    clip = tmp_path / "clip.mp4"  # never opened
    with pytest.raises(VocsegError, match="unknown tta"):
        predict_video(channel_predictor(), clip, tmp_path / "out", tta="sideways", progress=False)
    with pytest.raises(VocsegError, match="need tta 'multiscale'"):
        predict_video(channel_predictor(), clip, tmp_path / "out", tta_scales=[1.0], progress=False)


def test_predict_videos_names_clashing_stems_and_skips_unreadable_videos(checkpoint, tmp_path):
    clips = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        clips.append(write_clip(tmp_path / folder / "x.mp4", frames=3))
    bad = tmp_path / "bad.mkv"
    bad.write_text("not a video")
    out = tmp_path / "out"
    summary = predict_videos(checkpoint, [clips[0], bad, clips[1]], out, device="cpu", masks=True, progress=False)
    assert [v.video for v in summary.written] == clips and not summary.ok
    assert [(p, "cannot read video" in r and str(bad) in r) for p, r in summary.failed] == [(bad, True)]
    assert str(summary).startswith("predicted 2 videos (6 frames) in ") and str(summary).endswith("; 1 failed")
    assert sorted(p.name for p in out.iterdir()) == [
        "a__x_mp4_masks",
        "a__x_mp4_overlay.mp4",
        "b__x_mp4_masks",
        "b__x_mp4_overlay.mp4",
    ]


def test_predict_videos_checks_everything_before_loading_the_model(tmp_path):
    first, second = (write_clip(tmp_path / f"{n}.mp4", frames=2) for n in ("first", "second"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "second_overlay.mp4").write_bytes(b"old")
    no_model = tmp_path / "missing.pt"  # loading it would fail: every error below comes before
    with pytest.raises(VocsegError, match="already exists") as e:
        predict_videos(no_model, [first, second], out, progress=False)
    assert str(out / "second_overlay.mp4") in str(e.value) and not (out / "first_overlay.mp4").exists()
    with pytest.raises(VocsegError, match="does not exist") as e:
        predict_videos(no_model, [first, tmp_path / "gone.mp4"], tmp_path / "out2", progress=False)
    assert str(tmp_path / "gone.mp4") in str(e.value)
    with pytest.raises(VocsegError, match="unknown amp"):
        predict_videos(no_model, [first], tmp_path / "out2", amp="fp8", progress=False)
    with pytest.raises(VocsegError, match="model file not found"):
        predict_videos(no_model, [first], tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


def test_plan_videos_expands_patterns_and_takes_each_video_once(tmp_path):
    for name in ("b.mp4", "a.MKV", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    planned = plan_videos([tmp_path / "b.mp4", str(tmp_path / "*")], tmp_path / "out", masks=True)
    assert planned == [(tmp_path / "b.mp4", "b"), (tmp_path / "a.MKV", "a")]  # in the order named, each once
    with pytest.raises(VocsegError, match="matches no video files"):
        plan_videos(str(tmp_path / "*.webm"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident set size from /proc")
def test_memory_does_not_grow_with_the_clip_length(tmp_path):
    """Frames are streamed: the resident memory at frame 200 is that at frame 60 (by then the encoder's
    look-ahead buffers are full). The frames' pixels are FFmpeg's buffers, which tracemalloc does not see,
    hence the resident set size, read at each model call. Each 160x120 frame is 58 kB as RGB: holding the
    decoded frames adds about 12 MB between the two (measured), streaming under 0.5 MB. Held frames would grow
    the memory in both halves of that span (~4 MB each); a one-off allocation elsewhere in the process (seen
    once: 5.7 MB) lands in one half only, so the smaller half's growth is what is judged."""
    clip = write_clip(tmp_path / "long.mp4", frames=200, h=120, w=160)
    rss = []
    stub = channel_predictor()
    model = stub.model

    def measured(x: torch.Tensor) -> torch.Tensor:
        rss.append(_rss_bytes())
        return model(x)

    stub.model = measured
    predict_video(stub, clip, tmp_path / "out", masks=True, progress=False)
    assert len(rss) == 200
    halves = [max(rss[60:130]) - rss[60], max(rss[130:]) - rss[130]]
    growth = min(halves)
    assert growth < 2_000_000, (
        f"resident memory grew by {[round(g / 1e6, 1) for g in halves]} MB in frames 60-130, 130-200"
    )


def test_cli_predict_takes_images_and_videos_together(checkpoint, tmp_path, capsys):
    """`vocseg predict CKPT photo.png clip.mp4 --out DIR --masks`: masks and overlays for the image, an overlay
    video and per-frame masks for the clip."""
    from PIL import Image

    from vocseg.cli import main

    clip = write_clip(tmp_path / "clip.mp4")
    Image.fromarray(clip_frame(0)).save(tmp_path / "photo.png")
    args = ["predict", str(checkpoint), str(tmp_path / "photo.png"), str(clip), "--out", str(tmp_path / "out")]
    assert main([*args, "--masks", "--device", "cpu", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert (out / "photo.png").is_file() and (out / "photo_overlay.png").is_file()
    frames, size, *_ = video_info(out / "clip_overlay.mp4")
    assert frames == len(list((out / "clip_masks").glob("*.png"))) == len(decoded_frames(clip))
    assert "predicted 1 images" in capsys.readouterr().out
