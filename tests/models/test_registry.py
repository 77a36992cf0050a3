"""vocseg.models.registry: every model the paper and the literature name is registered, and a bad name or
argument is refused with the names to use."""

from __future__ import annotations

import re

import pytest

from helpers import TORCHVISION_SEGMENTATION
from vocseg.errors import VocsegError
from vocseg.models import CompileSpeed, create_model, get_model_entry, list_models


def test_paper_models_are_registered():
    assert {"fcn", "unpool", "transfer", "unet"} <= set(list_models())


def test_literature_models_are_registered():
    assert {"transfer_unet", *TORCHVISION_SEGMENTATION} <= set(list_models())


def test_models_are_listed_sorted_with_their_source():
    names = list_models()
    assert names == sorted(set(names))
    assert get_model_entry("fcn").source != "torchvision"
    assert get_model_entry("deeplabv3_resnet50").source == "torchvision"


def test_offline_applies_the_entry_offline_arguments(offline):
    """``offline=True`` builds without weights: no download is tried (the ``offline`` fixture records any)."""
    assert get_model_entry("transfer").offline_kwargs == {"pretrained": False, "weights": None}
    model = create_model("transfer", encoder="resnet18", pretrained=True, offline=True)
    assert model.input_normalization is None and offline == []


def test_unknown_model_lists_valid_names():
    valid = ", ".join(list_models())
    assert "fcn" in valid and "unet" in valid
    with pytest.raises(VocsegError, match=re.escape(f"unknown model 'segformer'; valid names: {valid}")):
        create_model("segformer")
    with pytest.raises(VocsegError, match=re.escape(f"unknown model 'segformer'; valid names: {valid}")):
        get_model_entry("segformer")


@pytest.mark.parametrize("name", ["unpool", "transfer", "unet", "transfer_unet", "deeplabv3_resnet50"])
def test_unknown_kwarg_is_named(name):
    with pytest.raises(VocsegError, match=f"model '{name}' has no argument.s. bogus_arg; valid: ") as e:
        create_model(name, bogus_arg=1)
    assert "num_classes" not in str(e.value).split("valid: ")[1]


def test_compile_speed_break_even_by_hand():
    """2 s to compile; 100 img/s eager, 125 compiled: each image saves 0.01 - 0.008 = 0.002 s, so 1,000
    images repay it; a model no faster compiled never repays it."""
    assert CompileSpeed(100.0, 125.0, 2.0).breakeven_images == pytest.approx(1000.0)
    assert CompileSpeed(100.0, 90.0, 2.0).breakeven_images == float("inf")
    assert CompileSpeed(100.0, 100.0, 2.0).breakeven_images == float("inf")
