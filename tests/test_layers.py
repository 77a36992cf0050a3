"""The package's layers: every import inside vocseg points down this order (or stays within its layer),
and no two modules import each other, directly or through others.

Every import counts: module-level, function-local and ``TYPE_CHECKING`` ones alike, since a cycle hidden
in a function is still a cycle. This list is the one place the order is written; README.md's layout
section shows it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# Lowest first. A module may import from its own layer and the layers before it, never after.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vocseg.errors", "vocseg.version"),
    ("vocseg.config",),  # what a run is: fields, choices, validation
    ("vocseg.runtime",),  # device, precision, workers, seeding, wrappers, distributed, file writes
    ("vocseg.data",),
    ("vocseg.models",),
    ("vocseg.metrics", "vocseg.losses", "vocseg.plots"),
    ("vocseg.checkpoint", "vocseg.rundir"),  # the checkpoint and run-folder contracts
    ("vocseg.evaluation",),
    ("vocseg.training",),
    ("vocseg.deploy",),  # predict, export
    ("vocseg.study",),  # experiments, reproduce, compare, significance, report
    ("vocseg.cli",),
    ("vocseg", "vocseg.__main__"),  # the public API and `python -m vocseg`
)

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "vocseg").rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index of the layer whose longest prefix names ``module``."""
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    if rank is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
    return rank


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The vocseg modules ``module`` imports, anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from pkg import submodule` imports the submodule itself
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules)
    return {m for m in found if m == "vocseg" or m.startswith("vocseg.")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) - {m} for m, p in modules.items()}


def test_every_module_has_a_layer(graph):
    for module in graph:
        layer_of(module)


def test_imports_point_down_the_layers(graph):
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in graph.items()
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "imports pointing up the layer order:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycles(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_should():
    """The checks themselves, on made-up graphs: a cycle through a function-local import is found, and an
    upward import is ranked as one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("vocseg.training.train") > layer_of("vocseg.evaluation.inference")
    assert layer_of("vocseg.runtime.device") < layer_of("vocseg.data.voc")


def test_function_local_imports_are_seen(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vocseg.cli import main\n"
        "def f():\n    from .training import train\n"
    )
    found = imports_of("vocseg.data.m", src, {})
    assert {"vocseg.cli", "vocseg.data.training"} <= found


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists the packages setuptools builds: a new sub-package missing there would import
    from a checkout but not from an installed wheel."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((SRC.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in (SRC / "vocseg").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"
