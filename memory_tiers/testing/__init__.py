"""Test kits for code built on memory_tiers: run them from your own test suite.

- `check_extractor` / `check_extractor_sync`: the conformance checks every fact extractor
  should pass (valid output, idempotence, hostile input).
- `check_summarizer` / `check_summarizer_sync`: the same for thread summarizers.
- `FakeStructuredChatModel`: an offline chat model with structured output, for testing the
  `llm` extractor and summarizer, or your own LLM-based plugins, without a network.
- `default_samples` and `hostile_cases`: the conversations the kits run.
"""

from memory_tiers.testing.cases import Sample, default_samples, hostile_cases
from memory_tiers.testing.extractors import check_extractor, check_extractor_sync
from memory_tiers.testing.fake_models import FakeStructuredChatModel
from memory_tiers.testing.summarizers import check_summarizer, check_summarizer_sync

__all__ = [
    "FakeStructuredChatModel",
    "Sample",
    "check_extractor",
    "check_extractor_sync",
    "check_summarizer",
    "check_summarizer_sync",
    "default_samples",
    "hostile_cases",
]
