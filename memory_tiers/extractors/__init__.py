"""Fact extractors: the contract, the built-in `rules` and `llm` extractors and the registry."""

from memory_tiers.extractors.base import (
    BaseExtractor,
    ExtractionContext,
    FactCandidate,
    FactExtractor,
    run_extractor,
)
from memory_tiers.extractors.llm import LLMExtractor, LLMOptions
from memory_tiers.extractors.registry import BUILTIN_EXTRACTORS, build_extractors
from memory_tiers.extractors.rules import RulesExtractor, RulesOptions

__all__ = [
    "BUILTIN_EXTRACTORS",
    "BaseExtractor",
    "ExtractionContext",
    "FactCandidate",
    "FactExtractor",
    "LLMExtractor",
    "LLMOptions",
    "RulesExtractor",
    "RulesOptions",
    "build_extractors",
    "run_extractor",
]
