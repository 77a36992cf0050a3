"""The model zoo: the shared contract every registered model keeps (all offline). Each model's own tests,
its parameter count from the paper's tables among them, are in tests/models/test_<module>.py.

Time on 2 CPU cores: the shared contract runs on every registered model, and a torchvision model's
export plus ONNX conversion takes 10-20 s. Models whose every module and op is already exported in
another model skip export, ONNX and the largest forward (``COVERED_BY``): the FCN-ResNets (DeepLabV3-ResNet-50's
backbone, a head of ops its head has), DeepLabV3-ResNet-101 (the ResNet-50 one with more layer3 blocks) and
DeepLabV3-MobileNetV3 (LR-ASPP's backbone, DeepLabV3-ResNet-50's head, one wrapper for all)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.export import Dim

from helpers import COVERED_BY
from vocseg.models import create_model, get_model_entry, list_models
from vocseg.training.step import training_loss

NUM_CLASSES = 21

# Every model is built with its registry entry's offline_kwargs (no pretrained weights, no download).
# Arguments for the default configurations beyond those: none.
DEFAULT_KWARGS: dict[str, dict] = {}
# Slim settings for the expensive checks (backward, export): same code paths, fewer channels.
SMALL_KWARGS = {
    "transfer": {"encoder": "resnet18"},
    "transfer_unet": {"encoder": "resnet18"},
    "transfer_unet-aspp": {"encoder": "resnet18", "aspp": True},
    "transfer_unet-aux": {"encoder": "resnet18", "aux": True},
    "unet": {"base_channels": 8},
}
# Configurations tested like registered models: id -> (registered name, arguments for every build).
VARIANTS = {
    "transfer_unet-aspp": ("transfer_unet", {"aspp": True}),
    "transfer_unet-aux": ("transfer_unet", {"aux": True}),  # a dict of two outputs while training
}
MODEL_IDS = sorted([*list_models(), *VARIANTS])
# torchvision's models (ResNet-50/101 at output stride 8) dominate the time: marked slow, so
# ``-m "not slow"`` gives a quick run (they stay in the default suite).
MODEL_PARAMS = [
    pytest.param(n, marks=pytest.mark.slow) if get_model_entry(VARIANTS.get(n, (n,))[0]).source == "torchvision" else n
    for n in MODEL_IDS
]
LARGE_SHAPE = (1, 3, 333, 517)

EXPORT_SIZES = [(1, 3, 97, 131), (3, 3, 70, 200)]  # two sizes the exported programs must both handle
MIN_EXPORT_SIZE = 64  # below 2 x the total stride a feature map has 1 pixel, which torch.export specialises


def build(name: str, small: bool = True, seed: int = 0) -> torch.nn.Module:
    """The model (or variant) ``name``, built offline; ``small``: its slim settings, if it has any."""
    torch.manual_seed(seed)
    registered, kwargs = VARIANTS.get(name, (name, {}))
    kwargs = {**kwargs, **(SMALL_KWARGS if small else DEFAULT_KWARGS).get(name, {})}
    return create_model(registered, num_classes=NUM_CLASSES, offline=True, **kwargs)


def main_logits(out):
    """The logits of a forward: models with an auxiliary head return ``{"out", "aux"}`` while training."""
    return out["out"] if isinstance(out, dict) else out


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def cache() -> dict:
    """Models and exported programs shared by the tests of this module (building them is the slow part)."""
    return {}


def default_model(name: str, cache: dict) -> torch.nn.Module:
    key = ("default", name)
    if key not in cache:
        cache[key] = build(name, small=False).eval()
    return cache[key]


def export_dynamic(name: str, cache: dict):
    """``torch.export`` with named (strict) dynamic batch, height and width: any guard restricting H or W
    within the range fails the export."""
    key = ("export", name)
    if key not in cache:
        model = build(name).eval()
        dims = {
            0: Dim("b", max=64),
            2: Dim("h", min=MIN_EXPORT_SIZE, max=4096),
            3: Dim("w", min=MIN_EXPORT_SIZE, max=4096),
        }
        ep = torch.export.export(model, (torch.randn(2, 3, 97, 131),), dynamic_shapes={"x": dims})
        cache[key] = (model, ep)
    return cache[key]


def skip_if_covered(name: str) -> None:
    if name in COVERED_BY:
        pytest.skip(f"same wrapper, modules and ops as {COVERED_BY[name]}, tested there")


@pytest.mark.parametrize("name", MODEL_PARAMS)
class TestEveryModel:
    """The contract of ``registry.py``: (B, 3, H, W) -> (B, num_classes, H, W) for any H, W."""

    @pytest.mark.parametrize("shape", [(2, 3, 97, 131), (1, 3, 64, 64), (1, 3, 8, 13), LARGE_SHAPE])
    def test_output_shape_default_config(self, name, shape, cache):
        if shape == LARGE_SHAPE:
            skip_if_covered(name)
        model = default_model(name, cache)
        with torch.no_grad():
            out = model(torch.randn(*shape))
        assert out.shape == (shape[0], NUM_CLASSES, *shape[2:])
        assert torch.isfinite(out).all()

    def test_backward_gives_finite_grads(self, name):
        model = build(name).train()
        out = model(torch.randn(2, 3, 45, 67))
        target = torch.randint(0, NUM_CLASSES, (2, 45, 67))
        assert isinstance(out, dict) == getattr(model, "has_aux", False)  # a dict only with an aux head
        logits = main_logits(out)
        assert logits.shape == (2, NUM_CLASSES, 45, 67)
        loss = F.cross_entropy(logits, target)
        if isinstance(out, dict):  # the auxiliary head trains too (the engine weights its loss)
            stride = getattr(model, "aux_stride", 1)  # its logits on a grid of stride-pixel cells
            assert set(out) == {"out", "aux"} and out["aux"].shape[:2] == logits.shape[:2]
            assert out["aux"].shape[-2] * stride >= 45 and out["aux"].shape[-1] * stride >= 67
            loss = loss + training_loss({"out": logits, "aux": out["aux"]}, target, None, 0.5, aux_stride=stride)[0]
        assert torch.isfinite(loss)
        loss.backward()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, pname
                assert torch.isfinite(p.grad).all(), pname

    def test_same_seed_same_output(self, name):
        x = torch.randn(1, 3, 40, 50)
        with torch.no_grad():
            a = build(name, seed=123).eval()(x)
            b = build(name, seed=123).eval()(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_torch_export_dynamic_hw(self, name, cache):
        skip_if_covered(name)
        model, ep = export_dynamic(name, cache)
        exported_module = ep.module()
        for shape in EXPORT_SIZES:
            x = torch.randn(*shape)
            with torch.no_grad():
                expected = model(x)
                got = exported_module(x)
            assert got.shape == (shape[0], NUM_CLASSES, *shape[2:])
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    # ONNX: tests/deploy/test_export.py exports every model not in COVERED_BY and runs it in onnxruntime.
