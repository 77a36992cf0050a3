"""The one exception type vocseg raises for problems a user can fix, and the message of a missing extra."""

from __future__ import annotations

import importlib
from types import ModuleType


class VocsegError(Exception):
    """A user-facing error: bad input, missing file, wrong setting. The CLI prints it without a traceback."""


def install_command(extra: str) -> str:
    """How to install one of vocseg's optional extras (pyproject.toml's ``optional-dependencies``)."""
    return f"pip install 'vocseg[{extra}]'"


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or raise a VocsegError naming the extra and its install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise VocsegError(
            f"{what} needs the Python package {module!r} of the '{extra}' extra: {install_command(extra)}"
        ) from None
