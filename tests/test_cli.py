"""The command line: flags generated from the Config (help and choices defined once), version, plain help."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from helpers import TRAIN_ARGS, cli, quiet_train, tiny_config
from vocseg.cli import build_parser, config_overrides, main
from vocseg.config import Config, config_from_dict
from vocseg.errors import VocsegError
from vocseg.models import list_models
from vocseg.version import __version__


def _train_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_config_field_is_a_train_flag_with_its_help_and_choices():
    actions = {a.dest: a for a in _train_parser()._actions}
    for f in dataclasses.fields(Config):
        assert f.name in actions, f"--{f.name.replace('_', '-')} missing"
        action = actions[f.name]
        assert f.metadata["help"] in action.help, f.name
        if f.metadata.get("choices"):
            assert tuple(action.choices) == f.metadata["choices"], f.name


def test_flags_parse_to_config_values():
    args = _train_parser().parse_args(
        [
            "--lr",
            "1e-3",
            "--workers",
            "0",
            "--num-workers",
            "auto",
            "--scale-range",
            "0.5",
            "1.5",
            "--compile",
            "--no-photometric",
            "--model-arg",
            "base_channels=4",
            "--patience",
            "null",
            "--budget",
            "15m",
        ]
    )
    over = config_overrides(args)
    assert over["num_workers"] == "auto" and over["scale_range"] == [0.5, 1.5] and over["compile"] is True
    assert over["photometric"] is False and over["model_kwargs"] == {"base_channels": 4} and over["budget"] == "15m"
    assert over["patience"] is None  # an explicit null overrides the YAML (early stopping off)
    assert "epochs" not in over  # not given: the YAML's value stands
    cfg = config_from_dict(over, "command line")  # YAML rules: "1e-3" becomes the float 0.001
    assert cfg.lr == 0.001 and cfg.scale_range == [0.5, 1.5]


def test_version_and_plain_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"vocseg {__version__}"
    for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["predict", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text and ":class:" not in text, argv


def test_bad_choice_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "rmsprop"])
    assert "adam" in capsys.readouterr().err


def test_evaluate_needs_a_checkpoint_or_a_pretrained_model(capsys):
    assert main(["evaluate"]) == 2
    assert "--model NAME --weights" in capsys.readouterr().err
    assert main(["evaluate", "--model", "deeplabv3_resnet50"]) == 2
    assert "--weights" in capsys.readouterr().err
    assert main(["evaluate", "x.pt", "--slide", "512"]) == 2
    assert "CROP,STRIDE" in capsys.readouterr().err


@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
def test_unknown_model_lists_the_valid_ones(tiny_voc: Path, tmp_path: Path, capsys) -> None:
    """The registry's message (tests/models/test_registry.py) reaches the user from train() and the CLI; so does an unknown
    --model-arg, with the model's valid arguments."""
    valid = ", ".join(list_models())
    with pytest.raises(VocsegError, match="unknown model 'segformer'"):
        quiet_train(tiny_config(tiny_voc, tmp_path / "api", model="segformer", model_kwargs={}))
    rc, err = cli(
        ["train", "--model", "segformer", "--data-root", tiny_voc, "--out", tmp_path / "cli", "--device", "cpu"], capsys
    )
    assert rc == 2 and f"unknown model 'segformer'; valid names: {valid}" in err
    rc, err = cli(
        ["train", *TRAIN_ARGS, "--model-arg", "depth=3", "--data-root", tiny_voc, "--out", tmp_path / "arg"], capsys
    )
    assert rc == 2 and "has no argument(s) depth" in err and "base_channels" in err
