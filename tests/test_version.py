"""vocseg.version: one version string, PEP 440, and the one the installed distribution reports."""

from __future__ import annotations

import importlib.metadata
import re

import vocseg
from vocseg.version import __version__

# PEP 440's public version scheme (release, optional pre/post/dev segments), as packaging's regex spells it.
PEP440 = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def test_version_is_pep_440():
    assert PEP440.match(__version__), __version__


def test_package_and_installed_distribution_agree():
    assert vocseg.__version__ == __version__
    assert importlib.metadata.version("vocseg") == __version__  # pyproject.toml reads it from vocseg/version.py
