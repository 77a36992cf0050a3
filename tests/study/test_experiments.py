"""The paper's experiments as data: configs, the paper's numbers and names, quick mode, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vocseg.config import FIELD_NAMES, config_dir, load_config
from vocseg.errors import VocsegError
from vocseg.models import list_models
from vocseg.models.transfer import weights_file_name
from vocseg.study import experiments as X


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache: ``$TORCH_HOME/hub/checkpoints``."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def test_every_config_loads_and_names_a_registered_model():
    folder = config_dir()
    paths = sorted(folder.glob("*.yaml"))
    assert {p.name for p in paths} >= {e.config for e in X.EXPERIMENTS} | {"modern.yaml"}
    for path in paths:
        cfg = load_config(path)
        assert cfg.model in list_models(), path
        raw = yaml.safe_load(path.read_text())
        assert set(raw) == FIELD_NAMES, f"{path.name} is not a complete Config: {FIELD_NAMES ^ set(raw)}"


def test_configs_follow_the_papers_recipes():
    cfg = {e.name: load_config(config_dir() / e.config) for e in X.EXPERIMENTS}
    for c in cfg.values():  # the protocol: early stopping on a holdout of train, native size, flips only
        assert c.val_holdout > 0 and c.image_size is None and c.scale_range is None and c.optimizer == "adam"
        assert c.monitor == "val_loss"
    b = cfg["baseline"]
    assert (b.model, b.lr, b.epochs, b.patience, b.scheduler, b.hflip, b.vflip, b.class_weighting) == (
        "fcn",
        0.001,
        13,
        3,
        "none",
        0.0,
        0.0,
        "none",
    )
    assert (cfg["cosine"].scheduler, cfg["cosine"].epochs, cfg["cosine"].patience) == ("cosine", 13, 3)
    a = cfg["augment"]
    assert (a.scheduler, a.hflip, a.vflip, a.epochs, a.patience) == ("cosine", 0.5, 0.5, 30, 9)
    w = cfg["weighted"]
    assert (w.class_weighting, w.lr, w.epochs, w.patience, w.hflip) == ("paper", 0.00185, 30, 9, 0.5)
    u = cfg["unpool"]
    assert (u.model, u.class_weighting, u.lr, u.epochs, u.patience) == ("unpool", "paper", 0.00185, 30, 9)
    t = cfg["transfer"]
    assert (t.model, t.lr, t.epochs, t.patience, t.class_weighting) == ("transfer", 0.00185, 50, 9, "paper")
    assert t.model_kwargs["encoder"] == "resnet34" and t.model_kwargs["pretrained"] is True
    n = cfg["unet"]
    assert (n.model, n.lr, n.epochs, n.patience, n.class_weighting) == ("unet", 0.001, 30, 9, "paper")
    assert n.model_kwargs.get("base_channels", 64) == 64


def test_strong_configs_hold_the_fields_recipe():
    """strong.yaml is mmsegmentation's voc12aug recipe; strong_cpu.yaml keeps its pieces at a CPU's size."""
    s = load_config(config_dir() / "strong.yaml")
    assert (s.train_split, s.val_split, s.val_holdout, s.image_size, list(s.scale_range)) == (
        "train_aug",
        "val",
        0.0,
        512,
        [0.5, 2.0],
    )
    assert (s.hflip, s.vflip, s.photometric, s.eval_batch_size, s.amp, s.aux_weight) == (0.5, 0.0, True, 8, "auto", 0.4)
    assert (s.monitor, s.patience) == ("last", None)  # the last iteration's val score, never a val-chosen one
    assert s.val_every == 3  # mmseg's val_interval 2000 iterations: ~3 epochs of train_aug
    assert (s.optimizer, s.lr, s.momentum, s.weight_decay, s.scheduler, s.poly_power, s.min_lr) == (
        "sgd",
        0.01,
        0.9,
        0.0005,
        "poly",
        0.9,
        0.0001,
    )
    assert (s.iters, s.batch_size, s.warmup_iters, s.model_kwargs) == (
        20000,
        16,
        1000,
        {"encoder": "resnet50", "aspp": True, "aux": True},  # mmseg's FCNHead aux on layer3, weight 0.4
    )
    c = load_config(config_dir() / "strong_cpu.yaml")
    assert (list(c.scale_range), c.hflip, c.vflip, c.eval_batch_size, c.amp) == ([0.5, 1.0], 0.5, 0.0, 1, "auto")
    assert (c.image_size, c.tta, c.tta_scales) == (128, "multiscale", [0.5, 0.75, 1.0])  # tested at its train scales
    assert (c.optimizer, c.scheduler, c.warmup_iters, c.budget, c.class_weighting) == (
        "adamw",
        "cosine",
        100,
        "15m",
        "paper",
    )
    assert c.model == "transfer_unet" and c.model_kwargs["pretrained"] is False  # runs offline as shipped
    assert c.model_kwargs["aux"] is True and c.aux_weight == 0.4  # strong.yaml's auxiliary head


def test_experiments_hold_the_papers_numbers_and_names():
    assert [e.name for e in X.EXPERIMENTS] == [
        "baseline",
        "cosine",
        "augment",
        "weighted",
        "unpool",
        "transfer",
        "unet",
    ]
    assert [e.table for e in X.EXPERIMENTS] == [5, 6, 7, 8, 9, 10, 11]
    assert [e.figure for e in X.EXPERIMENTS] == [2, 3, 4, 5, 6, 7, 8]
    assert [e.builds_on for e in X.EXPERIMENTS] == [
        None,
        "baseline",
        "cosine",
        "augment",
        "weighted",
        "weighted",
        "weighted",
    ]
    assert (X.get_experiment("unet").title, X.get_experiment("transfer").title, X.get_experiment("cosine").title) == (
        "U-Net",
        "Transfer learning (ResNet34)",
        "+ cosine annealing",
    )
    base = X.get_experiment("baseline")  # Table 5
    assert (base.paper_loss, base.paper_iou, base.paper_pixel_accuracy) == (
        1.227619285168855,
        0.063400418619098873,
        0.7300453704336415,
    )
    tl = X.get_experiment("transfer")  # Table 10
    assert (tl.paper_loss, tl.paper_iou, tl.paper_pixel_accuracy) == (
        1.5542771544145502,
        0.11469616238837657,
        0.7439139420571534,
    )
    unet = X.get_experiment("unet")  # Table 11
    assert (unet.paper_loss, unet.paper_iou, unet.paper_pixel_accuracy) == (
        1.8510422473368437,
        0.0866359447169563,
        0.7346816464610721,
    )
    assert X.get_experiment("unpool").paper_loss == pytest.approx(1.600414732228155)  # Table 9


def test_unknown_experiment_names_list_the_valid_ones():
    with pytest.raises(VocsegError, match=r"'nope'.*valid names: baseline, cosine, augment"):
        X.select_experiments(["baseline", "nope"])
    with pytest.raises(VocsegError, match=r"unknown experiment 'x'; valid names: baseline"):
        X.get_experiment("x")
    assert [e.name for e in X.select_experiments(["unet", "baseline"])] == ["baseline", "unet"]  # the paper's order


@pytest.mark.parametrize("cached", [False, True])
def test_quick_transfer_trains_from_scratch_only_without_cached_weights(tmp_path, torch_home, cached):
    if cached:
        torch_home.mkdir(parents=True)
        (torch_home / weights_file_name("resnet34")).write_bytes(b"")
    cfg, applied, notes = X.experiment_config(X.get_experiment("transfer"), tmp_path, quick=True)
    assert cfg.model_kwargs["pretrained"] is cached
    assert cfg.out == str(tmp_path / "runs" / "transfer") and cfg.data_root is None
    assert cfg.epochs == X.quick_overrides(X.get_experiment("transfer"))["epochs"] < 50
    assert cfg.image_size == X.QUICK["image_size"]
    assert ("from scratch" in " ".join(notes)) is not cached
    full, applied_full, _ = X.experiment_config(X.get_experiment("transfer"), tmp_path, quick=False)
    assert full.model_kwargs["pretrained"] is True and full.epochs == 50 and applied_full == {}


def test_pretrained_weights_cached_asks_the_registry_not_the_model_name(tmp_path, torch_home):
    assert X.pretrained_weights_cached("fcn", {}) is None  # never fetches anything
    assert X.pretrained_weights_cached("transfer", {"pretrained": False}) is None  # the offline kwargs
    assert X.pretrained_weights_cached("transfer", {"weights": str(tmp_path / "r.pth")}) is None  # a local file
    assert X.pretrained_weights_cached("transfer", {}) is False  # default: pretrained, and the cache is empty
    torch_home.mkdir(parents=True)
    (torch_home / weights_file_name("resnet18")).write_bytes(b"")
    assert X.pretrained_weights_cached("transfer", {"encoder": "resnet18"}) is True
    assert X.pretrained_weights_cached("transfer", {"encoder": "resnet34"}) is False


def test_seed_index_offsets_the_seed_and_names_the_folder(tmp_path):
    exp = X.get_experiment("cosine")
    first, _, _ = X.experiment_config(exp, tmp_path, seed_index=0)
    third, _, _ = X.experiment_config(exp, tmp_path, seed_index=2)
    assert first.out == str(tmp_path / "runs" / "cosine") and third.out == str(tmp_path / "runs" / "cosine-seed2")
    assert third.seed == first.seed + 2
    assert X.recipe(first.to_dict(), with_seed=False) == X.recipe(third.to_dict(), with_seed=False)
    assert X.recipe(first.to_dict()) != X.recipe(third.to_dict())
