"""Missing optional extras: every feature that needs one names the extra and its install command."""

from __future__ import annotations

import ast
import re
import sys

import pytest

from helpers import SRC
from vocseg.errors import VocsegError, install_command, require

tomllib = pytest.importorskip("tomllib")  # Python 3.11+ (vocseg itself runs on 3.10)

ROOT = SRC.parent


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]


def _require_calls() -> list[tuple[str, str, str]]:
    """(file, module, extra) of every ``require("module", "extra", ...)`` in the package."""
    calls = []
    for path in sorted((SRC / "vocseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                module, extra = (a.value if isinstance(a, ast.Constant) else None for a in node.args[:2])
                calls.append((path.name, module, extra))
    return calls


def test_every_require_names_an_extra_that_installs_its_module():
    extras = _extras()
    calls = _require_calls()
    assert {extra for _, _, extra in calls} >= {"onnx", "tensorboard", "video"}
    for where, module, extra in calls:
        if module is None:  # a variable module name: export's onnx / onnxscript / onnxruntime
            assert extra == "onnx", where
            continue
        packages = [re.split(r"[<>=\[ ]", p)[0].lower() for p in extras[extra]]
        assert module.lower() in packages, (where, module, extra)


def test_extras_the_issue_lists_exist_and_test_installs_them_all():
    extras = _extras()
    assert {"onnx", "tensorboard", "video", "bench", "test"} <= set(extras)
    test = {re.split(r"[<>=\[ ]", p)[0] for p in extras["test"]}
    for extra in ("onnx", "tensorboard", "video"):
        assert {re.split(r"[<>=\[ ]", p)[0] for p in extras[extra]} <= test, extra


@pytest.mark.parametrize("extra", ["onnx", "video", "tensorboard"])
def test_missing_module_names_the_install_command(monkeypatch, extra):
    module = {"onnx": "onnxruntime", "video": "av", "tensorboard": "tensorboard"}[extra]
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(VocsegError) as e:
        require(module, extra, "this feature")
    assert str(e.value) == f"this feature needs the Python package {module!r} of the {extra!r} extra: " + (
        f"pip install 'vocseg[{extra}]'"
    )
    assert install_command(extra) in str(e.value)
