"""The extractor conformance kit passes good extractors and fails broken ones, naming the check."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from langchain_core.messages import HumanMessage

from memory_tiers import UsageError
from memory_tiers.extractors import FactCandidate, LLMExtractor, RulesExtractor
from memory_tiers.extractors.rules import RulesOptions
from memory_tiers.testing import (
    FakeStructuredChatModel,
    check_extractor,
    check_extractor_sync,
    default_samples,
)


async def test_the_rules_extractor_passes():
    await check_extractor(RulesExtractor())
    await check_extractor(RulesExtractor(RulesOptions(languages=["en", "fr"])), ["Je m'appelle Léa."])


async def test_the_llm_extractor_with_a_fake_model_passes():
    model = FakeStructuredChatModel(
        responses=[
            {"facts": [{"attribute": "name", "value": "Alice", "cardinality": "one", "confidence": 0.9}]}
        ]
    )
    await check_extractor(LLMExtractor(model=model))
    assert model.calls  # it was really asked


async def test_an_async_extractor_returning_dicts_passes():
    class AsyncDicts:
        async def extract(self, messages, context):
            await asyncio.sleep(0)
            return [{"attribute": "seen", "value": str(len(messages))}] if messages else []

    await check_extractor(AsyncDicts())


def test_the_sync_wrapper_runs_the_same_checks():
    check_extractor_sync(RulesExtractor(), ["I live in Oslo."])

    class Broken:
        def extract(self, messages, context):
            raise ValueError("boom")

    with pytest.raises(AssertionError, match=r"valid_output \(sample 1\): raised ValueError: boom"):
        check_extractor_sync(Broken(), ["I live in Oslo."])


async def test_the_kit_does_not_run_inside_a_running_loop_through_the_sync_wrapper():
    with pytest.raises(UsageError, match="await check_extractor"):
        check_extractor_sync(RulesExtractor())


# -- broken extractors: the kit must fail, and say which check -------------------------


class RaisesOnEmptyInput(RulesExtractor):
    def extract(self, messages, context):
        if not messages:
            raise IndexError("no messages")
        return super().extract(messages, context)


class NonIdempotent:
    def __init__(self) -> None:
        self.counter = itertools.count()

    def extract(self, messages, context):
        return [FactCandidate(attribute="call", value=f"number {next(self.counter)}")]


class ReturnsJunk:
    def extract(self, messages, context):
        return [{"attribute": "Not Snake Case", "value": ""}, "junk", 42]


class ReturnsNone:
    async def extract(self, messages, context):
        return None


class MutatesInput:
    def extract(self, messages, context):
        for message in messages:
            message.content = "redacted"
        return []


class FragileText:
    """Assumes string content and encodable text: fails on blocks, surrogates and size."""

    def extract(self, messages, context):
        facts = []
        for message in messages:
            if message.type == "human":
                text = message.content.encode("utf-8").decode("utf-8")  # AttributeError on lists
                if len(text) > 100_000:
                    raise MemoryError("too big")
                if "ignore all previous instructions" in text.lower():
                    return [{"attribute": "system_prompt", "value": "x" * 10_000}]
        return facts


class NoExtractMethod:
    def run(self, messages):
        return []


def failure_of(extractor, samples=None) -> str:
    with pytest.raises(AssertionError) as caught:
        check_extractor_sync(extractor, samples)
    return str(caught.value)


def test_raising_on_empty_input_fails_empty_input():
    message = failure_of(RaisesOnEmptyInput())
    assert "RaisesOnEmptyInput failed 1 extractor conformance check (empty_input):" in message
    assert "empty_input (no messages): raised IndexError: no messages" in message


def test_a_non_idempotent_extractor_fails_idempotent():
    message = failure_of(NonIdempotent())
    assert "(idempotent)" in message.splitlines()[0]
    assert "idempotent (sample 1): the same input gave different facts" in message
    assert "number 0" in message and "number 1" in message


def test_returning_junk_fails_valid_output_and_every_robustness_check():
    message = failure_of(ReturnsJunk())
    assert "valid_output (sample 1): item 0 is invalid: attribute: String should match pattern" in message
    for check in ("empty_input", "huge_text", "unusual_characters", "content_blocks", "prompt_injection"):
        assert f"\n  - {check} (" in message


def test_returning_none_fails_valid_output():
    message = failure_of(ReturnsNone(), ["I live in Oslo."])
    assert "valid_output (sample 1): returned NoneType, expected a list of FactCandidate" in message


def test_mutating_the_messages_fails_does_not_mutate_input():
    message = failure_of(MutatesInput())
    assert "does_not_mutate_input (sample 1): the messages passed in were changed" in message


def test_fragile_text_handling_fails_the_hostile_cases():
    message = failure_of(FragileText())
    assert "unusual_characters (lone surrogates): raised UnicodeEncodeError" in message
    assert "huge_text (1 MB of sentences): raised MemoryError: too big" in message
    assert "content_blocks (text blocks): raised AttributeError" in message
    assert (
        "prompt_injection (ignore instructions): item 0 is invalid: value: String should have at most"
        in message
    )
    assert "no_human_text (empty content list): raised AttributeError" in message


def test_no_extract_method_fails_protocol():
    message = failure_of(NoExtractMethod())
    assert "protocol: it has no extract(messages, context) method" in message


def test_a_slow_extractor_fails_time_limit():
    class Slow:
        async def extract(self, messages, context):
            await asyncio.sleep(0.02)
            return []

    with pytest.raises(AssertionError, match=r"time_limit \(sample 1\): took"):
        check_extractor_sync(Slow(), ["hi"], time_limit=0.001)


def test_samples_may_be_texts_or_conversations():
    seen = []

    class Recorder:
        def extract(self, messages, context):
            seen.append([m.content for m in messages])
            return []

    check_extractor_sync(Recorder(), ["one text", [HumanMessage("a"), HumanMessage("b")]])
    assert ["one text"] in seen and ["a", "b"] in seen
    assert len(default_samples()) >= 3
