"""The README's quickstart and the docstring examples are executed, so they cannot rot."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import runpy
from pathlib import Path

import pytest

import memory_tiers

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_readme_quickstart_runs_and_prints_what_it_promises(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (quickstart,) = python_blocks(ROOT / "README.md")
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart)
    runpy.run_path(str(script), run_name="__main__")
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "Hello Alice!",
        "{'name': 'Alice', 'location': 'Paris'}",
        "thread 't1' belongs to another user",
    ]
    assert (tmp_path / ".memory_tiers" / "long_term.db").exists()
    assert (tmp_path / ".memory_tiers" / "working.db").exists()


MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(memory_tiers.__path__, "memory_tiers.")
    if ".migrations" not in info.name
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_examples_in_docs_pages_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(ROOT / "docs" / page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
