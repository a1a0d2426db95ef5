"""The extractor conformance kit.

Call `check_extractor` (or `check_extractor_sync`) from your own tests: it runs your extractor
on sample conversations and on hostile input, and fails with one line per broken check.

Example:
    >>> from memory_tiers.extractors import FactCandidate, RulesExtractor
    >>> check_extractor_sync(RulesExtractor())  # passes: returns None

    >>> class Shouty:
    ...     def extract(self, messages, context):
    ...         return [{"attribute": "Mood!", "value": m.content} for m in messages]
    >>> check_extractor_sync(Shouty())
    Traceback (most recent call last):
    ...
    AssertionError: Shouty failed ... extractor conformance check... (...valid_output):
      - valid_output (sample 1): item 0 is invalid: attribute: String should match pattern ...
    ...
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ValidationError

from memory_tiers.extractors.base import ExtractionContext, FactCandidate
from memory_tiers.testing.cases import Sample
from memory_tiers.testing.kit import CheckReport, PluginCall, check_cases, run_check_sync
from memory_tiers.validation import error_details


def _validate(result: Any, messages: list[BaseMessage]) -> tuple[list[FactCandidate] | None, str | None]:
    if (
        result is None
        or isinstance(result, str | bytes | Mapping | BaseModel)
        or not isinstance(result, Iterable)
    ):
        return None, f"returned {type(result).__name__}, expected a list of FactCandidate"
    facts = []
    for index, item in enumerate(result):
        if isinstance(item, FactCandidate):
            facts.append(item)
        elif isinstance(item, Mapping):
            try:
                facts.append(FactCandidate.model_validate(dict(item)))
            except ValidationError as exc:
                return None, f"item {index} is invalid: {error_details(exc)}"
        else:
            return None, f"item {index} is a {type(item).__name__}, expected FactCandidate or dict"
    return facts, None


def _fingerprint(facts: list[FactCandidate]) -> list[str]:
    return sorted(fact.model_dump_json() for fact in facts)


async def check_extractor(
    extractor: Any,
    samples: Sequence[Sample] | None = None,
    *,
    context: ExtractionContext | None = None,
    time_limit: float = 30.0,
) -> None:
    """Check that an extractor keeps the `FactExtractor` contract; raise if it does not.

    The checks, by name:

    - ``protocol``: it has an ``extract(messages, context)`` method.
    - ``valid_output``: on each sample it returns a list of `FactCandidate` (or dicts that
      validate as one), sync or async.
    - ``idempotent``: the same input twice gives the same facts (in any order).
    - ``does_not_mutate_input``: the messages passed in are left as they were.
    - ``empty_input``, ``no_human_text``, ``non_human_messages`` (AI, system and tool messages
      only), ``huge_text`` (1 MB), ``unusual_characters`` (lone surrogates, control characters,
      right-to-left text, emoji), ``content_blocks`` (list content) and ``prompt_injection``:
      it does not raise and still returns valid output.
    - ``time_limit``: every call returns within ``time_limit`` seconds.

    Args:
        extractor: the extractor instance to check.
        samples: conversations to run it on, each a list of messages or one user message's text;
            None runs `default_samples`. The hostile cases always run.
        context: the `ExtractionContext` passed to every call (a test user by default).
        time_limit: seconds one call may take.

    Raises:
        AssertionError: one or more checks failed; the message lists each as
            ``check (case): what happened``.
    """
    report = CheckReport()
    if not callable(getattr(extractor, "extract", None)):
        report.fail("protocol", None, "it has no extract(messages, context) method")
    else:
        plugin = PluginCall(
            method=extractor.extract,
            context=context or ExtractionContext("kit-user", "kit-thread", "kit-session"),
            validate=_validate,
            fingerprint=_fingerprint,
            repeat_check="idempotent",
            what="facts",
            time_limit=time_limit,
        )
        await check_cases(report, plugin, samples)
    report.raise_failures(type(extractor).__name__, "extractor")


def check_extractor_sync(
    extractor: Any,
    samples: Sequence[Sample] | None = None,
    *,
    context: ExtractionContext | None = None,
    time_limit: float = 30.0,
) -> None:
    """`check_extractor` for synchronous tests: runs it in a new event loop.

    Raises:
        AssertionError: as `check_extractor`.
        UsageError: called from a running event loop (await `check_extractor` there).
    """
    run_check_sync(
        check_extractor(extractor, samples, context=context, time_limit=time_limit), "check_extractor"
    )
