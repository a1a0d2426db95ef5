"""Resolving extractors named in the configuration: built-ins by name, others by import path."""

from __future__ import annotations

from memory_tiers.config import PluginSpec
from memory_tiers.extractors.base import FactExtractor
from memory_tiers.extractors.llm import LLMExtractor
from memory_tiers.extractors.rules import RulesExtractor
from memory_tiers.plugins import build_plugin

BUILTIN_EXTRACTORS: dict[str, type] = {"rules": RulesExtractor, "llm": LLMExtractor}


def build_extractor(spec: str | PluginSpec, key_path: str) -> FactExtractor:
    """Instantiate one extractor, validating its options with its own ``options_model``.

    An extractor's constructor may raise `ConfigError` with a message that starts with a key
    relative to the extractor (``"options.model: ..."``); it is reported under ``key_path``.
    """
    extractor: FactExtractor = build_plugin(
        spec,
        key_path,
        kind="extractor",
        builtins=BUILTIN_EXTRACTORS,
        protocol=FactExtractor,
        contract="extract(messages, context)",
    )
    return extractor


def build_extractors(specs: list[PluginSpec]) -> list[FactExtractor]:
    """All configured extractors, in order."""
    return [build_extractor(spec, f"long_term.extractors[{i}]") for i, spec in enumerate(specs)]
