"""mkdocs hooks for the docs site (named under ``hooks:`` in mkdocs.yml).

- ``index.md`` shows the README's quickstart, taken from the README at build time.
- ``configuration-keys.md`` is generated at build time from the pydantic models: every section
  and key of `MemoryTiersConfig`, with its type, default, description and environment variable.
  It is complete by construction; a key without a ``description`` fails ``mkdocs build --strict``.
- The pages link to files outside docs/ (``../examples/*.py``, ``../README.md``) so that they also
  read well in the repository. On the site those links go to generated pages: one per example
  (its source, listed by ``examples/index.md``) and ``readme.md``.
- Doctests written as bare text (docs/summarizers.md) are fenced as ``pycon`` for rendering;
  the files are unchanged, so tests/test_docs.py runs them as they are.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen
from mkdocs.structure.files import File, Files, InclusionLevel
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from memory_tiers.config import ENV_PREFIX, MemoryTiersConfig, PluginSpec
from memory_tiers.config_values import SecretUrl

log = logging.getLogger("mkdocs.hooks.memory_tiers")

ROOT = Path(__file__).resolve().parents[2]
CONFIG_KEYS_PAGE = "configuration-keys.md"
EXAMPLES_DIR = "examples"

# ---------------------------------------------------------------------------------------------
# The configuration keys page


@dataclass(frozen=True)
class Key:
    """One configurable key: where it is, and what its field says."""

    path: str  # e.g. "working.retention.keep_last"; "<name>" stands for a mapping key
    field: FieldInfo
    env: str | None  # the environment variable, None below a mapping or list


@dataclass(frozen=True)
class Section:
    """A group of keys: a pydantic model at ``path`` ("" for the top level)."""

    path: str
    model: type[BaseModel]
    keys: list[Key]


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def sections(
    model: type[BaseModel] = MemoryTiersConfig, path: str = "", env: str | None = ENV_PREFIX
) -> Iterator[Section]:
    """Every section of ``model``, depth first in declaration order, its keys with it.

    A key holding a nested model (a subsection) is listed as its own section, not as a key. A
    mapping of models (``working.retention.namespaces``) becomes a section at ``path.<name>``;
    `PluginSpec`, which several keys may hold, is described once by `plugin_spec_section`.
    """
    keys: list[Key] = []
    nested: list[Section] = []
    for name, field in model.model_fields.items():
        key_path = f"{path}.{name}" if path else name
        key_env = f"{env}{name.upper()}" if env is not None else None
        if _is_section(field.annotation):
            nested += sections(field.annotation, key_path, f"{key_env}__" if key_env else None)
            continue
        keys.append(Key(key_path, field, key_env))
        if get_origin(field.annotation) is dict:
            value = get_args(field.annotation)[1]
            if _is_section(value):
                nested += sections(value, f"{key_path}.<name>", None)
    yield Section(path, model, keys)
    yield from nested


def plugin_spec_section() -> Section:
    """The ``{use, options}`` shape of extractors and summarizers."""
    return next(sections(PluginSpec, "<plugin>", None))


_SCALARS = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    timedelta: "duration",
    SecretUrl: "URL (secret)",
    Path: "path",
    type(None): "null",
    Any: "any",
}


def type_name(annotation: Any) -> str:
    """How the page writes a key's type, e.g. ``duration or null``, ``list of string or plugin``.

    Example:
        >>> type_name(dict[str, int] | None)
        'mapping of string to integer or null'
    """
    if hasattr(annotation, "__metadata__"):  # Annotated[...]: the type without its validators
        return type_name(get_args(annotation)[0])
    origin = get_origin(annotation)
    if isinstance(annotation, type) and annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in get_args(annotation))
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {type_name(key)} to {type_name(value)}"
    if annotation is PluginSpec:
        return "[plugin](#plugin)"
    if _is_section(annotation):
        return annotation.__name__
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: FieldInfo) -> str:
    """A field's bounds (``1 ≤ n ≤ 1000``), length and pattern limits."""
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    parts = []
    if low is not None and high is not None:
        parts.append(f"{low} ≤ n ≤ {high}")
    elif low is not None:
        parts.append(f"≥ {low}")
    elif high is not None:
        parts.append(f"≤ {high}")
    for item in field.metadata:
        if isinstance(item, MinLen) and item.min_length > 0:
            parts.append(f"at least {item.min_length} characters")
        if isinstance(item, MaxLen):
            parts.append(f"at most {item.max_length} characters")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            parts.append(f"matches `{pattern}`")
    return "; ".join(parts)


def default_text(field: FieldInfo) -> str:
    """A key's default as it would be written in YAML: a duration in its largest whole unit,
    anything else serialized the way the config dumps it (URLs masked)."""
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    annotated: Any = field.annotation
    if field.metadata:
        annotated = Annotated[(field.annotation, *field.metadata)]  # type: ignore[valid-type]
    if isinstance(value, timedelta):
        return f"`{duration_text(value)}`"
    dumped = TypeAdapter(annotated).dump_python(value, mode="json")
    if dumped is None:
        return "`null`"
    if isinstance(dumped, bool):
        return f"`{str(dumped).lower()}`"
    if isinstance(dumped, str):
        return f"`{dumped}`"
    return f"`{json.dumps(dumped)}`"


def duration_text(value: timedelta) -> str:
    """A duration in the largest unit that writes it whole, as the config accepts it.

    Example:
        >>> duration_text(timedelta(days=30)), duration_text(timedelta(seconds=90))
        ('30d', '90s')
    """
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """Free text from the models: ``<data_dir>`` is kept as text rather than read as HTML."""
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;")


def _docstring(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    summary = doc.split("\n\n", 1)[0]
    return " ".join(line.strip() for line in summary.splitlines())


def _parent(path: str) -> str:
    """The section a section path is under: ``a.b.<name>`` is under ``a``, like ``a.b``."""
    parent = path.rpartition(".")[0]
    return parent.rpartition(".")[0] if path.endswith(".<name>") else parent


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _heading(section: Section) -> str:
    if section.model is PluginSpec:
        return "Plugins: `{use, options}` { #plugin }"
    if not section.path:
        return "Top level { #top-level }"
    return f"`{section.path}` {{ #{_anchor(section.path)} }}"


def missing_descriptions() -> list[str]:
    """Keys whose field has no ``description``: the page would have nothing to say about them."""
    every = [*sections(), plugin_spec_section()]
    return [key.path for section in every for key in section.keys if not key.field.description]


def render_config_keys() -> str:
    """The Markdown of the generated page."""
    out = [
        "# Configuration: all keys",
        "",
        "Generated from the pydantic models in `memory_tiers/config.py` each time the site is "
        "built, so it lists every key there is. For explanations and examples see the "
        "[configuration guide](configuration.md).",
        "",
        "Durations are seconds or a number with a unit (`500ms`, `30s`, `15m`, `1h`, `30d`, `2w`). "
        f"Environment variables `{ENV_PREFIX}SECTION__KEY` override the file; a list or mapping "
        "is given there as JSON.",
        "",
    ]
    every = [*sections(), plugin_spec_section()]
    for section in every:
        out += [f"## {_heading(section)}", "", _prose(_docstring(section.model))]
        if section.model is PluginSpec:
            out.append(
                " Keys that take a plugin (`long_term.extractors`, `working.archive.summarizer`) "
                'accept a built-in name or this mapping; `use` is a built-in name or "package.module:Class".'
            )
        out.append("")
        children = [s for s in every[1:] if s.model is not PluginSpec and _parent(s.path) == section.path]
        if children:
            names = ", ".join(f"[`{s.path}`](#{_anchor(s.path)})" for s in children)
            out += [f"Subsections: {names}.", ""]
        if not section.keys:
            continue
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for key in section.keys:
            name = key.path[len(section.path) + 1 :] if section.path else key.path
            where = f"`{name}`" + (f"<br><small>`{key.env}`</small>" if key.env else "")
            kind = type_name(key.field.annotation)
            if get_origin(key.field.annotation) is dict and _is_section(get_args(key.field.annotation)[1]):
                kind = f"mapping of name to [the keys below](#{_anchor(key.path + '.<name>')})"
            if limits := constraints(key.field):
                kind += f" ({limits})"
            description = key.field.description or ""
            out.append(
                f"| {where} | {_cell(kind)} | {_cell(default_text(key.field))} | {_prose(description)} |"
            )
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Links to files outside docs/

_EXAMPLE_LINK = re.compile(r"\]\(\.\./examples/([A-Za-z0-9_]+)\.py\)")
_README_LINK = re.compile(r"\]\(\.\./README\.md(#[^)]*)?\)")
README_PAGE = "readme.md"


def readme_page() -> str:
    """The README as a page of the site (reached from the pages' links to it), its links to
    docs/ and examples/ pointed at the site's pages."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\]\(docs/([^)]+)\)", r"](\1)", text)
    return re.sub(r"\]\(examples/?\)", f"]({EXAMPLES_DIR}/index.md)", text)


def example_page(name: str) -> str:
    """The Markdown of the page showing ``examples/<name>.py``: its source, which says (in its
    docstring) what it shows and how to run it."""
    source = (ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8")
    return (
        f"# Example: `examples/{name}.py`\n\n"
        f"Run from the repository root: `.venv/bin/python examples/{name}.py`. "
        "tests/test_examples.py runs it too.\n\n"
        f"```python\n{source}```\n"
    )


def _summary(name: str) -> str:
    """The first line of an example's module docstring."""
    source = (ROOT / "examples" / f"{name}.py").read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.split("\n", 1)[0]


def examples_index(names: list[str]) -> str:
    """The Markdown of the examples' index page."""
    rows = "\n".join(f"| [`examples/{name}.py`]({name}.md) | {_prose(_summary(name))} |" for name in names)
    return (
        "# Examples\n\nRunnable programs in `examples/`. The test suite runs every one of them "
        "(tests/test_examples.py), so none can rot.\n\n"
        f"| example | what it shows |\n|---|---|\n{rows}\n"
    )


def rewrite_outside_links(markdown: str, page_dir: str) -> str:
    """Point links to ``../examples/*.py`` and ``../README.md`` at the site's pages of them.

    Only pages at the top of docs/ link that way; a page deeper down is left as it is.

    Example:
        >>> rewrite_outside_links("see [it](../examples/custom_extractor.py)", "")
        'see [it](examples/custom_extractor.md)'
    """
    if page_dir:
        return markdown
    markdown = _EXAMPLE_LINK.sub(rf"]({EXAMPLES_DIR}/\1.md)", markdown)
    return _README_LINK.sub(rf"]({README_PAGE}\1)", markdown)


# ---------------------------------------------------------------------------------------------
# The README's quickstart on the getting-started page

QUICKSTART_MARK = "<!-- quickstart -->"


def readme_quickstart() -> str:
    """The README's one Python block (tests/test_docs.py runs it), fenced, so that the site shows
    the quickstart the tests check rather than a copy of it."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    if len(blocks) != 1:
        log.warning("README.md has %d python blocks; the quickstart is the only one expected", len(blocks))
        return ""
    return f"```python\n{blocks[0]}```"


# ---------------------------------------------------------------------------------------------
# Doctests outside code fences

_FENCE = re.compile(r"^\s*(```|~~~)")


def fence_doctests(markdown: str) -> str:
    """Wrap each doctest written as bare text (a ``>>>`` line up to the next blank line) in a
    ``pycon`` fence, so it renders as a Python session rather than as nested block quotes. The
    page itself is unchanged: tests/test_docs.py runs the doctests as they are.

    Example:
        >>> fence_doctests("Text.\\n\\n>>> 1 + 1\\n2\\n\\nMore.").splitlines()
        ['Text.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'More.']
    """
    out: list[str] = []
    fence: str | None = None
    in_doctest = False
    for line in markdown.split("\n"):
        if in_doctest and not line.strip():
            out.append("```")
            in_doctest = False
        if fence is None and not in_doctest and line.startswith(">>>"):
            out.append("```pycon")
            in_doctest = True
        elif not in_doctest and (match := _FENCE.match(line)):
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
        out.append(line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# mkdocs events


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages."""
    for key in missing_descriptions():
        log.warning("config key %s has no description= in memory_tiers/config.py", key)
    files.append(File.generated(config, CONFIG_KEYS_PAGE, content=render_config_keys()))
    hidden = InclusionLevel.NOT_IN_NAV  # reached from links, not listed in the nav
    files.append(File.generated(config, README_PAGE, content=readme_page(), inclusion=hidden))
    names = [p.stem for p in sorted((ROOT / "examples").glob("*.py")) if not p.name.startswith("_")]
    files.append(File.generated(config, f"{EXAMPLES_DIR}/index.md", content=examples_index(names)))
    for name in names:
        page = example_page(name)  # listed by the examples' index
        files.append(File.generated(config, f"{EXAMPLES_DIR}/{name}.md", content=page, inclusion=hidden))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Put the README's quickstart in, fence bare doctests and rewrite links that leave docs/."""
    if QUICKSTART_MARK in markdown:
        markdown = markdown.replace(QUICKSTART_MARK, readme_quickstart())
    markdown = fence_doctests(markdown)
    return rewrite_outside_links(markdown, str(Path(page.file.src_uri).parent).strip("."))
