"""Thread summarizers: what an archived thread leaves in long-term memory.

The contract (`ThreadSummarizer`, `ThreadSummary`, `SummaryContext`), the built-in offline
`extractive` summarizer and the `llm` one, and the registry that builds the configured one
(``working.archive.summarizer``).
"""

from memory_tiers.summarizers.base import (
    MAX_SUMMARY_CHARS,
    BaseSummarizer,
    SummaryContext,
    ThreadSummarizer,
    ThreadSummary,
    run_summarizer,
)
from memory_tiers.summarizers.extractive import ExtractiveOptions, ExtractiveSummarizer
from memory_tiers.summarizers.llm import LLMSummarizer, LLMSummarizerOptions
from memory_tiers.summarizers.registry import BUILTIN_SUMMARIZERS, build_summarizer

__all__ = [
    "BUILTIN_SUMMARIZERS",
    "MAX_SUMMARY_CHARS",
    "BaseSummarizer",
    "ExtractiveOptions",
    "ExtractiveSummarizer",
    "LLMSummarizer",
    "LLMSummarizerOptions",
    "SummaryContext",
    "ThreadSummarizer",
    "ThreadSummary",
    "build_summarizer",
    "run_summarizer",
]
