"""vocseg.checkpoint: atomic writes (a save killed part-way keeps the previous checkpoint), and safe loading:
torn, missing and foreign files are refused naming the file, and a pickle payload is refused and never runs.

docs/reliability.md lists every fault tried here, what vocseg does about it, and the test that checks it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import cli, subprocess_env
from vocseg.checkpoint import checkpoint_metadata, load_checkpoint, load_model, model_metadata, save_checkpoint
from vocseg.cli import main
from vocseg.config import Config
from vocseg.errors import VocsegError
from vocseg.models import create_model

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")

# ----------------------------------------------------------------------------- atomic writes

_SAVE_CHILD = r"""
import os, signal, sys, time
import torch
import vocseg.checkpoint as ck
import vocseg.runtime.files as files

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
    files.open = lambda *a, **k: Slow(open(*a, **k))
else:  # "before-rename": the new file is complete and fsynced; die just before the rename
    os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)

ck.save_checkpoint({"model": {"w": torch.ones(4_000_000)}, "epoch": 2}, path)
print("SAVED", flush=True)
"""


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_kill_during_checkpoint_save_keeps_previous_checkpoint(mode: str, tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVE_CHILD, str(path), mode],
        env=subprocess_env(tmp_path / "cache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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


# ----------------------------------------------------------------------------- safe loading


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


# ----------------------------------------------------------------------------- one contract, old files


OLD_RUN = Path(__file__).parent / "fixtures" / "run-0.1.0-3b68f4e"  # written by vocseg before the layers change


def _old_run_copy(tmp_path: Path, tiny_voc: Path) -> Path:
    """The old run folder, with its data root pointed at this machine's copy of the same tiny data."""
    run = tmp_path / "old-run"
    shutil.copytree(OLD_RUN, run)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        ckpt["config"]["data_root"] = str(tiny_voc)
        torch.save(ckpt, run / name)
    return run


def test_checkpoint_metadata_is_what_load_model_needs() -> None:
    cfg = Config(model="fcn", num_classes=3, class_names=["bg", "a", "b"])
    meta = checkpoint_metadata(cfg, ["bg", "a", "b"], [0.5] * 3, [0.25] * 3, torch.tensor([0.1, 0.2, 0.7]))
    state = create_model("fcn", num_classes=3).state_dict()
    model, ckpt = load_model({**meta, "model": state})
    assert not model.training and model_metadata(ckpt)["class_names"] == ["bg", "a", "b"]
    assert torch.equal(model.state_dict()["head.weight"] if "head.weight" in state else next(iter(model.state_dict().values())),
                       state["head.weight"] if "head.weight" in state else next(iter(state.values())))  # fmt: skip


def test_load_model_names_the_file_and_what_does_not_fit(tmp_path: Path) -> None:
    ckpt = torch.load(OLD_RUN / "best.pt", weights_only=True)
    ckpt["num_classes"] = 5  # the head in the weights has 21 classes
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(VocsegError, match=r"bad\.pt: weights do not fit model 'unet'"):
        load_model(tmp_path / "bad.pt")


def test_a_checkpoint_written_before_the_change_loads_evaluates_predicts_exports_and_resumes(
    tmp_path: Path, tiny_voc: Path, capsys
) -> None:
    run = _old_run_copy(tmp_path, tiny_voc)
    model, ckpt = load_model(run / "best.pt")
    assert ckpt["model_name"] == "unet" and not model.training and "scheduler" in torch.load(run / "last.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run / "best.pt"), "--device", "cpu", "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["mean_iou"] <= 1.0
    images = tiny_voc / "VOCdevkit" / "VOC2012" / "JPEGImages"
    rc, _ = cli(
        ["predict", run / "best.pt", next(images.iterdir()), "--out", tmp_path / "masks", "--device", "cpu"], capsys
    )
    assert rc == 0 and len(list((tmp_path / "masks").glob("*_overlay.png"))) == 1
    rc, _ = cli(["export", run / "best.pt", "--format", "torchscript", "--out", tmp_path / "m.pt"], capsys)
    assert rc == 0 and (tmp_path / "m.pt").is_file()
    # The old last.pt holds a "scheduler" entry the one LR mechanism ignores: the cosine continues.
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert f"resuming {run} after epoch 1" in capsys.readouterr().out
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


def test_resume_with_a_truncated_last_pt_names_what_is_intact_and_the_next_step(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    rc, err = cli(["train", "--resume", run], capsys)
    assert rc == 2 and "not a readable checkpoint" in err and str(run / "last.pt") in err
    assert f"{run / 'best.pt'} (epoch 1) is intact" in err and "vocseg train --config" in err
    (run / "best.pt").write_bytes(b"")
    rc, err = cli(["train", "--resume", run], capsys)
    assert rc == 2 and "No readable best.pt either" in err
