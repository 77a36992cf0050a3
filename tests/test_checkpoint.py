"""vocseg.checkpoint: atomic writes (a save killed part-way keeps the previous checkpoint), and safe loading:
torn, missing and foreign files are refused naming the file, and a pickle payload is refused and never runs.

docs/reliability.md lists every fault tried here, what vocseg does about it, and the test that checks it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from helpers import cli, subprocess_env
from vocseg.checkpoint import load_checkpoint, save_checkpoint
from vocseg.errors import VocsegError
from vocseg.runtime.files import BackgroundWriter, detached_copy

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")

# ----------------------------------------------------------------------------- background writes


def test_detached_copy_is_a_snapshot_training_cannot_change() -> None:
    """Parameters and optimizer moments change in place after the snapshot: the copy must not follow."""
    w = torch.ones(3, requires_grad=True)
    state = {"model": {"w": w}, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}, "history": [{"e": 1}]}
    snap = detached_copy(state)
    with torch.no_grad():
        w.add_(1.0)
    state["optimizer"]["state"][0]["exp_avg"].fill_(5.0)
    state["history"].append({"e": 2})
    assert torch.equal(snap["model"]["w"], torch.ones(3)) and not snap["model"]["w"].requires_grad
    assert torch.equal(snap["optimizer"]["state"][0]["exp_avg"], torch.zeros(3))
    assert snap["history"] == [{"e": 1}]


def test_background_writes_land_in_order_off_the_calling_thread() -> None:
    writer, done, threads = BackgroundWriter(), [], set()

    def write(i: int) -> None:
        threads.add(threading.get_ident())
        done.append(i)

    for i in range(5):
        writer.submit(write, i)
    writer.close()
    assert done == [0, 1, 2, 3, 4] and threading.get_ident() not in threads


def test_a_failed_background_write_raises_in_the_training_thread(tmp_path: Path) -> None:
    """The error (naming the file) surfaces at the next submit, or at close: never lost in the thread."""
    target = tmp_path / "missing-folder" / "last.pt"
    writer = BackgroundWriter()
    writer.submit(save_checkpoint, {"model": {}}, target)
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        writer.submit(lambda: None)
    writer.submit(save_checkpoint, {"model": {}}, target)
    with pytest.raises(FileNotFoundError, match="missing-folder"):
        writer.close()


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
