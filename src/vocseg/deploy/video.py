"""``vocseg predict`` on video files: segment a clip frame by frame and write an overlay video.

For an input ``<stem>.<ext>`` (any of :data:`VIDEO_SUFFIXES`; whatever FFmpeg decodes) the output folder gets:

* ``<stem>_overlay.mp4``: every frame with the coloured mask blended over it (background left as it is),
  at the input's frame rate, encoded as H.264 (libx264, CRF 20) where PyAV's FFmpeg has libx264, else as
  MPEG-4 part 2 (``mpeg4``, a bit rate scaled to the frame size). No legend panel: the images' legend
  lists the classes present, so its width changes from frame to frame, and a video's frames all have one
  size. Audio is not copied.
* with ``masks=True``, ``<stem>_masks/<frame:06d>.png``: one VOC palette mask per frame (the first frame
  is ``000000.png``), at the frame's own size, the format of the masks written for images.

Frames are streamed: one is decoded, segmented, and encoded (and its mask written) before the next is
decoded, so memory does not grow with the clip's length. Frames are read in their displayed orientation:
a rotation in the stream's display matrix (phone videos) is applied to the pixels, as EXIF orientation
is for images, and the overlay video carries none. The overlay's frames keep their input timestamps
(variable frame rates and gaps survive), on a clock of the input's average frame rate.

yuv420p, the pixel format players expect, needs an even width and height: a frame with an odd width
or height is **padded** by one column on the right or one row at the bottom, repeating the edge pixels
(nothing of the frame is cropped; the masks keep the frame's own odd size).

Both outputs are written under temporary names in the output folder (``.<name>.tmp<pid>``) and renamed
at the end, so a crash or Ctrl-C never leaves a half-written video or a partial mask folder under the
final names. Existing outputs are refused unless ``overwrite=True``.

Entry points: :func:`predict_video` segments one video with a loaded :class:`~vocseg.deploy.predict.Predictor`;
:func:`predict_videos` is the counterpart of :func:`vocseg.deploy.predict.predict` for a list of videos
(model loading, every check before the model loads, unreadable videos skipped and listed). This module
imports ``predict``, never the other way round (tests/test_layers.py forbids import cycles), so the CLI,
not ``predict()``, sends video files here.

PyAV (the FFmpeg binding) is an optional dependency, the ``video`` extra: it is imported only when a
video is read, and its absence is one :class:`VocsegError` saying how to install it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import CHOICES
from ..errors import VocsegError, require
from ..evaluation.inference import check_slide, check_tta, check_tta_scales
from ..plots import overlay
from ..runtime.device import resolve_amp
from ..runtime.files import output_dir
from .predict import _GLOB_CHARS, Predictor, _output_stems, load_predictor, mask_image, pretrained_predictor, segment

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
OVERLAY_VIDEO_SUFFIX = "_overlay.mp4"
MASKS_FOLDER_SUFFIX = "_masks"
CODECS = ("libx264", "mpeg4")  # the first one PyAV's FFmpeg can encode with is used
X264_CRF = 20  # a little better than x264's default 23: mask edges stay crisp
MPEG4_BITS_PER_PIXEL = 0.3  # mpeg4's bit rate per pixel per frame (its default, 200 kb/s, is blocky)
DEFAULT_RATE = Fraction(25)  # when the stream states no frame rate at all


class VideoReadError(VocsegError):
    """A video that cannot be opened or decoded: :func:`predict_videos` reports it and goes on with the next."""


def _av() -> ModuleType:
    """PyAV, imported on first use; a VocsegError saying how to install it when missing."""
    return require("av", "video", "reading and writing video")


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path`` ends in one of :data:`VIDEO_SUFFIXES` (any letter case). Needs no PyAV."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoTargets:
    """Where one video's outputs go: the overlay video, and the mask folder (None: no masks)."""

    overlay: Path
    masks: Path | None


def video_targets(
    path: str | os.PathLike, out_dir: str | os.PathLike, *, masks: bool = False, stem: str | None = None
) -> VideoTargets:
    """The output paths of the video ``path``: ``<stem>_overlay.mp4`` and (``masks``) ``<stem>_masks/``
    in ``out_dir``. ``stem`` None: the video's own stem (pass a distinct one when two inputs share it)."""
    out_dir = Path(out_dir).expanduser()
    stem = Path(path).stem if stem is None else stem
    return VideoTargets(
        out_dir / f"{stem}{OVERLAY_VIDEO_SUFFIX}", out_dir / f"{stem}{MASKS_FOLDER_SUFFIX}" if masks else None
    )


def check_video_targets(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    masks: bool = False,
    overwrite: bool = False,
    stem: str | None = None,
) -> VideoTargets:
    """The targets of :func:`video_targets`, or a VocsegError naming the first that cannot be written: one
    that is the input itself, one of the wrong kind (a folder where the video goes, a file where the
    masks go), or (without ``overwrite``) one that exists. Writes nothing."""
    targets = video_targets(path, out_dir, masks=masks, stem=stem)
    source = Path(path).resolve()
    if targets.overlay.resolve() == source:
        raise VocsegError(f"output {targets.overlay} would replace the input video; choose another output folder")
    if targets.overlay.is_dir():
        raise VocsegError(f"cannot write the overlay video {targets.overlay}: a folder of that name is in the way")
    if targets.masks is not None and targets.masks.exists() and not targets.masks.is_dir():
        raise VocsegError(f"cannot write masks to {targets.masks}: it is a file, not a folder")
    if not overwrite:
        for target in (targets.overlay, targets.masks):
            if target is not None and target.exists():
                raise VocsegError(
                    f"{target} already exists; pass overwrite=True (--overwrite) or choose another output folder"
                )
    return targets


@dataclass
class VideoSummary:
    """What :func:`predict_video` did: ``frames`` segmented from ``video`` in ``seconds``, written to
    ``overlay`` (``size`` (width, height), ``fps``, ``codec``) and, when asked for, to ``masks``."""

    video: Path
    overlay: Path
    masks: Path | None
    frames: int
    seconds: float
    fps: Fraction
    size: tuple[int, int]
    codec: str

    def __str__(self) -> str:
        speed = f", {self.frames / self.seconds:.1f} frames/s" if self.seconds > 0 else ""
        masks = f" and {self.frames} masks in {self.masks}" if self.masks is not None else ""
        return (
            f"segmented {self.frames} frames of {self.video} in {self.seconds:.1f} s{speed} -> "
            f"{self.overlay} ({self.size[0]}x{self.size[1]}, {float(self.fps):.3g} fps, {self.codec}){masks}"
        )


def _check_video_args(
    path: str | os.PathLike, tta: str, tta_scales: Sequence[float] | None, slide: tuple[int, int] | None
) -> tuple[Path, tuple[int, int] | None]:
    """The video's path and the checked ``slide``; bad test-time options or a missing file are refused."""
    check_tta(tta)
    check_tta_scales(tta, tta_scales)
    if slide is not None:
        slide = check_slide(slide)
    path = Path(path).expanduser()
    if not path.is_file():
        raise VideoReadError(f"video {path} does not exist" if not path.exists() else f"video {path} is not a file")
    return path, slide


def _segment_frame(predictor, rgb, index, path, tta, scales, slide, amp_dtype) -> np.ndarray:
    """One frame's class-index mask; running out of memory names the frame and the way out."""
    try:
        (mask,) = segment(predictor, [rgb], tta=tta, tta_scales=scales, slide=slide, amp_dtype=amp_dtype)
    except torch.OutOfMemoryError:
        raise VocsegError(f"out of memory segmenting frame {index} of {path}; try sliding windows (--slide)") from None
    return mask


def predict_video(
    predictor: Predictor,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    amp_dtype: torch.dtype | None = None,
    masks: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stem: str | None = None,
) -> VideoSummary:
    """Segment every frame of the video ``path`` with ``predictor`` and write ``<stem>_overlay.mp4`` (and,
    with ``masks``, ``<stem>_masks/<frame:06d>.png``) to ``out_dir``; see the module docstring.

    ``tta``, ``tta_scales``, ``slide`` and ``amp_dtype`` mean what they mean to
    :func:`vocseg.deploy.predict.segment` (``tta_scales`` None: the predictor's own, as for images).
    ``stem``: the name the outputs are built from (None: the video's stem). Raises VocsegError, naming the
    file, when PyAV is missing, the video cannot be opened or decoded, or an output exists (without
    ``overwrite``) or cannot be written; nothing is left under the final names then."""
    start = time.perf_counter()
    av = _av()
    path, slide = _check_video_args(path, tta, tta_scales, slide)
    targets = check_video_targets(path, out_dir, masks=masks, overwrite=overwrite, stem=stem)
    output_dir(out_dir, create=False)  # a bad output path fails before the video is opened
    scales = tuple(tta_scales) if tta_scales else predictor.tta_scales
    errors = (av.FFmpegError, OSError, ValueError)

    try:
        source = av.open(str(path), "r")
    except errors as e:
        raise VideoReadError(f"cannot read video {path}: {_reason(e)}") from None
    with source:
        if not source.streams.video:
            raise VideoReadError(f"cannot read video {path}: it holds no video stream")
        stream = source.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # frame- and slice-threaded decoding
        rate = _frame_rate(stream)
        writer = _Writer(av, targets, rate)
        try:
            # total 0: the container does not say how many frames it holds
            with tqdm(total=stream.frames or None, desc=path.name, unit="frame", disable=not progress) as bar:
                for index, frame in enumerate(_decoded(source, stream, path, errors)):
                    rgb = _upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0) or 0)
                    mask = _segment_frame(predictor, rgb, index, path, tta, scales, slide, amp_dtype)
                    writer.write(index, rgb, mask, frame.time)
                    bar.update(1)
            if writer.frames == 0:
                raise VideoReadError(f"cannot read video {path}: it holds no frame FFmpeg can decode")
            writer.finish()
        finally:
            writer.discard()  # after finish(): nothing left to remove
    seconds = time.perf_counter() - start
    return VideoSummary(
        path, targets.overlay, targets.masks, writer.frames, seconds, writer.rate, writer.size, writer.codec
    )


@dataclass
class VideosSummary:
    """What :func:`predict_videos` did: one :class:`VideoSummary` per video ``written``, and (video, reason)
    pairs for those ``failed`` (unreadable)."""

    out: Path
    written: list[VideoSummary] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every video was segmented."""
        return not self.failed

    def __str__(self) -> str:
        frames = sum(v.frames for v in self.written)
        return (
            f"predicted {len(self.written)} videos ({frames} frames) in {self.seconds:.1f} s -> {self.out}; "
            f"{len(self.failed)} failed"
        )


def plan_videos(
    videos: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    masks: bool = False,
    overwrite: bool = False,
) -> list[tuple[Path, str]]:
    """(video, output stem) pairs for ``videos`` (files, or glob patterns whose video files are taken; each
    file once), with clashing
    stems made distinct as for images; raises VocsegError, writing nothing, when PyAV is missing, a video
    does not exist, or an output cannot be written (see :func:`check_video_targets`). Call it before
    segmenting anything else in the same command, so a refusal comes before any file is written."""
    _av()
    entries = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
    if not entries:
        raise VocsegError("no videos given")
    paths: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if not path.exists() and _GLOB_CHARS & set(str(entry)):
            found = glob.glob(str(path), recursive=True)
            matches = sorted(Path(m) for m in found if Path(m).is_file() and is_video(m))
            if not matches:
                raise VocsegError(f"pattern {str(entry)!r} matches no video files")
            paths.extend(matches)
        elif not path.is_file():
            raise VocsegError(f"video {path} does not exist" if not path.exists() else f"video {path} is not a file")
        else:
            paths.append(path)
    first: dict[Path, Path] = {}
    for p in paths:
        first.setdefault(p.resolve(), p)  # each video once, where it is first named
    paths = list(first.values())
    stems = _output_stems(paths)
    for path, stem in zip(paths, stems):
        check_video_targets(path, out, masks=masks, overwrite=overwrite, stem=stem)
    output_dir(out, create=False)
    return list(zip(paths, stems))


def predict_videos(
    source: str | os.PathLike | None,
    videos: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    device: str = "auto",
    amp: str = "none",
    masks: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    model_name: str | None = None,
    weights: str | None = None,
    predictor: Predictor | None = None,
) -> VideosSummary:
    """``vocseg predict`` for video files, the counterpart of :func:`vocseg.deploy.predict.predict`: the
    same model arguments (``source``, or ``model_name`` with ``weights``; or a loaded ``predictor``, which
    wins), every argument and every output checked before the model loads, then :func:`predict_video` on
    each video in turn. Videos sharing a stem get distinct output names, as images do (``a__x_mp4``).
    A video that cannot be read is reported on stderr, skipped and listed in ``failed``."""
    start = time.perf_counter()
    _av()
    check_tta(tta)
    check_tta_scales(tta, tta_scales)
    if slide is not None:
        slide = check_slide(slide)
    if amp not in CHOICES["amp"]:
        raise VocsegError(f"unknown amp {amp!r}; valid choices: {', '.join(CHOICES['amp'])}")
    planned = plan_videos(videos, out, masks=masks, overwrite=overwrite)
    if predictor is None:
        predictor = (
            load_predictor(source, device) if model_name is None else pretrained_predictor(model_name, weights, device)
        )
    amp_dtype = resolve_amp(amp, predictor.device) if predictor.kind != "onnx" else None
    summary = VideosSummary(Path(out).expanduser())
    for path, stem in planned:
        try:
            summary.written.append(
                predict_video(
                    predictor,
                    path,
                    out,
                    tta=tta,
                    tta_scales=tta_scales,
                    slide=slide,
                    amp_dtype=amp_dtype,
                    masks=masks,
                    overwrite=overwrite,
                    progress=progress,
                    stem=stem,
                )
            )
        except VideoReadError as e:
            summary.failed.append((path, str(e)))
            tqdm.write(f"skipped: {e}", file=sys.stderr)
    summary.seconds = time.perf_counter() - start
    return summary


def _reason(e: Exception) -> str:
    """PyAV's message without its "[Errno N] " prefix and its ": '<path>'" suffix (the caller names the file)."""
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(e))
    filename = getattr(e, "filename", None)
    if filename:
        for suffix in (f": '{filename}'", f": {filename!r}"):
            text = text.removesuffix(suffix)
    return text


def _frame_rate(stream) -> Fraction:
    """The stream's average frame rate, else FFmpeg's guess, else :data:`DEFAULT_RATE`."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return Fraction(rate)
    return DEFAULT_RATE


def _decoded(source, stream, path: Path, errors: tuple[type[Exception], ...]):
    """The stream's frames in presentation order; a decoding error as a VocsegError naming the file."""
    frames = source.decode(stream)
    count = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except errors as e:
            raise VideoReadError(f"cannot decode video {path} after {count} frames: {_reason(e)}") from None
        yield frame
        count += 1


def _upright(rgb: np.ndarray, rotation: float) -> np.ndarray:
    """The frame as displayed: ``rotation`` is the display matrix's counter-clockwise angle in degrees."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _even(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` padded by one row at the bottom and/or one column on the right (edge pixels repeated) so
    both sides are even, as yuv420p needs."""
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else rgb


def pick_codec(av: ModuleType) -> str:
    """The first of :data:`CODECS` that PyAV's FFmpeg can encode with."""
    for name in CODECS:
        try:
            av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
        return name
    raise VocsegError(f"PyAV's FFmpeg can encode with none of {', '.join(CODECS)}; reinstall PyAV (pip install av)")


class _Writer:
    """Writes the overlay video and the masks under temporary names; ``finish`` renames them into place,
    ``discard`` removes whatever was not finished. The encoder opens on the first frame, whose (upright,
    padded) size fixes the video's; a later frame of another size is scaled to it."""

    def __init__(self, av: ModuleType, targets: VideoTargets, rate: Fraction) -> None:
        self.av, self.targets, self.rate = av, targets, rate
        self.codec = pick_codec(av)
        self.frames, self.size = 0, (0, 0)
        self.tmp_video = _temporary(targets.overlay)
        self.tmp_masks = _temporary(targets.masks) if targets.masks is not None else None
        self.container = self.stream = None
        self._start: float | None = None  # the first frame's time in seconds
        self._last_pts = -1

    def _open(self, width: int, height: int) -> None:
        av, rate = self.av, self.rate
        if self.codec == "mpeg4" and rate.numerator > 65535:  # mpeg4's time base denominator limit
            rate = 1 / (1 / rate).limit_denominator(65535)
        output_dir(self.targets.overlay.parent)  # created once a frame decoded: a failed run leaves no empty folder
        try:
            self.container = av.open(str(self.tmp_video), "w", format="mp4")
            self.stream = self.container.add_stream(self.codec, rate=rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            if self.codec == "libx264":
                self.stream.options = {"crf": str(X264_CRF)}
            else:
                self.stream.bit_rate = max(500_000, int(width * height * float(rate) * MPEG4_BITS_PER_PIXEL))
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VocsegError(f"cannot write {self.targets.overlay}: {_reason(e)}") from None
        self.size, self.rate = (width, height), rate
        if self.tmp_masks is not None:
            try:
                self.tmp_masks.mkdir()
            except OSError as e:
                raise VocsegError(f"cannot write masks to {self.targets.masks}: {e}") from None

    def write(self, index: int, rgb: np.ndarray, mask: np.ndarray, seconds: float | None) -> None:
        av = self.av
        picture = _even(overlay(rgb, mask))
        if self.container is None:
            self._open(picture.shape[1], picture.shape[0])
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        if (picture.shape[1], picture.shape[0]) != self.size:
            frame = frame.reformat(width=self.size[0], height=self.size[1])
        frame.pts = self._pts(seconds)
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VocsegError(f"cannot write {self.targets.overlay}: {_reason(e)}") from None
        if self.tmp_masks is not None:
            target = self.tmp_masks / f"{index:06d}.png"
            try:
                mask_image(mask).save(target, format="PNG")
            except OSError as e:
                raise VocsegError(f"cannot write {self.targets.masks / target.name}: {e}") from None
        self.frames += 1

    def _pts(self, seconds: float | None) -> int:
        """The frame's timestamp in ticks of 1/rate: its input time from the first frame's, rounded, and
        always after the previous frame's (one tick on when the input gives no time)."""
        pts = self._last_pts + 1
        if seconds is not None:
            if self._start is None:
                self._start = seconds
            pts = max(pts, round((seconds - self._start) * self.rate))
        self._last_pts = pts
        return pts

    def finish(self) -> None:
        av = self.av
        try:
            for packet in self.stream.encode(None):  # flush the encoder's delayed frames
                self.container.mux(packet)
            self.container.close()
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VocsegError(f"cannot write {self.targets.overlay}: {_reason(e)}") from None
        self.container = None
        try:
            if self.tmp_masks is not None:
                _replace_folder(self.tmp_masks, self.targets.masks)
                self.tmp_masks = None
            os.replace(self.tmp_video, self.targets.overlay)
        except OSError as e:
            raise VocsegError(f"cannot write {self.targets.overlay}: {e}") from None

    def discard(self) -> None:
        if self.container is not None:
            with contextlib.suppress(self.av.FFmpegError, OSError, ValueError):
                self.container.close()  # the run failed already: its own error is the one to report
            self.container = None
        self.tmp_video.unlink(missing_ok=True)
        if self.tmp_masks is not None:
            shutil.rmtree(self.tmp_masks, ignore_errors=True)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _replace_folder(new: Path, target: Path) -> None:
    """Rename the folder ``new`` to ``target``; an existing ``target`` (overwrite) is moved aside first and
    removed once ``new`` is in place."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)  # put the previous masks back
        raise
    shutil.rmtree(old, ignore_errors=True)
