"""The offline `rules` extractor: patterns per language, and what it reads of a message."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from memory_tiers import ConfigError, MemoryManager
from memory_tiers.extractors import ExtractionContext, RulesExtractor, RulesOptions
from memory_tiers.extractors.rules import RULES

CONTEXT = ExtractionContext("alice", "t1", None)


def found(text: str, *languages: str) -> list[tuple[str, str]]:
    extractor = RulesExtractor(RulesOptions(languages=list(languages or ["en"])))
    return [(fact.attribute, fact.value) for fact in extractor.extract_text(text)]


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("Hi, I'm Alice. I live in Paris.", [("name", "Alice"), ("location", "Paris")]),
        (
            "My name is Bob Stone and I moved to Berlin last year.",
            [("name", "Bob Stone"), ("location", "Berlin")],
        ),
        ("Call me Ishmael.", [("name", "Ishmael")]),
        ("I'm tired. I'm Élodie.", [("name", "Élodie")]),
        ("I really enjoy museums, but I hate traffic.", [("likes", "museums"), ("dislikes", "traffic")]),
        ("I prefer tea over coffee.", [("preference", "tea over coffee")]),
        ("What's the weather like tomorrow?", []),
    ],
)
def test_english(text, facts):
    assert found(text) == facts


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("Bonjour, je suis Alice. J'habite à Paris.", [("name", "Alice"), ("location", "Paris")]),
        (
            "Je m\u2019appelle Jean-Pierre Martin, je vis à Lyon depuis 2010.",
            [("name", "Jean-Pierre Martin"), ("location", "Lyon")],
        ),
        (
            "Mon prénom est Élodie. J'ai déménagé en Bretagne l'an dernier.",
            [("name", "Élodie"), ("location", "Bretagne")],
        ),
        ("Appelle-moi Max !", [("name", "Max")]),
        (
            "J'aime bien les chats mais je déteste les chiens.",
            [("likes", "les chats"), ("dislikes", "les chiens")],
        ),
        ("J'adore le chocolat et je préfère le thé.", [("likes", "le chocolat"), ("preference", "le thé")]),
        (
            "Je n'aime pas la pluie. J'aime pas le froid.",
            [("dislikes", "la pluie"), ("dislikes", "le froid")],
        ),
        # Not facts: "je suis" + adjective, and "je vis" meaning "I saw".
        ("Je suis fatiguée. Je vis un film hier.", []),
    ],
)
def test_french(text, facts):
    assert found(text, "fr") == facts


def test_each_language_reads_only_its_own_patterns():
    mixed = "I live in Oslo. J'habite à Paris."
    assert found(mixed, "en") == [("location", "Oslo")]
    assert found(mixed, "fr") == [("location", "Paris")]
    assert found(mixed, "en", "fr") == [("location", "Oslo"), ("location", "Paris")]
    assert sorted(RULES) == ["en", "fr"]


def test_an_unknown_language_is_a_config_error_listing_the_known_ones():
    with pytest.raises(
        ConfigError,
        match=r"long_term\.extractors\[0\].*no rules for languages \['xx'\]; known: \['en', 'fr'\]",
    ):
        MemoryManager({"long_term": {"extractors": [{"use": "rules", "options": {"languages": ["xx"]}}]}})


def test_french_from_the_configuration():
    manager = MemoryManager(
        {"long_term": {"extractors": [{"use": "rules", "options": {"languages": ["en", "fr"]}}]}}
    )
    (extractor,) = manager.extractors
    assert [f.value for f in extractor.extract([HumanMessage("Je m'appelle Léa.")], CONTEXT)] == ["Léa"]


def test_only_human_messages_are_read_with_their_ids():
    extractor = RulesExtractor()
    messages = [
        AIMessage("I'm Claude and I live in a datacenter.", id="a1"),
        HumanMessage("I live in Rome.", id="h1"),
        HumanMessage(
            content=[{"type": "text", "text": "I love jazz."}, {"type": "image_url", "image_url": {}}],
            id="h2",
        ),
        HumanMessage(content=["Call me Ada."], id="h3"),
    ]
    facts = extractor.extract(messages, CONTEXT)
    assert [(f.attribute, f.value, f.message_id) for f in facts] == [
        ("location", "Rome", "h1"),
        ("likes", "jazz", "h2"),
        ("name", "Ada", "h3"),
    ]


def test_lone_surrogates_do_not_break_a_fact():
    assert found("I live in Par\ud800is.") == [("location", "Par\ufffdis")]


def test_only_the_first_max_chars_of_a_message_are_scanned():
    text = "I live in Oslo. " + "x" * 100 + " I like tea."
    extractor = RulesExtractor(RulesOptions(max_chars=50))
    assert [f.value for f in extractor.extract_text(text)] == ["Oslo"]
    assert [f.value for f in RulesExtractor().extract_text(text)] == ["Oslo", "tea"]
