"""The model zoo: the shared contract every registered model keeps, and the paper's parameter counts, from
its tables (all offline; each module's own tests are in tests/models/test_<module>.py).

Time on 2 CPU cores: the shared contract runs on every registered model, and a torchvision model's
export plus ONNX conversion takes 10-20 s. Models whose every module and op is already exported in
another model skip export, ONNX and the largest forward (``COVERED_BY``): the FCN-ResNets (DeepLabV3-ResNet-50's
backbone, a head of ops its head has), DeepLabV3-ResNet-101 (the ResNet-50 one with more layer3 blocks) and
DeepLabV3-MobileNetV3 (LR-ASPP's backbone, DeepLabV3-ResNet-50's head, one wrapper for all)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.export import Dim

from helpers import COVERED_BY, TORCHVISION_SEGMENTATION
from vocseg.models import count_parameters, create_model, get_model_entry, list_models
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


# ---------------------------------------------------------------- parameter counts, from the tables


def conv(cin, cout, k, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def bn(c):  # BatchNorm2d / affine InstanceNorm2d: weight and bias
    return 2 * c


def table_count(layers) -> int:
    """Sum over (type, cin, cout, k) rows written out from the paper's tables."""
    total = 0
    for kind, cin, cout, k in layers:
        if kind in ("conv", "deconv"):
            total += conv(cin, cout, k)
        elif kind in ("conv_nobias", "deconv_nobias"):
            total += conv(cin, cout, k, bias=False)
        elif kind in ("bn", "in_affine"):
            total += bn(cout)
        elif kind in ("relu", "pool", "unpool", "in"):
            pass
        else:
            raise AssertionError(kind)
    return total


TABLE_1 = [  # fcn: Conv -> ReLU -> BN x5, Deconv -> ReLU -> BN x5, classifier
    *[
        r
        for cin, cout in [(3, 32), (32, 64), (64, 128), (128, 256), (256, 512)]
        for r in (("conv", cin, cout, 3), ("relu", cout, cout, 0), ("bn", cout, cout, 0))
    ],
    *[
        r
        for cin, cout in [(512, 512), (512, 256), (256, 128), (128, 64), (64, 32)]
        for r in (("deconv", cin, cout, 3), ("relu", cout, cout, 0), ("bn", cout, cout, 0))
    ],
    ("conv", 32, NUM_CLASSES, 1),
]
TABLE_2 = [  # unpool ("Wilson's model")
    ("conv", 3, 32, 3),
    ("bn", 32, 32, 0),
    ("conv", 32, 64, 3),
    ("bn", 64, 64, 0),
    ("pool", 64, 64, 2),
    ("conv", 64, 128, 3),
    ("bn", 128, 128, 0),
    ("pool", 128, 128, 2),
    ("conv", 128, 256, 3),
    ("bn", 256, 256, 0),
    ("pool", 256, 256, 2),
    ("conv", 256, 512, 3),
    ("bn", 512, 512, 0),
    ("pool", 512, 512, 2),
    ("conv", 512, 1024, 3),
    ("bn", 1024, 1024, 0),
    ("pool", 1024, 1024, 2),
    ("unpool", 1024, 1024, 2),
    ("deconv", 1024, 512, 3),
    ("bn", 512, 512, 0),
    ("unpool", 512, 512, 2),
    ("deconv", 512, 256, 3),
    ("bn", 256, 256, 0),
    ("unpool", 256, 256, 2),
    ("deconv", 256, 128, 3),
    ("bn", 128, 128, 0),
    ("unpool", 128, 128, 2),
    ("deconv", 128, 64, 3),
    ("bn", 64, 64, 0),
    ("unpool", 64, 64, 2),
    ("deconv", 64, 32, 3),
    ("bn", 32, 32, 0),
    ("deconv", 32, 32, 3),
    ("bn", 32, 32, 0),
    ("conv", 32, NUM_CLASSES, 1),
]
TABLE_3_DECODER = [  # transfer: decoder and classifier; the encoder is torchvision's ResNet without fc
    ("deconv", 512, 256, 3),
    ("bn", 256, 256, 0),
    ("deconv", 256, 128, 3),
    ("bn", 128, 128, 0),
    ("deconv", 128, 64, 3),
    ("bn", 64, 64, 0),
    ("deconv", 64, 32, 3),
    ("bn", 32, 32, 0),
    ("deconv", 32, 16, 3),
    ("bn", 16, 16, 0),
    ("conv", 16, NUM_CLASSES, 1),
]


def double_conv_rows(cin, cout):
    # Our reading of Table 4's double_conv: bias-free convs (a norm follows), affine InstanceNorm2d.
    return [
        ("conv_nobias", cin, cout, 3),
        ("in_affine", cout, cout, 0),
        ("relu", cout, cout, 0),
        ("conv_nobias", cout, cout, 3),
        ("in_affine", cout, cout, 0),
        ("relu", cout, cout, 0),
    ]


def table_4(base=64):
    c1, c2, c3, c4, c5 = (base * m for m in (1, 2, 4, 8, 16))
    return [
        *double_conv_rows(3, c1),
        ("pool", c1, c1, 2),
        *double_conv_rows(c1, c2),
        ("pool", c2, c2, 2),
        *double_conv_rows(c2, c3),
        ("pool", c3, c3, 2),
        *double_conv_rows(c3, c4),
        ("pool", c4, c4, 2),
        *double_conv_rows(c4, c5),
        ("deconv", c5, c4, 2),
        *double_conv_rows(2 * c4, c4),
        ("deconv", c4, c3, 2),
        *double_conv_rows(2 * c3, c3),
        ("deconv", c3, c2, 2),
        *double_conv_rows(2 * c2, c2),
        ("deconv", c2, c1, 2),
        *double_conv_rows(2 * c1, c1),
        ("conv", c1, NUM_CLASSES, 1),
    ]


def resnet_without_fc(weights, fc_in: int = 512) -> int:
    return weights.meta["num_params"] - (fc_in * 1000 + 1000)  # torchvision's count minus the fc head


def transfer_unet_rows(stages=(64, 64, 128, 256, 512), aspp=False, widths=(256, 128, 64, 32)):
    """transfer_unet without its encoder: [ASPP], decoder blocks at 1/16 .. 1/2, classifier."""
    *skips, deepest = stages
    rows, cin = [], deepest
    if aspp:  # 1x1 and three atrous 3x3 branches, bias-free image-pooling conv, 1x1 projection of 5 x 256
        rows += [("conv_nobias", deepest, 256, 1), ("bn", 256, 256, 0)]
        rows += [r for _ in range(3) for r in (("conv_nobias", deepest, 256, 3), ("bn", 256, 256, 0))]
        rows += [("conv", deepest, 256, 1), ("conv_nobias", 5 * 256, 256, 1), ("bn", 256, 256, 0)]
        cin = 256
    for skip, cout in zip(reversed(skips), widths):
        rows += [
            ("conv_nobias", cin + skip, cout, 3),
            ("bn", cout, cout, 0),
            ("conv_nobias", cout, cout, 3),
            ("bn", cout, cout, 0),
        ]
        cin = cout
    return rows + [("conv", cin, NUM_CLASSES, 1)]


TV = torchvision.models
R50_STAGES = (64, 256, 512, 1024, 2048)


EXPECTED_PARAMS = {
    "fcn": ({}, table_count(TABLE_1)),
    "unpool": ({}, table_count(TABLE_2)),
    "transfer": (
        {"pretrained": False},
        resnet_without_fc(torchvision.models.ResNet34_Weights.IMAGENET1K_V1) + table_count(TABLE_3_DECODER),
    ),
    "transfer-resnet18": (
        {"pretrained": False, "encoder": "resnet18"},
        resnet_without_fc(torchvision.models.ResNet18_Weights.IMAGENET1K_V1) + table_count(TABLE_3_DECODER),
    ),
    "unet": ({}, table_count(table_4())),
    "unet-base8": ({"base_channels": 8}, table_count(table_4(8))),
    "transfer_unet": (
        {"pretrained": False},
        resnet_without_fc(TV.ResNet34_Weights.IMAGENET1K_V1) + table_count(transfer_unet_rows()),
    ),
    "transfer_unet-resnet18-aspp": (
        {"pretrained": False, "encoder": "resnet18", "aspp": True},
        resnet_without_fc(TV.ResNet18_Weights.IMAGENET1K_V1) + table_count(transfer_unet_rows(aspp=True)),
    ),
    "transfer_unet-resnet18-narrow": (
        {"pretrained": False, "encoder": "resnet18", "decoder_channels": [128, 64, 32, 16]},
        resnet_without_fc(TV.ResNet18_Weights.IMAGENET1K_V1)
        + table_count(transfer_unet_rows(widths=(128, 64, 32, 16))),
    ),
    "transfer_unet-resnet50-aspp": (
        {"pretrained": False, "encoder": "resnet50", "aspp": True},
        resnet_without_fc(TV.ResNet50_Weights.IMAGENET1K_V1, 2048)
        + table_count(transfer_unet_rows(R50_STAGES, aspp=True)),
    ),
    # Built offline, the torchvision models have exactly the parameters of torchvision's VOC-label weights
    # (21 classes, auxiliary head included), so those weights and checkpoints load into them.
    **{
        name: (
            {"weights": None, "pretrained_backbone": False},
            TV.get_model_weights(name).COCO_WITH_VOC_LABELS_V1.meta["num_params"],
        )
        for name in TORCHVISION_SEGMENTATION
    },
}


@pytest.mark.parametrize("key", sorted(EXPECTED_PARAMS))
def test_parameter_count_matches_table(key):
    kwargs, expected = EXPECTED_PARAMS[key]
    with torch.device("meta"):  # shapes only: fast
        model = create_model(key.split("-")[0], num_classes=NUM_CLASSES, **kwargs)
    assert count_parameters(model) == expected
