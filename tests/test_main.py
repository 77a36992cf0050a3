"""vocseg.__main__: ``python -m vocseg`` runs the CLI in a child process and exits with its status."""

from __future__ import annotations

import subprocess
import sys

from helpers import subprocess_env
from vocseg.version import __version__


def python_m_vocseg(tmp_path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vocseg", *args]
    return subprocess.run(cmd, env=subprocess_env(tmp_path), capture_output=True, text=True)


def test_python_m_vocseg_prints_the_version(tmp_path):
    done = python_m_vocseg(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"vocseg {__version__}"


def test_python_m_vocseg_exits_non_zero_naming_the_unknown_command(tmp_path):
    done = python_m_vocseg(tmp_path, "no-such-command")
    assert done.returncode != 0
    assert "no-such-command" in done.stderr and "train" in done.stderr  # argparse lists the valid commands
