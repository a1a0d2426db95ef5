"""Fact extractors: the contract, the built-in `rules` extractor and the registry."""

from memory_tiers.extractors.base import (
    BaseExtractor,
    ExtractionContext,
    FactCandidate,
    FactExtractor,
    run_extractor,
)
from memory_tiers.extractors.registry import BUILTIN_EXTRACTORS, build_extractors
from memory_tiers.extractors.rules import RulesExtractor

__all__ = [
    "BUILTIN_EXTRACTORS",
    "BaseExtractor",
    "ExtractionContext",
    "FactCandidate",
    "FactExtractor",
    "RulesExtractor",
    "build_extractors",
    "run_extractor",
]
