"""The wheel and sdist `python -m build` makes: what they hold, and a wheel installed outside the checkout."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from helpers import SRC
from vocseg.version import __version__

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (vocseg itself runs on 3.10)

ROOT = SRC.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """Wheel and sdist built from a copy of the sources (the checkout's own build/ and egg-info stay as they are)."""
    work = tmp_path_factory.mktemp("build")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", "configs"):
        shutil.copytree(ROOT / name, work / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    out = work / "dist"
    cmd = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(work)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob(f"vocseg-{__version__}-py3-none-any.whl")
    return wheel


def test_wheel_holds_the_package_and_configs_only(dist):
    names = zipfile.ZipFile(_wheel(dist)).namelist()
    sources = {p.relative_to(SRC).as_posix() for p in (SRC / "vocseg").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))
    configs = {f"vocseg/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")}
    assert configs and configs <= set(names)
    assert "vocseg/py.typed" in names  # PEP 561 marker: the annotations are part of the API
    tops = {n.split("/")[0] for n in names}
    assert tops == {"vocseg", f"vocseg-{__version__}.dist-info"}, tops  # no tests, benchmarks, docs or runs
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pt", ".onnx", ".png", ".jpg"))]


def _normalised(requirements: list[str]) -> set[tuple[str, str]]:
    return {(r.name.lower(), str(sorted(map(str, r.specifier)))) for r in map(Requirement, requirements)}


def test_wheel_metadata_core_dependencies_and_extras(dist):
    wheel = zipfile.ZipFile(_wheel(dist))
    meta = email.message_from_bytes(wheel.read(f"vocseg-{__version__}.dist-info/METADATA"))
    assert meta["Version"] == __version__
    requires = meta.get_all("Requires-Dist")
    core = [r for r in requires if "extra ==" not in r]
    assert _normalised(core) == _normalised(PROJECT["dependencies"]), core
    assert {"onnx", "tensorboard", "video", "bench", "test"} <= set(meta.get_all("Provides-Extra"))
    optional = ("onnx", "onnxruntime", "tensorboard", "av", "segmentation-models-pytorch", "pytest", "torchmetrics")
    assert not [r for r in core if r.split(">")[0].split("=")[0] in optional]
    entry = wheel.read(f"vocseg-{__version__}.dist-info/entry_points.txt").decode()
    assert "vocseg = vocseg.cli:main" in entry


def test_sdist_builds_the_same_package(dist):
    (sdist,) = dist.glob(f"vocseg-{__version__}.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "src/vocseg/cli.py", "configs/strong.yaml"} <= names
    assert not [n for n in names if n.startswith(("runs/", "benchmarks/", "tests/fixtures/"))]


def _venv_with_wheel(dist: Path, where: Path) -> Path:
    """A new venv holding the wheel; its dependencies are this environment's (a .pth line to its packages), so
    nothing is downloaded and no editable vocseg is visible."""
    # No pip inside (ensurepip is the slow part of a venv): this environment's pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    pip.append(str(_wheel(dist)))
    subprocess.run(pip, check=True)
    return where / "bin"


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(dist, tmp_path):
    """--version, config show, synth, a one-epoch train and predict, from a folder that is not the checkout."""
    bin_dir = _venv_with_wheel(dist, tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VOCSEG_CONFIG_DIR")}
    env["VOCSEG_CACHE"] = str(tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()

    def vocseg(*args) -> str:
        done = subprocess.run([bin_dir / "vocseg", *map(str, args)], capture_output=True, text=True, cwd=work, env=env)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    where = subprocess.run([bin_dir / "python", "-c", "import vocseg.cli as c; print(c.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout  # fmt: skip
    assert where.startswith(str(tmp_path / "venv")), where
    assert vocseg("--version").strip() == f"vocseg {__version__}"
    assert "model:" in vocseg("config", "show", "strong_cpu")
    vocseg("synth", "data", "--train", 8, "--val", 4, "--max-side", 48, "--workers", 1)
    train = ["--data-root", "data", "--model", "fcn", "--epochs", 1, "--batch-size", 4, "--image-size", 32]
    vocseg("train", *train, "--workers", 0, "--device", "cpu", "--out", "run", "--no-progress")
    image = next((work / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    vocseg("predict", "run/best.pt", image, "--out", "pred", "--no-progress")
    assert list((work / "pred").glob("*.png"))
