"""vocseg's public API: every name importable from the package itself, and the package import stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vocseg


@pytest.mark.parametrize("name", sorted(set(vocseg.__all__) - {"__version__"}))
def test_every_public_name_is_importable_from_vocseg(name):
    value = getattr(vocseg, name)
    assert value is getattr(__import__(vocseg._API[name], fromlist=[name]), name)


def test_all_lists_the_api_and_unknown_names_say_what_exists():
    assert set(vocseg.__all__) == {"__version__", *vocseg._API}
    with pytest.raises(AttributeError, match="create_model"):
        vocseg.no_such_thing  # noqa: B018


def test_importing_vocseg_loads_no_torch():
    """``vocseg --version`` and ``import vocseg`` do not pay for torch: the API loads on first use."""
    code = "import sys, vocseg; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )
