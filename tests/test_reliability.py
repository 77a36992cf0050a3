"""Nothing lost: exact resume after SIGKILL, atomic checkpoint writes, safe loading and extraction,
non-finite losses, and clear errors (naming the file or value) for bad input.

docs/reliability.md lists every fault tried here, what vocseg does about it, and the test that checks it.
Training runs use a 122k-parameter U-Net (base_channels=4) on the 12-image ``tiny_voc`` set, one torch
thread, CPU, deterministic mode, no AMP: an epoch takes a fraction of a second.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vocseg
import vocseg.data.download as download
import vocseg.engine as engine
import vocseg.rundir as rundir_mod
from vocseg.checkpoint import load_checkpoint, save_checkpoint
from vocseg.cli import main
from vocseg.config import Config, load_config
from vocseg.data.classes import IGNORE_INDEX
from vocseg.data.download import download_voc, safe_extract, voc_archive_info
from vocseg.data.voc import MAX_IMAGE_PIXELS, VOCSegmentation, load_image, load_mask, read_split
from vocseg.errors import VocsegError
from vocseg.models import create_model, list_models
from vocseg.train import train

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")

SRC = Path(vocseg.__file__).resolve().parents[1]
EPOCHS = 3
TRAIN_ARGS = [
    "--model", "unet", "--model-arg", "base_channels=4", "--batch-size", "4", "--image-size", "48",
    "--device", "cpu", "--amp", "none", "--deterministic", "--seed", "0", "--no-progress",
]


def tiny_config(data_root: Path, out: Path, **changes: Any) -> Config:
    """The Python-API twin of TRAIN_ARGS."""
    base = dict(
        model="unet", model_kwargs={"base_channels": 4}, data_root=str(data_root), out=str(out), epochs=2,
        batch_size=4, image_size=48, num_workers=0, device="cpu", amp="none", deterministic=True, seed=0,
    )
    return Config(**{**base, **changes}).validate()


def quiet_train(cfg: Config, **kwargs: Any):
    return train(cfg, progress=False, log=lambda *a, **k: None, **kwargs)


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run ``vocseg ARGV`` in-process; return (exit code, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def snapshot(folder: Path) -> dict[str, Any]:
    """Every entry under ``folder`` (symlinks not followed): file bytes, link targets, directories."""
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_dir():
            out[key] = "dir"
        else:
            out[key] = p.read_bytes()
    return out


# ============================================================================= 1. resume after SIGKILL


def _subprocess_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VOCSEG_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def _start_vocseg(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "vocseg", *map(str, args)], env=env, stdout=f, stderr=subprocess.STDOUT)


def _history(path: Path) -> list[dict[str, str]]:
    """history.csv rows; [] while the file is missing or half-written."""
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except (OSError, csv.Error):
        return []
    return [r for r in rows if r.get("seconds") not in (None, "")]


def _kill_during_epoch_2(proc: subprocess.Popen, run: Path, timeout: float = 120.0) -> str | None:
    """Wait until epoch 1 is saved (history.csv is written after last.pt), sleep a third of epoch 1's
    duration so the kill lands inside epoch 2, then SIGKILL the process from outside.
    Returns None, or what went wrong (this runs in a thread, where pytest.fail would be lost)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return f"run B ended (rc {proc.returncode}) before it could be killed"
        rows = _history(run / "history.csv")
        if rows:
            break
        if time.monotonic() > deadline:
            return f"run B saved no epoch within {timeout}s"
        time.sleep(0.005)
    time.sleep(float(rows[0]["seconds"]) / 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        return f"run B finished (rc {proc.returncode}) before the kill"
    return None


def _assert_same(a: Any, b: Any, where: str) -> None:
    """Exact equality of nested checkpoint data: tensors bit for bit, floats exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _without_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_resume_after_sigkill_mid_epoch_is_exact(
    workers: int, tiny_voc: Path, tmp_path: Path, vocseg_cache: Path, capsys
) -> None:
    """Run B (``python -m vocseg train`` in a subprocess) is SIGKILLed from outside during epoch 2, then
    continued with ``vocseg train --resume``; run A trains the same 3 epochs without a break (in this
    process, while B runs). last.pt, best.pt, history and metrics must come out identical."""
    # lr 0.1 + val_miou: the tiny model soon predicts all background, so mIoU stops improving and the
    # early-stopping state (best epoch, bad epochs) differs from a fresh one: a resume must restore it.
    args = [*TRAIN_ARGS, "--data-root", tiny_voc, "--epochs", EPOCHS, "--workers", workers, "--lr", 0.1,
            "--monitor", "val_miou", "--patience", 5]
    run_a, run_b, log_b = tmp_path / "A", tmp_path / "B", tmp_path / "B.log"
    proc_b = _start_vocseg(["train", *args, "--out", run_b], _subprocess_env(vocseg_cache), log_b)
    problem: list[str | None] = []
    killer = threading.Thread(target=lambda: problem.append(_kill_during_epoch_2(proc_b, run_b)), daemon=True)
    killer.start()
    try:
        rc_a, err_a = cli(["train", *args, "--out", run_a], capsys)
        killer.join(timeout=180)
    finally:
        if proc_b.poll() is None:
            proc_b.kill()
            proc_b.wait()
    assert rc_a == 0, err_a
    assert problem == [None], f"{problem}\n{log_b.read_text()}"

    crashed = load_checkpoint(run_b / "last.pt")
    assert 1 <= crashed["epoch"] < EPOCHS and len(crashed["history"]) == crashed["epoch"]
    assert not (run_b / "metrics.json").exists()
    # Everything an exact resume needs is in last.pt.
    assert {"model", "optimizer", "scheduler", "scaler", "early_stopping", "epoch", "history", "rng"} <= set(crashed)
    assert {"python", "numpy", "torch"} <= set(crashed["rng"])

    capsys.readouterr()
    assert main(["train", "--resume", str(run_b), "--no-progress"]) == 0
    assert f"resuming {run_b} after epoch {crashed['epoch']}" in capsys.readouterr().out

    last_a, last_b = load_checkpoint(run_a / "last.pt"), load_checkpoint(run_b / "last.pt")
    assert last_a["epoch"] == last_b["epoch"] == EPOCHS
    assert set(last_a) == set(last_b)
    for key in last_a:
        if key == "config":  # identical but for the run folder
            assert {**last_a[key], "out": None} == {**last_b[key], "out": None}
        elif key == "history":
            _assert_same(_without_seconds(last_a[key]), _without_seconds(last_b[key]), key)
        else:  # model weights, optimizer moments, scheduler, scaler, early stopping, every RNG state
            _assert_same(last_a[key], last_b[key], key)
    best_a, best_b = load_checkpoint(run_a / "best.pt"), load_checkpoint(run_b / "best.pt")
    assert best_a["epoch"] == best_b["epoch"]
    _assert_same(best_a["model"], best_b["model"], "best.model")

    hist_a, hist_b = _history(run_a / "history.csv"), _history(run_b / "history.csv")
    assert len(hist_a) == EPOCHS
    assert _without_seconds(hist_a) == _without_seconds(hist_b)  # train/val losses, mIoU, lr: same text
    metrics_a, metrics_b = (json.loads((r / "metrics.json").read_text()) for r in (run_a, run_b))
    metrics_a.pop("seconds_per_epoch"), metrics_b.pop("seconds_per_epoch")
    assert metrics_a == metrics_b


def test_resume_needs_last_pt(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    rc, err = cli(["train", "--resume", tmp_path / "run"], capsys)
    assert rc == 2 and f"cannot resume: {tmp_path / 'run' / 'last.pt'} not found" in err


def test_resume_and_overwrite_contradict(tmp_path: Path, capsys) -> None:
    rc, err = cli(["train", "--resume", tmp_path, "--overwrite"], capsys)
    assert rc == 2 and "--resume and --overwrite contradict each other" in err


# ============================================================================= 2. atomic checkpoint writes

_SAVE_CHILD = r"""
import os, signal, sys, time
import torch
import vocseg.checkpoint as ck

path, mode = sys.argv[1], sys.argv[2]
ck.save_checkpoint({"model": {"w": torch.arange(10.0)}, "epoch": 1}, path)

if mode == "mid-write":  # write in 1 MiB pieces, announce the first, then crawl: killed from outside
    class Slow:
        def __init__(self, f): self.f = f
        def __enter__(self): return self
        def __exit__(self, *exc): return self.f.__exit__(*exc)
        def __getattr__(self, name): return getattr(self.f, name)
        def write(self, data):
            view = memoryview(data)
            for i in range(0, len(view), 1 << 20):
                self.f.write(view[i:i + (1 << 20)])
                self.f.flush()
                if i == 0:
                    print("WRITING", flush=True)
                time.sleep(0.2)
            return len(data)
    ck.open = lambda *a, **k: Slow(open(*a, **k))
else:  # "before-rename": the new file is complete and fsynced; die just before the rename
    os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

ck.save_checkpoint({"model": {"w": torch.ones(4_000_000)}, "epoch": 2}, path)
print("SAVED", flush=True)
"""


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_kill_during_checkpoint_save_keeps_previous_checkpoint(mode: str, tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVE_CHILD, str(path), mode], env=_subprocess_env(tmp_path / "cache"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        if mode == "mid-write":
            line = proc.stdout.readline()
            assert line == b"WRITING\n", (line, proc.stderr.read())
            proc.send_signal(signal.SIGKILL)  # from outside, while the 16 MB payload is half written
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    torn = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.tmp")]
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # the interrupted write went to a side file
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.arange(10.0))
    # The next save still works and replaces the file whole.
    save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 3}, path)
    assert load_checkpoint(path)["epoch"] == 3


def test_torn_checkpoint_is_refused_naming_the_file(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.randn(1000)}, "epoch": 1}, good)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VocsegError, match="not a readable checkpoint") as e:
        load_checkpoint(run / "last.pt")
    assert str(run / "last.pt") in str(e.value)
    rc, err = cli(["train", "--resume", run], capsys)
    assert rc == 2 and str(run / "last.pt") in err and "Traceback" not in err


def test_missing_or_foreign_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(VocsegError, match="checkpoint not found") as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(e.value)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(VocsegError, match="no 'model' entry") as e:
        load_checkpoint(foreign)
    assert str(foreign) in str(e.value)


# ============================================================================= 3. safe loading and extraction


class _ShellPayload:
    """Pickles as ``os.system("touch MARKER")``: runs a shell command when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class _ExecPayload(_ShellPayload):
    """Pickles as ``exec(...)`` writing MARKER from Python."""

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("payload", [_ShellPayload, _ExecPayload], ids=["os.system", "exec"])
def test_checkpoint_with_pickle_payload_is_refused_and_never_runs(payload, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "payload-ran"
    evil = {"model": {"w": torch.zeros(2)}, "epoch": 1, "config": {}, "extra": payload(marker)}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(evil, run / "last.pt")

    with pytest.raises(VocsegError, match="refused to load") as e:
        load_checkpoint(run / "last.pt")
    assert str(run / "last.pt") in str(e.value)
    rc, err = cli(["evaluate", run / "last.pt", "--device", "cpu"], capsys)
    assert rc == 2 and "refused to load" in err
    rc, err = cli(["train", "--resume", run], capsys)
    assert rc == 2 and "refused to load" in err
    assert not marker.exists()

    # The payload is live: an unsafe torch.load would have run it.
    torch.load(run / "last.pt", weights_only=False)
    assert marker.exists()


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


@pytest.mark.parametrize(
    "case",
    ["dotdot", "absolute", "symlink-outside", "write-through-symlink", "absolute-symlink", "hardlink-outside", "device"],
)
def test_safe_extract_refuses_escaping_members_and_leaves_everything_as_before(case: str, tmp_path: Path) -> None:
    work = tmp_path / "work"  # everything under here must be unchanged afterwards
    dest = work / "dest"
    (dest / "VOCdevkit").mkdir(parents=True)
    (dest / "VOCdevkit" / "keep.txt").write_text("already here")
    (work / "outside.txt").write_text("outside")
    ok = _file("VOCdevkit/VOC2012/JPEGImages/ok.jpg")  # a harmless member first: it must not land either
    members = {
        "dotdot": [ok, _file("../evil.txt")],
        "absolute": [ok, _file(str(work / "abs-evil.txt"))],
        "symlink-outside": [ok, _link("VOCdevkit/escape", "../../outside.txt")],
        "write-through-symlink": [ok, _link("escape", ".."), _file("escape/evil.txt")],
        "absolute-symlink": [ok, _link("VOCdevkit/passwd", "/etc/passwd")],
        "hardlink-outside": [ok, _link("VOCdevkit/hard", "../outside.txt", tarfile.LNKTYPE)],
        "device": [ok, _device("VOCdevkit/null")],
    }[case]
    archive = _tar(tmp_path / f"{case}.tar", members)
    before = snapshot(work)
    with pytest.raises(VocsegError, match="refused to extract") as e:
        safe_extract(archive, dest)
    assert str(archive) in str(e.value)
    assert snapshot(work) == before
    assert not (tmp_path / "evil.txt").exists() and not Path("/abs-evil.txt").exists()


def test_safe_extract_extracts_a_clean_archive_without_overwriting(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    (dest / "VOCdevkit" / "VOC2012" / "mine.txt").write_text("mine")
    archive = _tar(
        tmp_path / "clean.tar",
        [_file("VOCdevkit/VOC2012/mine.txt", b"theirs"), _file("VOCdevkit/VOC2012/new.txt", b"new"),
         _link("VOCdevkit/VOC2012/alias.txt", "new.txt")],
    )
    safe_extract(archive, dest)
    voc = dest / "VOCdevkit" / "VOC2012"
    assert (voc / "mine.txt").read_text() == "mine" and (voc / "new.txt").read_text() == "new"
    assert (voc / "alias.txt").read_text() == "new"
    assert sorted(p.name for p in dest.iterdir()) == ["VOCdevkit"]  # no temporary folder left behind


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: connecting fails at once, and a download attempt fails the test."""

    def no_network(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(download, "download_url", lambda *a, **k: pytest.fail("download_url must not be called"))


def test_download_offline_fails_at_once_naming_archive_url_and_root(offline, tmp_path: Path, capsys) -> None:
    info = voc_archive_info()
    root = tmp_path / "datasets"
    t0 = time.monotonic()
    with pytest.raises(VocsegError) as e:
        download_voc(root)
    assert time.monotonic() - t0 < 2
    msg = str(e.value)
    for part in (info["filename"], info["url"], info["md5"], str(root / info["filename"]), "no network"):
        assert part in msg
    assert not (root / info["filename"]).exists()
    rc, err = cli(["download", "--root", root], capsys)
    assert rc == 2 and err.startswith("vocseg: error: cannot download VOC") and info["url"] in err


def test_download_refuses_a_preplaced_archive_with_a_wrong_md5(offline, tmp_path: Path, capsys) -> None:
    info = voc_archive_info()
    archive = tmp_path / info["filename"]
    archive.write_bytes(b"half a download")
    with pytest.raises(VocsegError, match="md5") as e:
        download_voc(tmp_path)
    assert str(archive) in str(e.value) and info["md5"] in str(e.value)
    assert archive.read_bytes() == b"half a download"  # left for the user to inspect
    assert sorted(p.name for p in tmp_path.iterdir()) == [info["filename"]]  # nothing extracted
    rc, err = cli(["download", "--root", tmp_path], capsys)
    assert rc == 2 and str(archive) in err


def test_download_extracts_a_verified_preplaced_archive(offline, tiny_voc: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    info = voc_archive_info()
    root = tmp_path / "datasets"
    root.mkdir()
    archive = root / info["filename"]
    with tarfile.open(archive, "w") as tar:
        tar.add(tiny_voc / "VOCdevkit", arcname="VOCdevkit")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(download, "voc_archive_info", lambda year="2012": {**info, "md5": md5})

    voc = download_voc(root)
    assert voc == root / "VOCdevkit" / "VOC2012"
    ds = VOCSegmentation(root, "train")
    assert len(ds) == 12 and ds.voc_root == voc
    image, mask = ds[0]
    assert image.shape[-2:] == mask.shape
    # Already extracted: a second call (or the CLI) just finds it, even with the archive gone.
    archive.unlink()
    assert download_voc(root) == voc
    capsys.readouterr()
    assert main(["download", "--root", str(root)]) == 0
    assert f"VOC 2012 ready at {voc}" in capsys.readouterr().out


# ============================================================================= 4. non-finite loss


class _NaNGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite), NaN backward (the weights do not)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison_training_step(monkeypatch, good_steps: int, how: str) -> None:
    """Make training step ``good_steps + 1`` (counting across epochs) non-finite. Evaluation runs under
    inference mode, so it is recognised by grad mode being off and left alone."""
    real = engine.weighted_ce_sums
    calls = {"n": 0}

    def poisoned(logits, target, weight):
        total, w = real(logits, target, weight)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > good_steps:
                total = total * float("nan") if how == "loss" else _NaNGrad.apply(total)
        return total, w

    monkeypatch.setattr(engine, "weighted_ce_sums", poisoned)


def _record_saves(monkeypatch) -> list[tuple[str, int, dict[str, torch.Tensor]]]:
    saves: list[tuple[str, int, dict[str, torch.Tensor]]] = []
    real = rundir_mod.save_checkpoint

    def recording(state, path):
        saves.append((Path(path).name, state["epoch"], {k: v.clone() for k, v in state["model"].items()}))
        real(state, path)

    monkeypatch.setattr(rundir_mod, "save_checkpoint", recording)
    return saves


def _assert_still_epoch_1(run: Path, saves) -> None:
    assert sorted((name, epoch) for name, epoch, _ in saves) == [("best.pt", 1), ("last.pt", 1)]
    epoch1 = saves[0][2]
    for name in ("last.pt", "best.pt"):
        ckpt = load_checkpoint(run / name)
        assert ckpt["epoch"] == 1
        for key, value in ckpt["model"].items():
            assert torch.isfinite(value.float()).all(), f"{name}: {key} is not finite"
            assert torch.equal(value, epoch1[key]), f"{name}: {key} is not epoch 1's"
    assert len(load_checkpoint(run / "last.pt")["history"]) == 1
    assert len(_history(run / "history.csv")) == 1
    assert not (run / "metrics.json").exists()


# 12 training images, batch 4, drop_last: 3 steps per epoch. 4 good steps -> epoch 2, step 2 is bad.
@pytest.mark.parametrize("via", ["api", "cli"])
def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_good_checkpoints(
    via: str, tiny_voc: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    _poison_training_step(monkeypatch, good_steps=4, how="loss")
    saves = _record_saves(monkeypatch)
    run = tmp_path / "run"
    if via == "api":
        with pytest.raises(VocsegError) as e:
            quiet_train(tiny_config(tiny_voc, run, epochs=3))
        msg = str(e.value)
    else:
        rc, msg = cli(["train", *TRAIN_ARGS, "--data-root", tiny_voc, "--out", run, "--epochs", 3, "--workers", 0], capsys)
        assert rc == 2 and msg.startswith("vocseg: error: non-finite training loss")
    assert "epoch 2" in msg and "step 2" in msg and "nan" in msg
    _assert_still_epoch_1(run, saves)


def test_non_finite_weights_after_a_finite_loss_are_not_saved(tiny_voc: Path, tmp_path: Path, monkeypatch) -> None:
    """The last step of epoch 2 has a finite loss but NaN gradients: the epoch ends with NaN weights
    (and a NaN validation loss), which must not replace last.pt."""
    _poison_training_step(monkeypatch, good_steps=5, how="grad")
    saves = _record_saves(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match="epoch 2") as e:
        quiet_train(tiny_config(tiny_voc, run, epochs=3))
    assert "non-finite" in str(e.value)
    _assert_still_epoch_1(run, saves)


def test_non_finite_loss_in_the_first_epoch_writes_no_checkpoint(tiny_voc: Path, tmp_path: Path, monkeypatch) -> None:
    _poison_training_step(monkeypatch, good_steps=0, how="loss")
    run = tmp_path / "run"
    with pytest.raises(VocsegError, match=r"epoch 1, step 1"):
        quiet_train(tiny_config(tiny_voc, run))
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


# ============================================================================= 5. bad input


def _png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of zeros: tens of KB on disk, ``width * height`` pixels once decoded."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _good_samples(n: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    samples = {}
    for i in range(n):
        h, w = 33 + i, 45 - i
        mask = np.zeros((h, w), np.uint8)
        mask[5:20, 6:30] = 1 + i
        mask[4, 6:30] = IGNORE_INDEX
        samples[f"img_{i}"] = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8), mask)
    return samples


def _corrupt(case: str, voc: Path) -> tuple[str, Path]:
    """Break image/mask ``img_2`` of a good tree; return (expected message part, the file it must name)."""
    image, mask = voc / "JPEGImages" / "img_2.jpg", voc / "SegmentationClass" / "img_2.png"
    if case == "truncated-jpeg":
        image.write_bytes(image.read_bytes()[: image.stat().st_size * 2 // 3])
        return "cannot be decoded (truncated or corrupt?)", image
    if case == "zero-byte-jpeg":
        image.write_bytes(b"")
        return "empty (zero-byte) file", image
    if case == "not-an-image":
        image.write_text("<html>404 not found</html>")
        return "cannot be decoded", image
    if case == "missing-mask":
        mask.unlink()
        return "not found", mask
    if case == "missing-image":
        image.unlink()
        return "not found", image
    if case == "size-mismatch":
        Image.fromarray(np.zeros((20, 21), np.uint8)).save(mask)
        return "but its mask", mask
    if case == "mask-values":
        bad = np.array(Image.open(mask))
        bad[0, :3] = (21, 30, 254)
        Image.fromarray(bad).save(mask)
        return "values [21, 30, 254] outside 0..20 and 255", mask
    if case == "decompression-bomb":
        _png_bomb(image, 20_000, 20_000)  # 400 M pixels, > 2 x MAX_IMAGE_PIXELS: PIL's own error
        return "too large to decode safely", image
    if case == "decompression-bomb-warning-size":
        _png_bomb(image, 10_000, 10_000)  # 100 M pixels: PIL would only warn; vocseg refuses too
        return "too large to decode safely", image
    raise AssertionError(case)


BAD_INPUTS = [
    "truncated-jpeg", "zero-byte-jpeg", "not-an-image", "missing-mask", "missing-image", "size-mismatch",
    "mask-values", "decompression-bomb", "decompression-bomb-warning-size",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_sample_error_names_the_file(case: str, make_voc, tmp_path: Path, capsys) -> None:
    samples = _good_samples()
    voc = make_voc(samples, {"train": list(samples), "val": list(samples)[:2]})
    expected, culprit = _corrupt(case, voc)
    # The reader, on the broken item:
    ds = VOCSegmentation(voc, "train")
    with pytest.raises(VocsegError) as e:
        if case.startswith("missing"):
            ds.check()
        else:
            ds[2]
    assert expected in str(e.value) and str(culprit) in str(e.value)
    assert ds[1][0].shape[0] == 3  # the good items still load
    # Training stops before the first step, naming the file, with no traceback.
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", voc.parent.parent, "--out", tmp_path / "run", "--epochs", 1, "--workers", 0], capsys)
    assert rc == 2 and str(culprit) in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    """load_image/load_mask refuse on the header's size alone (well under a second, no 400 MB buffer)."""
    bomb = _png_bomb(tmp_path / "bomb.png", 20_000, 20_000)
    assert bomb.stat().st_size < 200_000
    t0 = time.monotonic()
    for loader in (load_image, load_mask):
        with pytest.raises(VocsegError, match=f"over {MAX_IMAGE_PIXELS} pixels") as e:
            loader(bomb)
        assert str(bomb) in str(e.value)
    assert time.monotonic() - t0 < 1.0


def _rgba(path: Path) -> np.ndarray:
    arr = np.zeros((6, 7, 4), np.uint8)
    arr[..., :3] = (200, 100, 50)
    arr[:3, ..., 3] = 255  # top half opaque, bottom half transparent
    Image.fromarray(arr).save(path)
    want = np.zeros((6, 7, 3), np.uint8)
    want[:3] = (200, 100, 50)  # transparent pixels become black, not their hidden colour
    return want


def _i16(path: Path) -> np.ndarray:
    Image.fromarray(np.array([[0, 65535, 32768], [1000, 20000, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    return np.repeat(np.array([[0, 255, 128], [4, 78, 255]], np.uint8)[..., None], 3, axis=2)  # scaled, not clipped


def _gray(path: Path) -> np.ndarray:
    Image.new("L", (9, 5), 77).save(path, quality=95)
    return np.full((5, 9, 3), 77, np.uint8)


def _cmyk(path: Path) -> np.ndarray:
    Image.new("CMYK", (9, 5), (0, 255, 255, 0)).save(path, quality=95)
    return np.broadcast_to(np.array([255, 0, 0], np.uint8), (5, 9, 3))


def _palette(path: Path) -> np.ndarray:
    img = Image.new("P", (4, 3), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(path)
    return np.broadcast_to(np.array([10, 200, 30], np.uint8), (3, 4, 3))


@pytest.mark.parametrize(
    "make,name,mode",
    [(_rgba, "rgba.png", "RGBA"), (_i16, "i16.png", "I;16"), (_gray, "gray.jpg", "L"), (_cmyk, "cmyk.jpg", "CMYK"),
     (_palette, "palette.png", "P")],
    ids=["rgba", "16-bit", "grayscale-jpeg", "cmyk-jpeg", "palette"],
)
def test_other_image_modes_are_converted_to_rgb(make, name: str, mode: str, tmp_path: Path, make_voc) -> None:
    path = tmp_path / name
    want = make(path)
    assert Image.open(path).mode == mode
    got = load_image(path)
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 3  # JPEG rounding at most
    # And through the dataset (VOC names images .jpg whatever their format: PIL reads the content).
    mask = np.zeros(want.shape[:2], np.uint8)
    voc = make_voc({"odd": (np.zeros(want.shape, np.uint8), mask)})
    (voc / "JPEGImages" / "odd.jpg").write_bytes(path.read_bytes())  # replace the placeholder
    image, _ = VOCSegmentation(voc, "train")[0]
    assert tuple(image.shape) == (3, *want.shape[:2])


def test_missing_and_empty_split_files_name_the_file(make_voc, tmp_path: Path, capsys) -> None:
    samples = _good_samples(2)
    voc = make_voc(samples, {"train": list(samples)})
    with pytest.raises(VocsegError, match="split file not found") as e:
        read_split(voc, "val")
    assert str(voc / "ImageSets" / "Segmentation" / "val.txt") in str(e.value)
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", voc, "--out", tmp_path / "run1", "--epochs", 1], capsys)
    assert rc == 2 and "split file not found" in err and str(voc / "ImageSets" / "Segmentation" / "val.txt") in err

    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n  \n")
    with pytest.raises(VocsegError, match="split file is empty"):
        read_split(voc, "val")
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", voc, "--out", tmp_path / "run2", "--epochs", 1], capsys)
    assert rc == 2 and f"split file is empty: {voc / 'ImageSets' / 'Segmentation' / 'val.txt'}" in err


def test_unknown_model_lists_the_valid_ones(tiny_voc: Path, tmp_path: Path, capsys) -> None:
    valid = ", ".join(list_models())
    assert "fcn" in valid and "unet" in valid
    with pytest.raises(VocsegError, match=f"unknown model 'segformer'; valid names: {valid}"):
        create_model("segformer")
    with pytest.raises(VocsegError, match="unknown model 'segformer'"):
        quiet_train(tiny_config(tiny_voc, tmp_path / "api", model="segformer", model_kwargs={}))
    rc, err = cli(["train", "--model", "segformer", "--data-root", tiny_voc, "--out", tmp_path / "cli", "--device", "cpu"], capsys)
    assert rc == 2 and f"unknown model 'segformer'; valid names: {valid}" in err
    rc, err = cli(["train", *TRAIN_ARGS, "--model-arg", "depth=3", "--data-root", tiny_voc, "--out", tmp_path / "arg"], capsys)
    assert rc == 2 and "has no argument(s) depth" in err and "base_channels" in err


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


def test_existing_run_is_refused_unless_resume_or_overwrite(tiny_voc: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "history.csv", "last.pt", "best.pt", "metrics.json"):
        (run / name).write_bytes(os.urandom(64))
    (run / "notes.txt").write_text("my notes")
    before = snapshot(run)
    argv = ["train", *TRAIN_ARGS, "--data-root", tiny_voc, "--out", run, "--epochs", 1, "--workers", 0]

    rc, err = cli(argv, capsys)
    assert rc == 2 and f"{run} already holds a run" in err
    assert "--resume" in err and "--overwrite" in err and "last.pt" in err
    with pytest.raises(VocsegError, match="already holds a run"):
        quiet_train(tiny_config(tiny_voc, run))
    assert snapshot(run) == before  # not a byte changed, nothing added

    rc, err = cli([*argv, "--overwrite"], capsys)
    assert rc == 0, err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # replaced by a real run
    assert (run / "notes.txt").read_text() == "my notes"  # files that are not part of a run are kept


def test_wrong_dataset_root_names_the_path(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    rc, err = cli(["train", *TRAIN_ARGS, "--data-root", missing, "--out", tmp_path / "run", "--epochs", 1], capsys)
    assert rc == 2 and f"dataset root does not exist: {missing}" in err
    not_voc = tmp_path / "photos"
    (not_voc / "JPEGImages").mkdir(parents=True)  # half a VOC tree
    rc, err = cli(["stats", "--data-root", not_voc], capsys)
    assert rc == 2 and f"no VOC tree under {not_voc}" in err
    with pytest.raises(VocsegError, match="dataset root does not exist"):
        VOCSegmentation(missing)
