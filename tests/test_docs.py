"""The docs name tests that exist: every ``tests/....py::name`` in README.md and docs/*.md points at a file
that defines ``name`` (docs/reliability.md maps each fault to its test by these names)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def references() -> list[tuple[str, str, str]]:
    return [
        (doc.name, path, name)
        for doc in DOCS
        for path, name in TEST_REF.findall(doc.read_text(encoding="utf-8"))
        if path != "tests/FILE.py"  # reliability.md's own explanation of the form
    ]


def test_the_docs_name_tests():
    assert len(references()) >= 50, "docs/reliability.md names its tests as tests/FILE.py::test_NAME"


@pytest.mark.parametrize("doc, path, name", sorted(set(references())))
def test_named_test_exists(doc, path, name):
    file = ROOT / path
    assert file.is_file(), f"{doc} names {path}, which does not exist"
    assert re.search(rf"^\s*(def|class) {name}\b", file.read_text(encoding="utf-8"), re.M), (
        f"{doc} names {path}::{name}, which {path} does not define"
    )
