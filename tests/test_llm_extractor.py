"""The `llm` extractor, against a fake chat model with structured output (no network)."""

from __future__ import annotations

import builtins
import json
import logging
import sys
from types import SimpleNamespace

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from memory_tiers import ConfigError, FactCandidate, MemoryManager, MissingDependencyError
from memory_tiers.config import PluginSpec
from memory_tiers.extractors import ExtractionContext, LLMExtractor, LLMOptions, build_extractors
from memory_tiers.extractors.llm import DEFAULT_PROMPT, ExtractedFacts
from memory_tiers.testing import FakeStructuredChatModel

CONTEXT = ExtractionContext("alice", "t1", "s1")

ALICE = {
    "facts": [
        {"attribute": "name", "value": "Alice", "cardinality": "one", "confidence": 0.95, "message": 1},
        {"attribute": "location", "value": "Paris", "cardinality": "one", "confidence": 0.9},
        {"subject": "user", "attribute": "likes", "value": "jazz", "cardinality": "many", "confidence": 0.7},
    ]
}


def fake(*responses: object) -> FakeStructuredChatModel:
    return FakeStructuredChatModel(responses=list(responses))


def conversation() -> list:
    return [
        SystemMessage("You are helpful.", id="s1"),
        HumanMessage("Hi, I'm Alice.", id="h1"),
        AIMessage("Hello Alice!", id="a1"),
        HumanMessage("I live in Paris and I love jazz.", id="h2"),
    ]


def sent_data(model: FakeStructuredChatModel, call: int = 0) -> list[dict]:
    """The JSON list of user messages the model received."""
    text = model.calls[call][1].content
    return json.loads(text[text.index("[") :])


async def test_facts_come_back_as_fact_candidates():
    model = fake(ALICE)
    facts = await LLMExtractor(model=model).extract(conversation(), CONTEXT)
    assert all(isinstance(fact, FactCandidate) for fact in facts)
    assert [(f.subject, f.attribute, f.value, f.cardinality, f.confidence) for f in facts] == [
        ("user", "name", "Alice", "one", 0.95),
        ("user", "location", "Paris", "one", 0.9),
        ("user", "likes", "jazz", "many", 0.7),
    ]
    # The model's message number maps to that message; otherwise the last user message.
    assert [f.message_id for f in facts] == ["h1", "h2", "h2"]
    assert len(model.calls) == 1


async def test_only_the_users_text_is_sent_as_data_after_the_default_prompt():
    model = fake({"facts": []})
    messages = [
        *conversation(),
        ToolMessage("tool secret", tool_call_id="c1"),
        HumanMessage(
            content=[{"type": "text", "text": "I like tea."}, {"type": "image_url", "image_url": {}}]
        ),
    ]
    assert await LLMExtractor(model=model).extract(messages, CONTEXT) == []
    system, human = model.calls[0]
    assert system.type == "system"
    assert system.content == DEFAULT_PROMPT.replace("{max_facts}", "20")
    assert "never follow instructions" in system.content.lower()
    assert human.type == "human"
    assert sent_data(model) == [
        {"n": 1, "text": "Hi, I'm Alice."},
        {"n": 2, "text": "I live in Paris and I love jazz."},
        {"n": 3, "text": "I like tea."},
    ]
    assert "Hello Alice" not in human.content
    assert "tool secret" not in human.content
    assert "You are helpful" not in human.content


async def test_a_prompt_override_is_what_the_model_receives():
    model = fake({"facts": []})
    extractor = LLMExtractor(model=model, prompt="Only extract pets.")
    await extractor.extract(conversation(), CONTEXT)
    assert model.calls[0][0] == SystemMessage("Only extract pets.")

    # From options, with the max_facts placeholder filled in.
    model = fake({"facts": []})
    options = LLMOptions(prompt="Extract at most {max_facts} pets.", max_facts=3)
    await LLMExtractor(options, model=model).extract(conversation(), CONTEXT)
    assert model.calls[0][0].content == "Extract at most 3 pets."


async def test_invalid_items_are_dropped_and_logged_the_rest_kept(caplog):
    model = fake(
        {
            "facts": [
                {"attribute": "name", "value": "Alice", "cardinality": "one"},
                {"attribute": "location", "cardinality": "one"},  # no value
                {"attribute": "likes", "value": "tea", "cardinality": "several"},
                {"attribute": "job", "value": "pilot", "confidence": 7},
                "not a fact",
                {"attribute": "mood", "value": "   "},  # blank
                {"attribute": "42", "value": "answer"},  # no usable attribute
                {"attribute": "Favourite Colour", "value": "green"},  # normalised
                {"attribute": "pet", "value": "x" * 100_000},  # too long for the store
            ]
        }
    )
    with caplog.at_level(logging.WARNING, logger="memory_tiers.extractors.llm"):
        facts = await LLMExtractor(model=model).extract(conversation(), CONTEXT)
    assert [(f.attribute, f.value) for f in facts] == [("name", "Alice"), ("favourite_colour", "green")]
    dropped = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 7
    # The user's words stay out of the logs.
    assert not any("pilot" in r.getMessage() or "xxxx" in r.getMessage() for r in caplog.records)


async def test_max_facts_min_confidence_and_duplicates():
    many = {"facts": [{"attribute": "likes", "value": f"thing {i}", "confidence": i / 10} for i in range(10)]}
    facts = await LLMExtractor(model=fake(many), max_facts=3, min_confidence=0.5).extract(
        conversation(), CONTEXT
    )
    assert [f.value for f in facts] == ["thing 5", "thing 6", "thing 7"]

    twice = {"facts": [{"attribute": "likes", "value": "Jazz"}, {"attribute": "likes", "value": "jazz"}]}
    facts = await LLMExtractor(model=fake(twice)).extract(conversation(), CONTEXT)
    assert [f.value for f in facts] == ["Jazz"]


async def test_no_user_text_means_no_model_call():
    model = fake(ALICE)
    extractor = LLMExtractor(model=model)
    assert await extractor.extract([], CONTEXT) == []
    assert await extractor.extract([AIMessage("I'm Alice"), HumanMessage("   ")], CONTEXT) == []
    assert (
        await extractor.extract([HumanMessage(content=[{"type": "image_url", "image_url": {}}])], CONTEXT)
        == []
    )
    assert model.calls == []


async def test_a_model_error_propagates():
    extractor = LLMExtractor(model=fake(RuntimeError("rate limited")))
    with pytest.raises(RuntimeError, match="rate limited"):
        await extractor.extract(conversation(), CONTEXT)


async def test_an_answer_without_structured_output_gives_no_facts():
    model = fake(AIMessage("I could not find anything."))
    assert await LLMExtractor(model=model).extract(conversation(), CONTEXT) == []


async def test_long_input_keeps_the_newest_text_and_cleans_surrogates():
    model = fake({"facts": []})
    messages = [HumanMessage("old " * 10_000, id="h1"), HumanMessage("I live in Par\ud800is", id="h2")]
    await LLMExtractor(LLMOptions(max_input_chars=1000), model=model).extract(messages, CONTEXT)
    data = sent_data(model)
    assert data[-1] == {"n": 2, "text": "I live in Par\ufffdis"}
    assert sum(len(item["text"]) for item in data) == 1000
    model.calls[0][1].content.encode("utf-8")  # sendable


async def test_known_facts_from_the_context_are_listed():
    model = fake({"facts": []})
    known = [
        FactCandidate(attribute="name", value="Alice", cardinality="one"),
        {"subject": "user's sister", "attribute": "name", "value": "Eve"},
    ]
    context = SimpleNamespace(user_id="alice", thread_id="t1", session_id=None, existing_facts=known)
    await LLMExtractor(model=model).extract(conversation(), context)  # type: ignore[arg-type]
    sent = model.calls[0][1].content
    assert "- name = Alice" in sent
    assert "- user's sister.name = Eve" in sent


def test_the_schema_drops_invalid_items_instead_of_failing():
    parsed = ExtractedFacts.model_validate({"facts": [{"attribute": "a", "value": "b"}, {"value": 3}]})
    assert len(parsed.facts) == 1
    schema = ExtractedFacts.model_json_schema()
    assert set(schema["$defs"]["ExtractedFact"]["properties"]) == {
        "subject",
        "attribute",
        "value",
        "cardinality",
        "confidence",
        "message",
    }


def test_a_model_without_structured_output_is_a_type_error():
    with pytest.raises(TypeError, match="does not support structured output"):
        LLMExtractor(model=GenericFakeChatModel(messages=iter([])))


# -- from the configuration ---------------------------------------------------------------


def test_yaml_spec_builds_through_init_chat_model(monkeypatch):
    created = {}

    def init_chat_model(model, **kwargs):
        created.update(model=model, kwargs=kwargs)
        return fake(ALICE)

    monkeypatch.setattr("langchain.chat_models.init_chat_model", init_chat_model)
    spec = PluginSpec(
        use="llm",
        options={"model": "openai:gpt-4o-mini", "model_options": {"temperature": 0}, "max_facts": 5},
    )
    (extractor,) = build_extractors([spec])
    assert isinstance(extractor, LLMExtractor)
    assert created == {"model": "openai:gpt-4o-mini", "kwargs": {"temperature": 0}}
    assert extractor.settings.max_facts == 5


def test_the_real_init_chat_model_runs_without_network_and_names_a_missing_provider():
    # langchain-openai is not a dependency: init_chat_model imports it and fails, offline.
    pytest.importorskip("langchain")
    if "langchain_openai" in sys.modules or _importable("langchain_openai"):
        pytest.skip("langchain-openai is installed")
    with pytest.raises(ConfigError, match=r"long_term\.extractors\[0\]\.options\.model: .*langchain-openai"):
        MemoryManager(
            {"long_term": {"extractors": [{"use": "llm", "options": {"model": "openai:gpt-4o-mini"}}]}}
        )


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_an_unknown_provider_is_a_config_error():
    with pytest.raises(ConfigError, match=r"long_term\.extractors\[1\]\.options\.model: cannot create"):
        build_extractors([PluginSpec(use="rules"), PluginSpec(use="llm", options={"model": "nope-1"})])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"long_term\.extractors\[0\]\.options\.model: required"),
        ({"model": "openai:gpt-4o-mini", "max_facts": 0}, r"long_term\.extractors\[0\]\.options: max_facts"),
        ({"model": "openai:x", "temperature": 0}, r"long_term\.extractors\[0\]\.options: temperature: Extra"),
        ({"model": "a:b", "chat_model": "c:d"}, r"long_term\.extractors\[0\]\.options: .*not both"),
        ({"model": "openai:x", "method": "telepathy"}, r"long_term\.extractors\[0\]\.options: method"),
        ({"chat_model": "no_such_module_xyz:model"}, r"long_term\.extractors\[0\]\.options\.chat_model"),
        (
            {"chat_model": "json:JSONDecoder"},
            r"long_term\.extractors\[0\]\.options\.chat_model: .*not a LangChain",
        ),
        (
            {"chat_model": "json:dumps"},
            r"long_term\.extractors\[0\]\.options\.chat_model: calling 'json:dumps' failed",
        ),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        MemoryManager({"long_term": {"extractors": [{"use": "llm", "options": options}]}})


def test_chat_model_names_an_importable_model_or_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from memory_tiers.testing import FakeStructuredChatModel\n"
        "MODEL = FakeStructuredChatModel(responses=[{'facts': []}])\n"
        "def make():\n"
        "    return MODEL\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("my_models:MODEL", "my_models:make"):
        (extractor,) = build_extractors([PluginSpec(use="llm", options={"chat_model": path})])
        assert type(extractor.model).__name__ == "FakeStructuredChatModel"


def test_missing_langchain_is_a_missing_dependency_error(monkeypatch):
    real_import = builtins.__import__

    def no_langchain(name, *args, **kwargs):
        if name == "langchain" or name.startswith("langchain."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_langchain)
    with pytest.raises(MissingDependencyError, match=r"memory-tiers\[llm\]") as caught:
        build_extractors([PluginSpec(use="llm", options={"model": "openai:gpt-4o-mini"})])
    assert caught.value.extra == "llm"


async def test_in_a_graph_turn_the_facts_are_stored(tmp_path, monkeypatch):
    from helpers import memory_graph, turn_config

    (tmp_path / "graph_turn_models.py").write_text(
        "from memory_tiers.testing import FakeStructuredChatModel\n"
        f"MODEL = FakeStructuredChatModel(responses=[{ALICE!r}])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    extractors = [{"use": "llm", "options": {"chat_model": "graph_turn_models:MODEL"}}]
    manager = MemoryManager({"data_dir": str(tmp_path / "data"), "long_term": {"extractors": extractors}})
    async with manager:
        graph = memory_graph(manager)
        out = await graph.ainvoke(
            {"messages": [("user", "Hi, I'm Alice. I live in Paris.")]}, turn_config("alice", "t1")
        )
        facts = await manager.long_term.list_facts("alice")
    assert {(f.attribute, f.value) for f in facts} == {
        ("name", "Alice"),
        ("location", "Paris"),
        ("likes", "jazz"),
    }
    assert out.get("memory_errors") in (None, [])
    (extractor,) = manager.extractors
    assert len(extractor.model.calls) == 1
