"""Resolving the summarizer named in the configuration: built-ins by name, others by import path."""

from __future__ import annotations

from memory_tiers.config import PluginSpec
from memory_tiers.plugins import build_plugin
from memory_tiers.summarizers.base import ThreadSummarizer
from memory_tiers.summarizers.extractive import ExtractiveSummarizer
from memory_tiers.summarizers.llm import LLMSummarizer

BUILTIN_SUMMARIZERS: dict[str, type] = {"extractive": ExtractiveSummarizer, "llm": LLMSummarizer}


def build_summarizer(
    spec: str | PluginSpec = "extractive", key_path: str = "working.archive.summarizer"
) -> ThreadSummarizer:
    """Instantiate the configured summarizer, validating its options with its own ``options_model``.

    Args:
        spec: ``"extractive"``, ``"llm"``, ``"package.module:Class"``, or a `PluginSpec` with options
            (``working.archive.summarizer`` in the configuration).
        key_path: where the spec sits in the configuration, for error messages.

    Raises:
        ConfigError: the name is unknown, the class does not import, its options are invalid, or
            it has no ``asummarize(messages, context)`` method; the message starts with ``key_path``.

    Example:
        >>> build_summarizer("extractive")
        <memory_tiers.summarizers.extractive.ExtractiveSummarizer object at ...>
        >>> build_summarizer(PluginSpec(use="extractive", options={"max_sentences": 0}))
        Traceback (most recent call last):
        ...
        memory_tiers.errors.ConfigError: working.archive.summarizer.options: max_sentences: ...
    """
    summarizer: ThreadSummarizer = build_plugin(
        spec,
        key_path,
        kind="summarizer",
        builtins=BUILTIN_SUMMARIZERS,
        protocol=ThreadSummarizer,
        contract="asummarize(messages, context)",
    )
    return summarizer
