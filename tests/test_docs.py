"""The README's quickstart and the docstring examples are executed, so they cannot rot; the docs site
builds with ``mkdocs build --strict``."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

import memory_tiers
from memory_tiers.config import MemoryTiersConfig

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


def _docs_hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "docs" / "hooks" / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_docs_site_builds_strict(tmp_path):
    """The README's test command covers the site: a broken link or anchor, a page left out of the
    nav, a docstring mkdocstrings cannot render or a config key without a description fails here."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    keys_page = (site / "configuration-keys" / "index.html").read_text()
    for section, field in MemoryTiersConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            assert f'id="{section.replace("_", "-")}"' in keys_page
    assert 'class="mermaid"' in (site / "architecture" / "index.html").read_text()
    assert "Hello again" in (site / "index.html").read_text()  # the README's quickstart


def _leaf_paths(data: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        paths |= _leaf_paths(value, path) if isinstance(value, dict) and value else {path}
    return paths


def test_generated_config_page_lists_every_key():
    hooks = _docs_hooks()
    page = hooks.render_config_keys()
    sections = re.split(r"^## ", page, flags=re.MULTILINE)[1:]
    listed = set()
    for text in sections:
        heading = text.split("\n", 1)[0]
        match = re.match(r"`([^`]+)`", heading)
        prefix = "" if heading.startswith("Top level") else match.group(1) if match else None
        if prefix is None:
            continue  # the plugin shape
        for key in re.findall(r"^\| `([a-z_]+)`", text, flags=re.MULTILINE):
            listed.add(f"{prefix}.{key}" if prefix else key)
    # Independent of the hook's walk: the keys a dump of the defaults has.
    assert _leaf_paths(MemoryTiersConfig.model_construct().model_dump()) <= listed
    assert hooks.missing_descriptions() == []


def test_docs_hooks_examples():
    result = doctest.testmod(_docs_hooks(), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
