"""Recall: the facts the load node brings are the ones relevant to this turn, in one query."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from langchain_core.embeddings import Embeddings

from memory_tiers import FactCandidate, MemoryManager
from memory_tiers.long_term.recall import search_terms

LIKES = ["pizza", "jazz music", "hiking in the mountains", "chess", "old cars", "gardening", "sailing"]


def config_with(memory_config: dict[str, Any], **recall: Any) -> dict[str, Any]:
    long_term = {**dict(memory_config.get("long_term") or {}), "recall": recall}
    return {**memory_config, "long_term": long_term}


class ConceptEmbeddings(Embeddings):
    """Deterministic embeddings over a few concepts: texts about food are close to each other
    even when they share no word."""

    CONCEPTS = (
        ("pizza", "hungry", "dinner", "eat", "food", "restaurant"),
        ("jazz", "music", "concert", "song"),
        ("hiking", "mountains", "trail", "outdoors"),
    )

    def _vector(self, text: str) -> list[float]:
        words = set(search_terms(text))
        return [float(len(words & set(concept))) for concept in self.CONCEPTS] + [0.1]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


async def seed(manager: MemoryManager, user: str) -> None:
    await manager.long_term.add_facts(user, [FactCandidate(attribute="likes", value=v) for v in LIKES])


async def test_the_load_node_recalls_the_facts_this_turn_is_about(memory_config):
    alice = unique("alice")
    async with MemoryManager(config_with(memory_config, k=2)) as manager:
        await seed(manager, alice)
        graph = memory_graph(manager)
        about_jazz = await graph.ainvoke(
            {"messages": [("user", "Any good jazz clubs around?")]}, turn_config(alice, unique("t"))
        )
        about_hiking = await graph.ainvoke(
            {"messages": [("user", "Plan a trip to the mountains")]}, turn_config(alice, unique("t"))
        )

    assert about_jazz["facts"][0]["value"] == "jazz music"
    assert about_hiking["facts"][0]["value"] == "hiking in the mountains"
    assert len(about_jazz["facts"]) == len(about_hiking["facts"]) == 2
    assert about_jazz["facts"][0]["score"] > about_jazz["facts"][1]["score"]


async def test_pinned_facts_come_on_every_turn_besides_the_top_k(memory_config):
    alice = unique("alice")
    async with MemoryManager(config_with(memory_config, k=1)) as manager:
        await seed(manager, alice)
        await manager.long_term.add_facts(
            alice, [FactCandidate(attribute="allergy", value="peanuts")], pinned=True
        )
        context = await manager.long_term.load_context(alice, None, "I love jazz")

    assert [(f.value, f.pinned) for f in context.facts] == [("peanuts", True), ("jazz music", False)]


async def test_weights_decide_between_relevance_and_confidence(memory_config):
    alice = unique("alice")
    confidence_only = {"relevance": 0.0, "recency": 0.0, "confidence": 1.0}
    async with MemoryManager(config_with(memory_config, k=1, weights=confidence_only)) as manager:
        await seed(manager, alice)
        await manager.long_term.add_facts(
            alice, [FactCandidate(attribute="likes", value="tea", confidence=1.0)]
        )
        context = await manager.long_term.load_context(alice, None, "I love jazz")

    assert [f.value for f in context.facts] == ["tea"]


async def test_recall_and_search_never_cross_users(memory_config):
    alice, bob = unique("alice"), unique("bob")
    async with MemoryManager(memory_config) as manager:
        await manager.long_term.add_facts(bob, [FactCandidate(attribute="likes", value="secret jazz canary")])
        await manager.long_term.add_facts(alice, [FactCandidate(attribute="likes", value="tea")])
        context = await manager.long_term.load_context(alice, None, "jazz canary secret")
        found = await manager.long_term.search_facts(alice, "jazz canary secret")

    assert [f.value for f in context.facts] == ["tea"]
    assert found == []


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("'; DROP TABLE mt_facts; --", []),
        ('jazz" OR 1=1 OR "', ["jazz music"]),
        ("jazz AND NOT NEAR(x) * ^ : & | ! <-> (", ["jazz music"]),
        ("\x00\udcff" + "x" * 5000, []),
        ("", []),
    ],
)
async def test_hostile_message_text_is_only_ever_data(memory_config, query, found):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        await seed(manager, alice)
        context = await manager.long_term.load_context(alice, None, query)
        searched = await manager.long_term.search_facts(alice, query)
        after = await manager.long_term.list_facts(alice)

    assert len(context.facts) == len(LIKES)  # k=8 > 7 facts: everything, nothing broke
    assert [f.value for f in searched] == found
    assert len(after) == len(LIKES)


async def test_accents_do_not_change_what_is_found(memory_config):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        await manager.long_term.add_facts(
            alice,
            [
                FactCandidate(attribute="location", value="São Paulo"),
                FactCandidate(attribute="likes", value="crème brûlée"),
                FactCandidate(attribute="likes", value="jazz"),
            ],
        )
        searched = {
            query: [f.value for f in await manager.long_term.search_facts(alice, query)]
            for query in ("são", "sao", "SÃO", "creme brulee", "Crème")
        }
        recalled = [
            (await manager.long_term.load_context(alice, None, query)).facts[0].value
            for query in ("I live in são", "I live in sao")
        ]

    assert searched["são"] == searched["sao"] == searched["SÃO"] == ["São Paulo"]
    assert searched["creme brulee"] == searched["Crème"] == ["crème brûlée"]
    assert recalled == ["São Paulo", "São Paulo"]


async def test_one_users_ranking_does_not_depend_on_other_users_facts(memory_config):
    alice = unique("alice")
    query = "Any good jazz clubs around?"
    async with MemoryManager(config_with(memory_config, k=2)) as manager:
        await seed(manager, alice)
        before = await manager.long_term.load_context(alice, None, query)
        for _ in range(20):  # many others who like jazz make "jazz" a common word overall
            await manager.long_term.add_facts(
                unique("other"), [FactCandidate(attribute="likes", value="jazz")]
            )
        after = await manager.long_term.load_context(alice, None, query)

    assert [f.value for f in after.facts] == [f.value for f in before.facts]
    assert after.facts[0].value == "jazz music"
    # one of the message's words: relevance 0.5, the same on every backend
    assert after.facts[0].score - after.facts[1].score == pytest.approx(0.5, abs=0.01)


async def test_search_returns_up_to_k_even_beyond_the_recall_k(memory_config):
    alice = unique("alice")
    async with MemoryManager(config_with(memory_config, k=1)) as manager:
        await manager.long_term.add_facts(
            alice, [FactCandidate(attribute="likes", value=f"jazz record {i}") for i in range(5)]
        )
        found = await manager.long_term.search_facts(alice, "jazz", k=3)

    assert len(found) == 3


async def test_facts_stored_before_embeddings_get_them_when_seen_again(memory_config):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        await seed(manager, alice)
    async with MemoryManager(config_with(memory_config, k=1), embeddings=ConceptEmbeddings()) as manager:
        hungry_before = await manager.long_term.load_context(alice, None, "I'm so hungry")
        await manager.long_term.add_facts(alice, [FactCandidate(attribute="likes", value="pizza")])
        hungry_after = await manager.long_term.load_context(alice, None, "I'm so hungry")

    # Without vectors nothing gets a similarity boost (recency + confidence only, about 0.54).
    assert hungry_before.facts[0].score == pytest.approx(0.3 + 0.3 * 0.8, abs=0.01)
    assert [f.value for f in hungry_after.facts] == ["pizza"]
    assert hungry_after.facts[0].score > 1.4


async def test_a_fact_seen_again_without_embeddings_keeps_its_vector(memory_config):
    alice = unique("alice")
    semantic = config_with(memory_config, k=1)
    async with MemoryManager(semantic, embeddings=ConceptEmbeddings()) as manager:
        await seed(manager, alice)
    async with MemoryManager(memory_config) as manager:  # a deployment without embeddings, for a while
        await manager.long_term.add_facts(alice, [FactCandidate(attribute="likes", value="pizza")])
    async with MemoryManager(semantic, embeddings=ConceptEmbeddings()) as manager:
        hungry = await manager.long_term.load_context(alice, None, "I'm so hungry")

    assert [f.value for f in hungry.facts] == ["pizza"]
    assert hungry.facts[0].score > 1.4  # its similarity counts: the vector was kept


async def test_semantic_recall_finds_facts_that_share_no_word_with_the_message(memory_config):
    alice = unique("alice")
    config = config_with(memory_config, k=1)
    async with MemoryManager(config, embeddings=ConceptEmbeddings()) as manager:
        await seed(manager, alice)
        context = await manager.long_term.load_context(alice, None, "I'm so hungry, where should we eat?")
        found = await manager.long_term.search_facts(alice, "any concert tonight?", k=1)

    assert [f.value for f in context.facts] == ["pizza"]
    assert [f.value for f in found] == ["jazz music"]


async def test_semantic_recall_is_configured_by_an_import_path(tmp_path):
    config = {
        "data_dir": str(tmp_path),
        "long_term": {"recall": {"k": 1, "semantic": {"embeddings": "test_recall:ConceptEmbeddings"}}},
    }
    async with MemoryManager(config) as manager:
        await seed(manager, "alice")
        context = await manager.long_term.load_context("alice", None, "dinner plans?")

    assert isinstance(manager.embeddings, ConceptEmbeddings)
    assert [f.value for f in context.facts] == ["pizza"]
