"""Export a checkpoint's model to ONNX or TorchScript with dynamic batch, height and width, and read
exported files back (with their metadata) for inference.

The exported model maps a normalised float32 image batch ``image (B, 3, H, W)`` to ``logits
(B, C, H, W)``, exactly like the PyTorch model: the caller scales RGB to [0, 1] and applies the
stored ``(x - mean) / std``. The file carries what inference needs besides the weights: class names,
the normalisation, the model name and arguments, ``num_classes`` and the vocseg version (ONNX:
``metadata_props``, one key each, JSON values; TorchScript: ``extra/vocseg.json``).

ONNX goes through the dynamo exporter (``torch.onnx.export(..., dynamo=True)``): it exports every
registered model with dynamic batch, H and W (tests/test_export.py checks each one), it is the exporter
tests/test_models.py already relies on, and the TorchScript-based one (``dynamo=False``) is deprecated
upstream. TorchScript uses ``torch.jit.trace``: the models are not scriptable (``torch.jit.script``
rejects their Python), and tracing records the shape arithmetic of pad-and-crop. Every export is
compared with PyTorch at two sizes other than the traced one before anything is written.

Known limit: ``unet`` pads a 16x16 padded input wider in a Python ``if`` on the shape, which neither
export can record; for images of at most 16x16 pixels the exported U-Net's logits differ from PyTorch's.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_model, model_metadata
from ..errors import VocsegError, require
from ..runtime.files import atomic_write_bytes, output_file

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "image", "logits"
TORCHSCRIPT_METADATA = "vocseg.json"
# Sample input for tracing: batch 2 and odd sides above every model's total stride, because
# torch.export specialises sizes 0 and 1 and a 1-pixel feature map (see tests/test_models.py).
TRACE_SHAPE = (2, 3, 97, 131)
# Sizes the exported model is checked at before it is written: neither is the traced one.
VERIFY_SHAPES = ((1, 3, 75, 157), (3, 3, 64, 45))
# Metadata keys: plain strings are stored as they are, the others as JSON.
_TEXT_KEYS = ("model_name", "vocseg_version")
_JSON_KEYS = ("model_kwargs", "num_classes", "class_names", "normalization_mean", "normalization_std")


def export_model(
    checkpoint: str | Path, fmt: str, out: str | Path, *, opset: int | None = None, overwrite: bool = False
) -> Path:
    """Export ``checkpoint``'s model as ``fmt`` (``"onnx"`` or ``"torchscript"``) to ``out``; returns ``out``.

    Batch, height and width are dynamic. ``opset`` (ONNX only) defaults to the exporter's. The result is
    compared with PyTorch at two sizes before it is written; an existing ``out`` is kept unless
    ``overwrite``."""
    if fmt not in FORMATS:
        raise VocsegError(f"unknown export format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    if opset is not None and fmt != "onnx":
        raise VocsegError(f"opset={opset} applies to ONNX only, not to {fmt}")
    out = output_file(out, overwrite, what="export target")
    model, ckpt = load_model(checkpoint, "cpu")
    meta = model_metadata(ckpt)
    data = onnx_bytes(model, meta, opset=opset) if fmt == "onnx" else _export_torchscript(model, meta)
    atomic_write_bytes(data, out)
    return out


def _require(module: str) -> Any:
    """Import an optional dependency of ONNX export/inference, or say how to install it."""
    return require(module, "onnx", "ONNX export and inference")


# ---------------------------------------------------------------------------------------------- ONNX


def onnx_bytes(model: nn.Module, metadata: dict[str, Any] | None = None, *, opset: int | None = None) -> bytes:
    """``model`` (in eval mode) as a serialised ONNX model with dynamic batch, height and width, and
    ``metadata`` (see :func:`vocseg.checkpoint.model_metadata`) when given; checked against ``model`` in onnxruntime
    at two sizes when onnxruntime is installed."""
    onnx = _require("onnx")
    _require("onnxscript")
    if model.training:  # train-mode BatchNorm and dropout would be baked into the graph
        raise VocsegError("the model is in training mode; call model.eval() before exporting it")
    # Names (not Dim objects) make the exporter infer each dimension's range itself and name the
    # ONNX dims after them; an unexpected specialisation is caught by the check at other sizes below.
    dynamic = ({0: "batch", 2: "height", 3: "width"},)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and decomposition chatter
        try:
            program = torch.onnx.export(
                model,
                (torch.randn(*TRACE_SHAPE),),
                dynamic_shapes=dynamic,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        except Exception as e:  # noqa: BLE001 - any exporter failure is reported with the model's name
            name = (metadata or {}).get("model_name", type(model).__name__)
            raise VocsegError(f"ONNX export of model {name!r} failed: {type(e).__name__}: {e}") from None
    proto = program.model_proto
    if metadata is not None:
        _set_onnx_metadata(proto, metadata)
    data = proto.SerializeToString()
    try:
        ort = __import__("onnxruntime")
    except ImportError:
        # Exporting needs no runtime: without one, only the graph's structure is checked.
        onnx.checker.check_model(proto)
        return data
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # not every core: others may be busy
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    _verify(model, _OrtRunner(session), "ONNX")
    return data


def _set_onnx_metadata(proto: Any, meta: dict[str, Any]) -> None:
    flat = _flatten_metadata(meta)
    del proto.metadata_props[:]
    for key, value in flat.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"vocseg {meta['model_name']}: image (B, 3, H, W) float32 RGB in [0, 1] normalised with "
        f"(x - mean) / std -> logits (B, {meta['num_classes']}, H, W)"
    )


def _flatten_metadata(meta: dict[str, Any]) -> dict[str, str]:
    flat = {
        **meta,
        "normalization_mean": meta["normalization"]["mean"],
        "normalization_std": meta["normalization"]["std"],
    }
    return {**{k: str(flat[k]) for k in _TEXT_KEYS}, **{k: json.dumps(flat[k]) for k in _JSON_KEYS}}


def parse_metadata(props: Mapping[str, str], source: str | Path) -> dict[str, Any]:
    """The metadata dict of an exported file from its ``key -> string`` properties (see ``vocseg.checkpoint.model_metadata``)."""
    missing = [k for k in (*_TEXT_KEYS, *_JSON_KEYS) if k not in props]
    if missing:
        raise VocsegError(
            f"{source} has no vocseg metadata ({', '.join(missing)} missing): export it with `vocseg export`"
        )
    try:
        meta: dict[str, Any] = {k: props[k] for k in _TEXT_KEYS}
        meta.update({k: json.loads(props[k]) for k in _JSON_KEYS})
    except json.JSONDecodeError as e:
        raise VocsegError(f"{source} has malformed vocseg metadata: {e}") from None
    meta["normalization"] = {"mean": meta.pop("normalization_mean"), "std": meta.pop("normalization_std")}
    return meta


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The vocseg metadata of an exported ONNX file: ``model_name``, ``model_kwargs``, ``num_classes``,
    ``class_names``, ``normalization`` (``{"mean", "std"}``) and ``vocseg_version``."""
    onnx = _require("onnx")
    path = Path(path)
    if not path.is_file():
        raise VocsegError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise VocsegError(f"{path} is not a readable ONNX file: {e}") from None
    return parse_metadata({p.key: p.value for p in proto.metadata_props}, path)


class _OrtRunner:
    """An onnxruntime session as a ``Tensor -> Tensor`` callable, like the PyTorch model."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(np.asarray(out)).to(x.device)


def load_onnx_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Callable[[Tensor], Tensor], dict[str, Any]]:
    """An exported ONNX file as a ``Tensor -> Tensor`` callable running in onnxruntime, and its metadata.

    Runs on CUDA when ``device`` is a CUDA device and onnxruntime has the CUDA provider, else on CPU
    with as many threads as torch uses."""
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise VocsegError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise VocsegError(f"onnxruntime cannot load {path}: {e}") from None
    return _OrtRunner(session), parse_metadata(session.get_modelmeta().custom_metadata_map, path)


# --------------------------------------------------------------------------------------- TorchScript


def _export_torchscript(model: nn.Module, meta: dict[str, Any]) -> bytes:
    """A traced TorchScript archive with ``extra/vocseg.json``, checked at two untraced sizes."""
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream (FutureWarning) but still the format C++/mobile runtimes load;
        # TracerWarnings flag Python branches on shapes, which the size check below would catch if wrong.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.randn(*TRACE_SHAPE), check_trace=False, _store_inputs=False)
        _verify(model, traced, "TorchScript")
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta)})
    return buf.getvalue()


def is_torchscript_file(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``code/``), not a ``torch.save`` checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_torchscript_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript file (eval mode, on ``device``) and its vocseg metadata."""
    path = Path(path)
    if not path.is_file():
        raise VocsegError(f"TorchScript file not found: {path}")
    extra = {TORCHSCRIPT_METADATA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as e:
        raise VocsegError(f"{path} is not a readable TorchScript file: {e}") from None
    if not extra[TORCHSCRIPT_METADATA]:
        raise VocsegError(f"{path} has no vocseg metadata ({TORCHSCRIPT_METADATA}): export it with `vocseg export`")
    try:
        meta = json.loads(extra[TORCHSCRIPT_METADATA])
    except json.JSONDecodeError as e:
        raise VocsegError(f"{path} has malformed vocseg metadata: {e}") from None
    return module.eval(), meta


# ------------------------------------------------------------------------------------------ checking


def _verify(model: nn.Module, exported: Callable[[Tensor], Tensor], what: str) -> None:
    """Fail the export when ``exported`` departs from ``model`` at ``VERIFY_SHAPES``."""
    gen = torch.Generator().manual_seed(0)
    for shape in VERIFY_SHAPES:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            expected, got = model(x), exported(x)
        if got.shape != expected.shape:
            raise VocsegError(
                f"{what} export gives shape {tuple(got.shape)} for input {shape}, PyTorch {tuple(expected.shape)}"
            )
        scale = float(expected.abs().max())
        diff = float((got - expected).abs().max())
        if not diff <= 1e-3 * scale + 1e-6:
            raise VocsegError(
                f"{what} export differs from PyTorch at input {shape}: max |diff| {diff:.3g} (logit scale {scale:.3g})"
            )
