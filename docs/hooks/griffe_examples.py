"""A griffe extension (mkdocs.yml, mkdocstrings ``extensions:``): our docstrings title their
doctests ``Example:``, which griffe's Google parser reads as a plain admonition, so ``>>>`` lines
would render as nested block quotes. Retitled ``Examples:``, they render as Python sessions."""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Reads an ``Example:`` section as griffe's ``Examples:``."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
