"""vocseg.models.summary: the model table (``vocseg models``): one row per registered model, parameters
counted on the meta device equal to a real build's, GFLOPs that scale with the pixels, and the text table."""

from __future__ import annotations

import pytest
import torch

from vocseg.models import count_gflops, create_model, format_model_table, list_models, model_table


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return model_table(image_size=64)


def test_one_row_per_model_with_its_entry(rows):
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["unet"]["paper_table"] == "Table 4"
    assert by_name["deeplabv3_resnet50"]["source"] == "torchvision"
    assert by_name["transfer_unet"]["source"].startswith("vocseg") and by_name["transfer_unet"]["paper_table"] == "-"
    assert all(r["gflops"] > 0 and r["description"] for r in rows)
    # channels-last by default where it was measured faster (docs/benchmarks.md), not for the plain U-Net
    assert by_name["transfer_unet"]["channels_last"] and not by_name["unet"]["channels_last"]
    assert not by_name["lraspp_mobilenet_v3_large"]["channels_last"]


@pytest.mark.parametrize("name", ["fcn", "unpool"])
def test_meta_device_counts_equal_a_real_build(rows, name):
    """The table builds on the meta device (shapes only); a real build on the CPU has the same parameters."""
    real = create_model(name, offline=True)
    expected = sum(p.numel() for p in real.parameters())
    assert {r["name"]: r["params"] for r in rows}[name] == expected


def test_gflops_are_one_forward_at_the_image_size(rows):
    """The table's GFLOPs are count_gflops at its image size; the convs' FLOPs scale with the pixel count
    (512^2 / 64^2 = 64 times as many)."""
    with torch.device("meta"):
        fcn = create_model("fcn", offline=True)
    small = {r["name"]: r["gflops"] for r in rows}["fcn"]
    assert small == pytest.approx(count_gflops(fcn, 64), rel=1e-9)
    assert count_gflops(fcn, 512) == pytest.approx(64 * small, rel=1e-6)


def test_text_table(rows):
    text = format_model_table(rows)
    lines = text.splitlines()
    assert len(lines) == len(rows) + 2 and all(name in text for name in list_models())
    assert "GFLOPs" in lines[0] and "memory" in lines[0]
    fcn_row = next(r for r in rows if r["name"] == "fcn")
    fcn_line = next(line for line in lines if line.startswith("fcn "))
    assert f"{fcn_row['params']:,}" in fcn_line and f"{fcn_row['gflops']:.2f}" in fcn_line
    assert ("chan-last" if fcn_row["channels_last"] else "contig") in fcn_line
    # fcn on an H100: 1,480.5 img/s compiled against 1,005.6 eager, 9.0 s to compile
    assert "1.47x 9s" in fcn_line and "GPU compile" in lines[0]
    assert next(line for line in lines if line.startswith("lraspp_mobilenet_v3_large ")).split()[4] == "-"


def test_empty_table_has_headers_only():
    lines = format_model_table([]).splitlines()
    assert len(lines) == 2 and lines[0].split()[:3] == ["name", "params", "GFLOPs"]
