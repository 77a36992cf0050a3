"""vocseg.config: YAML then command-line flags, YAML 1.1's scientific notation, and errors that name the key,
the value and the file (unknown keys, values of the wrong type, a missing config file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import cli
from vocseg.config import Config, load_config
from vocseg.errors import VocsegError


def test_config_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": "fcn", "lr": 0.002, "epochs": 4, "model_kwargs": {"a": 1}}))
    cfg = load_config(path, {"lr": 0.005, "model_kwargs": {"b": 2}, "patience": None})
    assert (cfg.lr, cfg.epochs, cfg.model_kwargs, cfg.patience) == (0.005, 4, {"a": 1, "b": 2}, None)
    with pytest.raises(VocsegError, match="optimizer"):
        load_config(None, {"optimizer": "rmsprop"})


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"epochs": "ten"}, "epochs"),
        ({"image_size": "160"}, "image_size"),
        ({"model_kwargs": None}, "model_kwargs"),
        ({"scale_range": 1.5}, "scale_range"),
        ({"hflip": 1.5}, "hflip"),
        ({"num_workers": -1}, "num_workers"),
        ({"patience": "3"}, "patience"),
        ({"deterministic": "yes"}, "deterministic"),
        ({"tta": "hflip"}, "tta='hflip' is not one of none, flip, multiscale"),
        ({"tta_scales": [0.5, -1.0]}, "tta_scales must be positive numbers"),
        ({"monitor": "last", "patience": 3}, "patience=3 needs monitor val_loss or val_miou"),
        ({"copy_paste": 0.5, "image_size": None}, "copy_paste=0.5 needs image_size"),
        ({"copy_paste": 2.0}, "copy_paste is a probability"),
        ({"val_every": 0}, "val_every must be >= 1, got 0"),
        ({"ema_decay": 1.0}, "ema_decay must be in"),
        ({"label_smoothing": 1.0}, "label_smoothing must be in"),
    ],
)
def test_config_values_of_the_wrong_type_name_the_key(bad, key, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(VocsegError, match=key):
        load_config(path)


def test_config_accepts_yaml_scientific_notation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nmin_lr: 1e-5\nepochs: 3.0\n")  # YAML 1.1 reads 1e-3 as a string
    cfg = load_config(path)
    assert (cfg.lr, cfg.min_lr, cfg.epochs) == (0.001, 1e-05, 3) and isinstance(cfg.epochs, int)


@pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
def test_unknown_config_key_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("model: fcn\nlearning_rate: 0.01\nepochs: 2\n")
    with pytest.raises(VocsegError, match="unknown config key") as e:
        load_config(path)
    assert "'learning_rate'" in str(e.value) and str(path) in str(e.value) and "lr" in str(e.value)
    rc, err = cli(["train", "--config", path, "--out", tmp_path / "run"], capsys)
    assert rc == 2 and "'learning_rate'" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # Bad values name the key and value too.
    path.write_text("optimizer: adagrad\n")
    rc, err = cli(["train", "--config", path], capsys)
    assert rc == 2 and "optimizer='adagrad'" in err
    rc, err = cli(["train", "--config", tmp_path / "missing.yaml"], capsys)
    assert rc == 2 and f"config file not found: {tmp_path / 'missing.yaml'}" in err


def test_rotate_outside_0_to_180_degrees_is_refused_naming_the_value():
    for bad in (-1.0, 181.0):
        with pytest.raises(VocsegError, match=rf"rotate .*{bad}"):
            Config(rotate=bad).validate()
    assert Config(rotate=15.0).validate().rotate == 15.0


def test_config_names_a_shipped_config_or_lists_them(tmp_path, capsys, monkeypatch):
    """--config strong_cpu finds the shipped file from any folder; an unknown name lists the shipped ones;
    `vocseg config show` prints one as it is."""
    from helpers import cli
    from vocseg.config import config_dir, resolve_config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    assert (
        resolve_config_path("strong_cpu") == resolve_config_path("strong_cpu.yaml") == config_dir() / "strong_cpu.yaml"
    )
    assert load_config("strong_cpu").model == "transfer_unet"
    assert {"baseline", "strong", "strong_cpu"} <= set(shipped_configs())
    with pytest.raises(VocsegError, match=r"config file not found: nope \(or name a shipped config: augment, baseline"):
        load_config("nope")
    (tmp_path / "strong_cpu.yaml").write_text("model: fcn\n")  # a user's own file of that name wins
    assert load_config("strong_cpu.yaml").model == "fcn"
    from vocseg.cli import main

    capsys.readouterr()
    assert main(["config", "show", "strong"]) == 0
    assert capsys.readouterr().out == (config_dir() / "strong.yaml").read_text()
    rc, err = cli(["config", "show"], capsys)
    assert rc == 2 and "needs a NAME" in err
