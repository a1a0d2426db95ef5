"""Resolving extractors named in the configuration: built-ins by name, others by import path."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from memory_tiers.config import PluginSpec
from memory_tiers.errors import ConfigError, MissingDependencyError
from memory_tiers.extractors.base import FactExtractor
from memory_tiers.extractors.llm import LLMExtractor
from memory_tiers.extractors.rules import RulesExtractor
from memory_tiers.imports import import_object

BUILTIN_EXTRACTORS: dict[str, type] = {"rules": RulesExtractor, "llm": LLMExtractor}


def build_extractor(spec: PluginSpec, key_path: str) -> FactExtractor:
    """Instantiate one extractor, validating its options with its own ``options_model``.

    An extractor's constructor may raise `ConfigError` with a message that starts with a key
    relative to the extractor (``"options.model: ..."``); it is reported under ``key_path``.
    """
    if spec.use in BUILTIN_EXTRACTORS:
        factory = BUILTIN_EXTRACTORS[spec.use]
    elif ":" in spec.use:
        factory = import_object(spec.use, key_path)
    else:
        raise ConfigError(
            f"{key_path}: unknown extractor {spec.use!r}; use one of "
            f"{sorted(BUILTIN_EXTRACTORS)} or 'package.module:Class'"
        )
    options_model: type[BaseModel] | None = getattr(factory, "options_model", None)
    try:
        if options_model is not None:
            extractor = factory(options_model.model_validate(spec.options))
        elif spec.options:
            raise ConfigError(f"{key_path}.options: {spec.use} takes no options")
        else:
            extractor = factory()
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{key_path}.options: {details}") from None
    except ConfigError as exc:
        message = str(exc)
        if isinstance(exc, MissingDependencyError) or message.startswith(key_path):
            raise
        prefix = f"{key_path}." if message.startswith("options") else f"{key_path}: "
        raise ConfigError(prefix + message) from exc.__cause__
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key_path}: cannot create {spec.use}: {exc}") from None
    if not isinstance(extractor, FactExtractor):
        raise ConfigError(f"{key_path}: {spec.use} has no extract(messages, context) method")
    return extractor


def build_extractors(specs: list[PluginSpec]) -> list[FactExtractor]:
    """All configured extractors, in order."""
    return [build_extractor(spec, f"long_term.extractors[{i}]") for i, spec in enumerate(specs)]
