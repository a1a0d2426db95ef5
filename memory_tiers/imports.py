"""Loading what the configuration names as ``"package.module:attribute"``."""

from __future__ import annotations

import importlib
from typing import Any

from memory_tiers.errors import ConfigError


def import_object(path: str, what: str) -> Any:
    """Import ``"package.module:attribute"``; errors name ``what`` was being loaded."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{what} {path!r} must look like 'package.module:Attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what} {path!r}: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{what} {path!r}: {module_name} has no {attribute!r}") from None
