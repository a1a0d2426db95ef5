"""Test kits for code built on memory_tiers: run them from your own test suite.

- `check_extractor` / `check_extractor_sync`: the conformance checks every fact extractor
  should pass (valid output, idempotence, hostile input).
- `FakeStructuredChatModel`: an offline chat model with structured output, for testing the
  `llm` extractor or your own LLM-based extractors without a network.
"""

from memory_tiers.testing.extractors import (
    FakeStructuredChatModel,
    Sample,
    check_extractor,
    check_extractor_sync,
    default_samples,
)

__all__ = [
    "FakeStructuredChatModel",
    "Sample",
    "check_extractor",
    "check_extractor_sync",
    "default_samples",
]
