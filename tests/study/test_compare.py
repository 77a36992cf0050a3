"""`vocseg compare` and the statistics behind it: seed groups, mean ± std, the paired bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import read_report, write_fake_run
from vocseg.cli import main
from vocseg.data.synthetic import generate_synthetic_voc
from vocseg.errors import VocsegError
from vocseg.study.compare import compare, default_labels, recipe_groups

# ----------------------------------------------------------------------------- compare


def test_recipe_groups_ignore_seed_and_runtime_keys():
    base = {"model": "fcn", "lr": 0.001, "seed": 0, "out": "a", "device": "cpu"}
    configs = [base, {**base, "seed": 1, "out": "b", "device": "cuda"}, {**base, "lr": 0.01}]
    assert recipe_groups(configs, ["a", "b", "c"]) == ["a", "a", "c"]
    assert default_labels([Path("/x/one/run"), Path("/x/two/run")]) == ["one/run", "two/run"]


def test_compare_groups_seeds_and_tests_the_difference(tmp_path, tiny_voc, vocseg_cache, capsys):
    runs = tmp_path / "runs"
    write_fake_run(runs / "good", tiny_voc, error_rate=0.05, seed=0)
    write_fake_run(runs / "good-2", tiny_voc, error_rate=0.08, seed=1)
    write_fake_run(runs / "poor", tiny_voc, error_rate=0.5, seed=0, lr=0.01)
    write_fake_run(runs / "poor-2", tiny_voc, error_rate=0.45, seed=3, lr=0.01)
    md, html = compare([runs / "good", runs / "good-2", runs / "poor", runs / "poor-2"], tmp_path / "cmp", device="cpu")
    page = read_report(md, html)
    results = {row[0]: row for row in page.rows if row and row[-1] == "done"}
    assert set(results) == {"good", "poor"}  # four runs, two recipes
    assert "±" in results["good"][3] and results["good"][-2] == "2"  # mIoU mean ± std over the 2 seeds
    groups = {row[0]: row for row in page.rows if row and row[0] in ("good", "poor") and "/" in row[1]}
    assert groups["good"][1:3] == ["2/2", "0, 1"] and groups["poor"][2] == "0, 3"
    text = page.all_text
    assert "good beats poor by" in text and "distinguishable from seed and test-set noise" in text
    assert len(page.imgs) == 4 + 3  # curves of every run, comparison, per-class bars, confusion

    # The CLI writes the same report, with labels of the user's choice.
    rc = main(
        [
            "compare",
            str(runs / "good"),
            str(runs / "poor"),
            "--out",
            str(tmp_path / "cli"),
            "--labels",
            "A",
            "B",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and "report:" in capsys.readouterr().out
    assert "A beats B by" in (tmp_path / "cli" / "report.md").read_text()


def test_compare_refuses_folders_that_are_not_runs_and_bad_labels(tmp_path, tiny_voc, vocseg_cache):
    run = write_fake_run(tmp_path / "a", tiny_voc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VocsegError, match=r"empty is not a run folder: .*config.yaml not found"):
        compare([run.path, tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(VocsegError, match=r"2 label\(s\) for 1 run folder"):
        compare([run.path], tmp_path / "out", labels=["x", "y"])
    assert not (tmp_path / "out").exists()


def test_compare_refuses_the_paired_test_for_other_pictures_under_the_same_ids(tmp_path, tiny_voc, vocseg_cache):
    """Two synthetic sets of different seeds name their images alike (synth_000000, ...): the runs must not
    be paired image by image, and the report says why instead of printing an interval."""
    other = tmp_path / "other-voc"
    generate_synthetic_voc(other, n_train=12, n_val=4, seed=1, max_side=64, workers=1)
    runs = tmp_path / "runs"
    write_fake_run(runs / "a", tiny_voc, error_rate=0.05, seed=0)
    write_fake_run(runs / "b", other, error_rate=0.5, seed=0, lr=0.01)
    md, _ = compare([runs / "a", runs / "b"], tmp_path / "cmp", device="cpu")
    text = md.read_text()
    assert "different test pictures under the same ids" in text and "a paired test needs the same images" in text
    assert "beats" not in text and "95% CI" not in text
    # The same data under both runs is still paired.
    write_fake_run(runs / "c", tiny_voc, error_rate=0.5, seed=0, lr=0.01)
    md, _ = compare([runs / "a", runs / "c"], tmp_path / "cmp2", device="cpu")
    assert "a beats c by" in md.read_text()
