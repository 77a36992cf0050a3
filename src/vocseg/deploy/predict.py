"""``vocseg predict``: segment image files with a checkpoint or an exported model.

For each input image ``<stem>.<ext>`` two files are written to the output folder:

* ``<stem>.png``: the predicted mask in VOC's own format: a palette ("P") PNG with VOC's colour map
  whose pixel values are class indices, at the image's (displayed) size;
* ``<stem>_overlay.png``: the image with the coloured mask blended over it and a legend of the
  classes found, drawn in a panel on its right.

Inputs may be files, folders (their JPEG/PNG files, sorted, not recursive) and glob patterns. Images
of any mode are read through PIL with their EXIF orientation applied, so masks match the picture as
viewers show it. A file that cannot be read is reported and skipped; the summary lists it, and the
CLI then exits with status 1. Nothing in the output folder is overwritten unless ``overwrite=True``:
every target is checked before the first file is written. Two inputs with the same stem (``a/x.jpg``
and ``b/x.jpg``, or ``x.jpg`` and ``x.png``) are given distinct names built from their folders
relative to each other and their extension (``a__x_jpg``, ``b__x_jpg``).

Batching: only images of the same size are batched (sizes read from the headers first), so a mask
does not depend on which other images share its batch; padding mixed sizes into one batch would
change the logits near the borders. The default batch size is 1 on CPU, where batching makes no image
cheaper, and 8 on a GPU, where it does (docs/benchmarks.md, "What the defaults are, and why"). A pool of
threads decodes the next batches and encodes the PNGs while the model runs: on a GPU those, not the model,
set the pace.
"""

from __future__ import annotations

import glob
import io
import os
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from torch import Tensor
from tqdm.auto import tqdm

from ..checkpoint import load_model, model_metadata, pretrained_checkpoint
from ..config import CHOICES
from ..data.classes import voc_colormap, voc_palette
from ..data.loaders import size_batches
from ..errors import VocsegError
from ..evaluation.inference import check_slide, check_tta, check_tta_scales, predict_logits
from ..plots import overlay
from ..runtime.device import resolve_amp, resolve_device
from ..runtime.files import output_dir
from ..runtime.workers import cpu_count
from .export import is_torchscript_file, load_onnx_model, load_torchscript_model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what a folder is searched for (any letter case)
MASK_SUFFIX, OVERLAY_SUFFIX = ".png", "_overlay.png"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_GLOB_CHARS = frozenset("*?[")
IO_THREADS = 8  # decoding and PNG-writing threads (at most the CPU count)
READ_AHEAD = 2  # batches decoded ahead of the model
GPU_BATCH_SIZE = 8  # default batch size on CUDA (see the module docstring)
_PALETTE = voc_palette()
_COLOURS = voc_colormap(256)


@dataclass(frozen=True)
class Job:
    """One input image and the two files it produces."""

    image: Path
    mask: Path
    overlay: Path


@dataclass
class Predictor:
    """A loaded model of any source kind, with what is needed to feed it."""

    model: Callable[[Tensor], Tensor]
    class_names: list[str]
    mean: list[float]
    std: list[float]
    device: torch.device
    kind: str  # "checkpoint", "onnx" or "torchscript"
    tta_scales: tuple[float, ...] | None = None  # a run's own multiscale test scales (its config's)


@dataclass
class PredictSummary:
    """What ``predict`` did: ``written`` (image, mask, overlay) triples and ``failed`` (image, reason) pairs."""

    out: Path
    written: list[tuple[Path, Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every input image was segmented."""
        return not self.failed

    def __str__(self) -> str:
        return f"predicted {len(self.written)} images in {self.seconds:.1f} s -> {self.out}; {len(self.failed)} failed"


def predict(
    source: str | Path,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int | None = None,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    device: str = "auto",
    amp: str = "none",
    overwrite: bool = False,
    progress: bool = True,
    model_name: str | None = None,
    weights: str | None = None,
) -> PredictSummary:
    """Segment every image ``inputs`` names with the model in ``source`` (a vocseg checkpoint ``.pt``,
    an exported ``.onnx`` or TorchScript file) and write masks and overlays to ``out``.

    ``batch_size`` None: 1 on CPU, ``GPU_BATCH_SIZE`` on a GPU (only same-size images share a batch).
    ``tta_scales`` None: a checkpoint's own multiscale test scales, else mmsegmentation's 0.5-1.75.
    Unreadable images are reported on stderr, skipped and listed in the summary's ``failed``; problems
    with the arguments, the model or the output folder raise ``VocsegError`` before anything is written."""
    start = time.perf_counter()
    _check_options(batch_size, tta, slide, amp)
    check_tta_scales(tta, tta_scales)
    out = Path(out)
    jobs = plan_jobs(find_images(inputs), out)
    check_targets(jobs, out, overwrite)
    output_dir(out, create=False)  # checked before the model loads: a bad path costs nothing
    predictor = (
        load_predictor(source, device) if model_name is None else pretrained_predictor(model_name, weights, device)
    )
    if batch_size is None:
        batch_size = GPU_BATCH_SIZE if predictor.device.type == "cuda" else 1
    amp_dtype = resolve_amp(amp, predictor.device) if predictor.kind != "onnx" else None
    output_dir(out)
    summary = PredictSummary(out)
    with tqdm(total=len(jobs), desc="predict", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        batches = plan_batches(jobs, batch_size, summary)
        bar.update(len(jobs) - sum(len(b) for b in batches))  # images whose header could not be read
        scales = tuple(tta_scales) if tta_scales else predictor.tta_scales
        _run(predictor, batches, summary, bar, tta=tta, tta_scales=scales, slide=slide, amp_dtype=amp_dtype)
    summary.seconds = time.perf_counter() - start
    return summary


def _check_options(batch_size: int | None, tta: str, slide: tuple[int, int] | None, amp: str) -> None:
    if batch_size is not None and int(batch_size) < 1:
        raise VocsegError(f"batch_size must be >= 1, got {batch_size}")
    check_tta(tta)
    if amp not in CHOICES["amp"]:
        raise VocsegError(f"unknown amp {amp!r}; valid choices: {', '.join(CHOICES['amp'])}")
    if slide is not None:
        check_slide(slide)


# ------------------------------------------------------------------------------------------- inputs


def find_images(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named by ``inputs``: a file as it is, a folder's JPEG/PNG files (sorted, not recursive),
    a glob pattern's matches (sorted; folders among them expanded). Duplicates are kept once."""
    entries = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not entries:
        raise VocsegError("no inputs given: name image files, folders or glob patterns")
    files: list[Path] = []
    for entry in entries:
        files.extend(_expand(Path(entry).expanduser(), str(entry)))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _expand(path: Path, text: str) -> list[Path]:
    if path.is_dir():
        found = _folder_images(path)
        if not found:
            raise VocsegError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)} files)")
        return found
    if path.is_file():
        return [path]
    if _GLOB_CHARS & set(text):
        matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True))
        files = [f for m in matches for f in (_folder_images(m) if m.is_dir() else [m] if m.is_file() else [])]
        if not files:
            raise VocsegError(f"pattern {text!r} matches no image files")
        return files
    raise VocsegError(f"input {text} does not exist (expected an image file, a folder or a glob pattern)")


def plan_jobs(files: Sequence[Path], out: Path) -> list[Job]:
    """The output paths of each image, with clashing stems made distinct (see the module docstring)."""
    stems = _output_stems(files)
    return [Job(f, out / f"{s}{MASK_SUFFIX}", out / f"{s}{OVERLAY_SUFFIX}") for f, s in zip(files, stems)]


def _output_stems(files: Sequence[Path]) -> list[str]:
    stems = [f.stem for f in files]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, stem in enumerate(stems):
        groups[stem.casefold()].append(i)  # case-insensitive file systems would clash too
    for indices in groups.values():
        if len(indices) < 2:
            continue
        paths = [files[i].resolve() for i in indices]
        common = Path(os.path.commonpath([p.parent for p in paths]))
        for i, p in zip(indices, paths):
            folders = p.parent.relative_to(common).parts
            stems[i] = "__".join([*folders, f"{p.stem}_{p.suffix.lstrip('.')}"] if p.suffix else [*folders, p.stem])
    return stems


def check_targets(jobs: Sequence[Job], out: Path, overwrite: bool) -> None:
    """Refuse before writing anything: clashing targets, a target that is an input image, or (without
    ``overwrite``) a target that exists."""
    owner: dict[str, Path] = {}
    inputs = {j.image.resolve() for j in jobs}
    existing = []
    for job in jobs:
        for target in (job.mask, job.overlay):
            key = str(target.resolve()).casefold()
            if key in owner:
                raise VocsegError(f"{owner[key]} and {job.image} would both write {target}; rename one of them")
            owner[key] = job.image
            if target.resolve() in inputs:
                raise VocsegError(f"output {target} would replace an input image; choose another output folder")
            if target.exists():
                existing.append(target)
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise VocsegError(
            f"{existing[0]} already exists{more}; pass overwrite=True (--overwrite) or choose another output folder"
        )


# -------------------------------------------------------------------------------------------- model


def load_predictor(source: str | Path, device: str = "auto") -> Predictor:
    """Load a vocseg checkpoint, an exported ONNX file (onnxruntime) or an exported TorchScript file."""
    path = Path(source)
    if not path.is_file():
        raise VocsegError(f"model file not found: {path}")
    dev = resolve_device(device)
    scales = None  # a checkpoint's own multiscale test scales; exported files carry none
    if path.suffix.lower() == ".onnx":
        model, meta = load_onnx_model(path, dev)
        dev = torch.device("cpu")  # onnxruntime takes host arrays; it copies to the GPU itself
        kind = "onnx"
    elif is_torchscript_file(path):
        model, meta = load_torchscript_model(path, dev)
        kind = "torchscript"
    elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
        model, ckpt = load_model(path, dev)
        meta, kind = model_metadata(ckpt), "checkpoint"
        scales = (ckpt.get("config") or {}).get("tta_scales")
    else:
        raise VocsegError(
            f"cannot tell what {path} is: expected a vocseg checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), "
            f"an exported ONNX file (.onnx) or an exported TorchScript file"
        )
    if int(meta["num_classes"]) > 256:
        raise VocsegError(f"{path} predicts {meta['num_classes']} classes; palette PNG masks hold at most 256")
    norm = meta["normalization"]
    scales = tuple(scales) if scales else None
    return Predictor(model, list(meta["class_names"]), list(norm["mean"]), list(norm["std"]), dev, kind, scales)


def pretrained_predictor(model_name: str, weights: str | None, device: str = "auto") -> Predictor:
    """A registry model with pretrained weights (e.g. torchvision's COCO_WITH_VOC_LABELS_V1), no checkpoint."""
    if weights is None:
        raise VocsegError(f"--model {model_name} needs --weights (e.g. COCO_WITH_VOC_LABELS_V1, or a file)")
    dev = resolve_device(device)
    model, meta = pretrained_checkpoint(model_name, weights)
    norm = meta["normalization"]
    return Predictor(model.to(dev), list(meta["class_names"]), list(norm["mean"]), list(norm["std"]), dev, "pretrained")


# --------------------------------------------------------------------------------------------- images


def read_image(path: str | Path) -> np.ndarray:
    """Decode any image PIL reads to uint8 RGB ``(H, W, 3)`` in its displayed orientation (EXIF applied).

    16-bit grayscale is scaled to 8 bits; transparent images are composited on black (as the training
    data reader does); CMYK, palette and grayscale images are converted to RGB."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            _check_pixels(img, path)
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as e:
        raise VocsegError(f"image {path} is too large to decode safely: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise VocsegError(f"cannot read image {path}: {_reason(e)}") from None


def _check_pixels(img: Image.Image, path: Path) -> None:
    # Between 1x and 2x Image.MAX_IMAGE_PIXELS PIL only warns; refuse it like the bomb it likely is. (Not
    # via warnings.catch_warnings: images are decoded in threads, and that context manager is not thread-safe.)
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise VocsegError(
            f"image {path} is too large to decode safely: {img.width}x{img.height} is over {limit} pixels"
        )


def _reason(e: Exception) -> str:
    # PIL's message for an unknown format repeats the path, which the caller's message already names.
    return "not an image format PIL can decode, or corrupt" if isinstance(e, UnidentifiedImageError) else str(e)


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0  # 16-bit data, or 8-bit values stored wide
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.array(img.convert("RGB"))


def displayed_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` after EXIF orientation, from the header only (no pixel decoding)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise VocsegError(f"cannot read image {path}: {_reason(e)}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # 5-8 turn the picture by 90 degrees


def plan_batches(jobs: Sequence[Job], batch_size: int, summary: PredictSummary) -> list[list[Job]]:
    """Batches of same-size images (in first-seen order of sizes); one image per batch when
    ``batch_size`` is 1. Images whose header cannot be read are recorded as failed."""
    if batch_size == 1:
        return [[job] for job in jobs]
    sized: list[tuple[Job, tuple[int, int]]] = []
    for job in jobs:
        try:
            sized.append((job, displayed_size(job.image)))
        except VocsegError as e:
            _fail(summary, job.image, str(e))
    return [[sized[i][0] for i in batch] for batch in size_batches([size for _, size in sized], batch_size)]


def _fail(summary: PredictSummary, image: Path, reason: str) -> None:
    summary.failed.append((image, reason))
    tqdm.write(f"skipped: {reason}", file=sys.stderr)


# -------------------------------------------------------------------------------------------- running


@dataclass
class _Decoded:
    """A batch after decoding: same-shape groups of (job, image), and (image path, reason) failures."""

    groups: list[list[tuple[Job, np.ndarray]]]
    failed: list[tuple[Path, str]]


def _decode_batch(jobs: Sequence[Job]) -> _Decoded:
    groups: dict[tuple[int, ...], list[tuple[Job, np.ndarray]]] = defaultdict(list)
    failed = []
    for job in jobs:
        try:
            image = read_image(job.image)
        except VocsegError as e:
            failed.append((job.image, str(e)))
            continue
        groups[image.shape].append((job, image))  # regroup: a header may disagree with the pixels
    return _Decoded(list(groups.values()), failed)


def _read_ahead(batches: Iterable[list[Job]], pool: ThreadPoolExecutor) -> Iterator[tuple[list[Job], _Decoded]]:
    """Batches with their decoded images, decoding up to READ_AHEAD batches in the pool ahead of use."""
    queue: deque = deque()
    it = iter(batches)
    for batch in it:
        queue.append((batch, pool.submit(_decode_batch, batch)))
        if len(queue) > READ_AHEAD:
            head, future = queue.popleft()
            yield head, future.result()
    while queue:
        head, future = queue.popleft()
        yield head, future.result()


def _run(
    predictor: Predictor,
    batches: Iterable[list[Job]],
    summary: PredictSummary,
    bar: tqdm,
    *,
    tta: str,
    tta_scales: Sequence[float] | None,
    slide: tuple[int, int] | None,
    amp_dtype: torch.dtype | None,
) -> None:
    """Segment every batch on this thread while a pool decodes the next ones and writes finished masks:
    decoding and PNG encoding (which release the GIL) overlap with the model instead of adding to it."""
    workers = max(1, min(IO_THREADS, cpu_count()))
    writes: deque = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="vocseg-io") as pool:
        for batch, decoded in _read_ahead(batches, pool):
            for image_path, reason in decoded.failed:
                _fail(summary, image_path, reason)
            for group in decoded.groups:
                try:
                    images = [img for _, img in group]
                    masks = segment(predictor, images, tta=tta, tta_scales=tta_scales, slide=slide, amp_dtype=amp_dtype)
                except torch.OutOfMemoryError:
                    for job, _ in group:
                        _fail(
                            summary, job.image, "out of memory; try a smaller batch size or sliding windows (--slide)"
                        )
                    continue
                for (job, image), mask in zip(group, masks):
                    writes.append((job, pool.submit(write_outputs, job, image, mask, predictor.class_names)))
            while len(writes) > 4 * workers:  # bound the images held in memory while waiting to be written
                _finish_write(writes.popleft(), summary)
            bar.update(len(batch))
        while writes:
            _finish_write(writes.popleft(), summary)


def _finish_write(entry: tuple[Job, Future], summary: PredictSummary) -> None:
    job, future = entry
    future.result()  # a write error (disk full, no permission) stops the run: raise it here
    summary.written.append((job.image, job.mask, job.overlay))


def segment(
    predictor: Predictor,
    images: Sequence[np.ndarray],
    *,
    tta: str = "none",
    tta_scales: Sequence[float] | None = None,
    slide: tuple[int, int] | None = None,
    amp_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Class-index masks ``(B, H, W)`` uint8 for same-size uint8 RGB images ``(H, W, 3)``."""
    x = torch.from_numpy(np.stack(images)).to(predictor.device).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(predictor.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(predictor.std, device=x.device).view(1, -1, 1, 1)
    logits = predict_logits(
        predictor.model, (x - mean) / std, tta=tta, scales=tta_scales, slide=slide, amp_dtype=amp_dtype
    )
    return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()


def write_outputs(job: Job, image: np.ndarray, mask: np.ndarray, class_names: Sequence[str]) -> None:
    """The palette mask and the overlay of one image, each written atomically."""
    _save_png(mask_image(mask), job.mask)
    _save_png(overlay_with_legend(image, mask, class_names), job.overlay)


def _save_png(img: Image.Image, path: Path) -> None:
    """Encode in memory, write beside ``path`` and rename over it: a crash never leaves a torn PNG. No
    fsync (unlike checkpoints): predictions can be made again, and syncing each file costs throughput
    (docs/benchmarks.md, "What the defaults are, and why")."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except OSError as e:
        raise VocsegError(f"cannot write {path}: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A class-index mask as a VOC palette ("P") image, the format of VOC's SegmentationClass PNGs."""
    img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    img.putpalette(_PALETTE)
    return img


# -------------------------------------------------------------------------------------------- overlay


def overlay_with_legend(
    image: np.ndarray, mask: np.ndarray, class_names: Sequence[str], alpha: float = 0.5
) -> Image.Image:
    """The image with the coloured mask blended over it (background left as it is) and, in a white
    panel on the right, a colour swatch and name for each class present."""
    blended = Image.fromarray(overlay(image, mask, alpha))
    counts = np.bincount(mask.ravel(), minlength=256)  # faster than np.unique's sort
    present = [c for c in range(1, min(len(class_names), 256)) if counts[c]]
    rows = [(_COLOURS[c], class_names[c]) for c in present] or [(None, "background only")]
    h, w = mask.shape
    size = int(np.clip(round(max(h, w) / 40), 11, 48))  # legible at any image size
    font = _font(size)
    pad, row = size // 2, size + size // 2
    probe = ImageDraw.Draw(blended)
    panel_w = 3 * pad + size + int(max(probe.textlength(name, font=font) for _, name in rows))
    canvas = Image.new("RGB", (w + panel_w, max(h, pad + row * len(rows))), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (colour, name) in enumerate(rows):
        x, y = w + pad, pad + i * row
        if colour is not None:
            draw.rectangle((x, y, x + size, y + size), fill=tuple(colour), outline=(0, 0, 0))
        draw.text((x + size + pad, y), name, fill=(0, 0, 0), font=font)
    return canvas


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
