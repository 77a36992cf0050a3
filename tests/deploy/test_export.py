"""vocseg.deploy.export: every registered model (or one that covers all its ops) exports to ONNX with dynamic
batch/height/width and matches PyTorch in onnxruntime; metadata round-trips; TorchScript round-trips at two sizes."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import COVERED_BY
from vocseg.checkpoint import save_checkpoint
from vocseg.deploy.export import export_model, load_onnx_model, load_torchscript_model, read_onnx_metadata
from vocseg.errors import VocsegError
from vocseg.models import create_model, list_models

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

# An odd size larger than the traced ones and another size with batch 2: the file must not be tied to the
# traced shape.
SIZES = [(1, 3, 113, 149), (2, 3, 64, 80)]
NORM = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def write_checkpoint(path: Path, name: str, num_classes: int = 21, class_names=None, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, offline=True, **kwargs).eval()
    save_checkpoint(
        {
            "model": model.state_dict(),
            "model_name": name,
            "model_kwargs": kwargs,
            "num_classes": num_classes,
            "class_names": class_names,
            "normalization": NORM,
            "config": {"model": name, "num_classes": num_classes},
        },
        path,
    )
    return model


def onnx_session(path: Path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# The dynamo exporter spends 10-25 s of tracing and decomposition per model on a 2-core CPU
# (docs/benchmarks.md, "Test suite"), so a model whose every op and module another export here already
# covers is not exported again. Beyond COVERED_BY (tests/helpers.py):
ONNX_COVERED_BY = {
    **COVERED_BY,
    "fcn": "test_onnx_metadata_round_trip, checked there the same way",
    "transfer": "transfer_unet (its ResNet encoder) and unpool (transposed conv, BN, ReLU)",
    "deeplabv3_resnet50": "transfer_unet with ASPP (ResNet blocks, atrous convs, image pooling, concat, "
    "bilinear resize) and lraspp_mobilenet_v3_large (torchvision's wrapper and its dict output)",
}
# Same code paths, fewer nodes or channels: transfer_unet with ASPP (to cover DeepLabV3's head) on ResNet-18.
ONNX_KWARGS = {"transfer_unet": {"encoder": "resnet18", "aspp": True}, "unet": {"base_channels": 8}}


def assert_onnx_matches(path: Path, model: torch.nn.Module, name: str, num_classes: int = 21) -> None:
    """The file's dynamic input and output, and its logits in onnxruntime against PyTorch's at SIZES."""
    session = onnx_session(path)
    assert [i.shape for i in session.get_inputs()] == [["batch", 3, "height", "width"]]
    assert [o.shape for o in session.get_outputs()] == [["batch", num_classes, "height", "width"]]
    gen = torch.Generator().manual_seed(1)
    for shape in SIZES:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == expected.shape == (shape[0], num_classes, *shape[2:])
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * scale + 1e-6, err_msg=f"{name} {shape}")
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999, (name, shape)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n not in ONNX_COVERED_BY])
def test_onnx_export_matches_pytorch(name, tmp_path):
    ckpt = tmp_path / f"{name}.pt"
    model = write_checkpoint(ckpt, name, **ONNX_KWARGS.get(name, {}))
    path = export_model(ckpt, "onnx", tmp_path / f"{name}.onnx")
    ckpt.unlink()  # large models: keep the temporary folder small
    assert_onnx_matches(path, model, name)
    path.unlink()
    gc.collect()


@pytest.mark.slow
def test_onnx_metadata_round_trip(tmp_path):
    names = ["sky", "road", "car"]
    ckpt = tmp_path / "m.pt"
    model = write_checkpoint(ckpt, "fcn", num_classes=3, class_names=names)
    path = export_model(ckpt, "onnx", tmp_path / "out" / "m.onnx", opset=18)
    assert_onnx_matches(path, model, "fcn", num_classes=3)
    expected = {
        "model_name": "fcn",
        "model_kwargs": {},
        "num_classes": 3,
        "class_names": names,
        "normalization": NORM,
        "vocseg_version": __import__("vocseg").__version__,
    }
    assert read_onnx_metadata(path) == expected
    runner, meta = load_onnx_model(path)
    assert meta == expected
    assert runner(torch.zeros(1, 3, 20, 30)).shape == (1, 3, 20, 30)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model_name"] == "fcn" and props["class_names"] == '["sky", "road", "car"]'


def test_checkpoint_without_class_names_gets_voc_names(tmp_path):
    ckpt = tmp_path / "m.pt"
    write_checkpoint(ckpt, "fcn")
    path = export_model(ckpt, "torchscript", tmp_path / "m.ts")
    _, meta = load_torchscript_model(path)
    assert meta["class_names"][0] == "background" and meta["class_names"][-1] == "tvmonitor"


def test_torchscript_round_trip_at_two_sizes(tmp_path):
    ckpt = tmp_path / "m.pt"
    model = write_checkpoint(ckpt, "unpool", num_classes=4, class_names=["a", "b", "c", "d"])
    path = export_model(ckpt, "torchscript", tmp_path / "m.ts")
    module, meta = load_torchscript_model(path)
    assert meta["class_names"] == ["a", "b", "c", "d"] and meta["normalization"] == NORM
    assert meta["model_name"] == "unpool" and meta["num_classes"] == 4
    for shape in [(1, 3, 77, 101), (2, 3, 40, 150)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(module(x), model(x), rtol=1e-4, atol=1e-5)


def test_refusals(tmp_path):
    ckpt = tmp_path / "m.pt"
    write_checkpoint(ckpt, "fcn")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(VocsegError, match="m.onnx already exists"):
        export_model(ckpt, "onnx", target)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(VocsegError, match="onnx, torchscript"):
        export_model(ckpt, "tflite", tmp_path / "m.tflite")
    with pytest.raises(VocsegError, match="opset"):
        export_model(ckpt, "torchscript", tmp_path / "m.ts", opset=17)
    with pytest.raises(VocsegError, match="nope.pt"):
        export_model(tmp_path / "nope.pt", "onnx", tmp_path / "x.onnx")
    export_model(ckpt, "torchscript", target, overwrite=True)  # any file name; replaced on request
    assert target.read_bytes() != b"keep me"


def test_foreign_onnx_file_has_no_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(
        torch.nn.Conv2d(3, 2, 1).eval(), (torch.randn(1, 3, 8, 8),), str(path), dynamo=True, verbose=False
    )
    with pytest.raises(VocsegError, match="no vocseg metadata"):
        read_onnx_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(VocsegError, match="junk.onnx"):
        read_onnx_metadata(tmp_path / "junk.onnx")
