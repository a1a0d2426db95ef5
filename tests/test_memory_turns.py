"""A graph with memory nodes, on the embedded defaults and on real PostgreSQL + Redis."""

from __future__ import annotations

import asyncio

import pytest
from helpers import memory_graph, turn_config, unique
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from memory_tiers import (
    InvalidIdentifierError,
    MemoryManager,
    MemoryState,
    OwnershipError,
    StateSchemaError,
)


async def test_facts_learned_in_one_thread_are_recalled_in_another(memory_config):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke(
            {"messages": [("user", "Hi, I'm Alice. I live in Paris. I like green tea.")]},
            turn_config(alice, unique("t"), unique("s")),
        )
        out = await graph.ainvoke(
            {"messages": [("user", "Who am I?")]}, turn_config(alice, unique("t"), unique("s"))
        )
    assert out["messages"][-1].content == "Hello Alice"
    assert out["profile"] == {"name": "Alice", "location": "Paris"}
    assert {(f["attribute"], f["value"]) for f in out["facts"]} == {
        ("name", "Alice"),
        ("location", "Paris"),
        ("likes", "green tea"),
    }


async def test_session_context_carries_across_turns_and_threads(memory_config):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        for _ in range(2):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t"), session))
        record = await manager.sessions.get(alice, session)
        remaining = await manager.session_store.ttl(alice, session)
    assert record.data == {"turns": 2}
    assert remaining is not None and 0 < remaining <= 3600


async def test_a_thread_of_another_user_is_refused_and_left_untouched(memory_config):
    alice, bob, thread = unique("alice"), unique("bob"), unique("t")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        config = turn_config(alice, thread)
        await graph.ainvoke({"messages": [("user", "I'm Alice. I live in Paris.")]}, config)
        before = await graph.aget_state(config)
        with pytest.raises(OwnershipError):
            await graph.ainvoke({"messages": [("user", "I live in Mars.")]}, turn_config(bob, thread))
        after = await graph.aget_state(config)
        bob_facts = await manager.long_term.list_facts(bob)
        owner = await manager.long_term.thread_owner(thread)
    assert after.values["messages"] == before.values["messages"]
    assert after.config == before.config
    assert bob_facts == []
    assert owner == alice


async def test_load_node_refuses_a_foreign_thread_even_without_the_guarded_checkpointer(
    memory_config,
):
    # A user who compiles with their own checkpointer still gets the node's check.
    alice, bob, thread = unique("alice"), unique("bob"), unique("t")
    async with MemoryManager(memory_config) as manager:
        await manager.long_term.claim_thread(alice, thread)
        with pytest.raises(OwnershipError):
            await manager.nodes.load.ainvoke({"messages": []}, turn_config(bob, thread))


async def test_a_session_of_another_user_is_refused(memory_config):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t"), session))
        with pytest.raises(OwnershipError):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(bob, unique("t"), session))
        with pytest.raises(OwnershipError):
            await manager.sessions.get(bob, session)
        assert await manager.sessions.list(bob) == []
        assert (await manager.sessions.get(alice, session)).data == {"turns": 1}


async def test_ids_can_come_from_the_runtime_context(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke(
            {"messages": [("user", "My name is Alice.")]},
            {"configurable": {"thread_id": thread}},
            context={"user_id": alice, "session_id": unique("s")},
        )
        assert (await manager.long_term.get_profile(alice)).document == {"name": "Alice"}
        assert await manager.long_term.thread_owner(thread) == alice


def test_sync_invoke_runs_the_same_nodes(memory_config):
    alice, thread = unique("alice"), unique("t")
    with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        graph.invoke({"messages": [("user", "Call me Al.")]}, turn_config(alice, thread))
        out = graph.invoke({"messages": [("user", "hi")]}, turn_config(alice, thread))
        profile = manager.run(manager.long_term.get_profile(alice))
    assert out["messages"][-1].content == "Hello Al"
    assert len(out["messages"]) == 4
    assert profile.document == {"name": "Al"}


async def test_sync_invoke_from_inside_the_managers_loop_is_a_clear_error(tmp_path):
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        with pytest.raises(Exception, match="ainvoke"):
            manager.nodes.load_session.invoke({"messages": []}, turn_config("alice", "t1"))


async def test_replaying_a_turns_save_creates_nothing_new(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        config = turn_config(alice, thread)
        await graph.ainvoke({"messages": [("user", "I like tea. I live in Rome.")]}, config)
        state = (await graph.aget_state(config)).values
        before = await manager.long_term.list_facts(alice, include_history=True)
        # Re-run the save of the same turn as a crash-and-resume would, cursor not yet advanced.
        await manager.nodes.save.ainvoke({**state, "memory_cursor": None}, config)
        after = await manager.long_term.list_facts(alice, include_history=True)
    assert [f.id for f in after] == [f.id for f in before]


async def test_a_new_value_supersedes_the_old_one_which_stays_in_history(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "I live in Paris.")]}, turn_config(alice, thread))
        await graph.ainvoke({"messages": [("user", "I moved to Lyon.")]}, turn_config(alice, thread))
        current = await manager.long_term.list_facts(alice)
        history = await manager.long_term.list_facts(alice, include_history=True)
        profile = await manager.long_term.get_profile(alice)
    assert [(f.attribute, f.value) for f in current] == [("location", "Lyon")]
    paris = next(f for f in history if f.value == "Paris")
    lyon = next(f for f in history if f.value == "Lyon")
    assert paris.superseded_by == lyon.id and paris.valid_to is not None
    assert profile.document == {"location": "Lyon"} and profile.version == 2


async def test_concurrent_saves_of_the_same_fact_leave_one_row(memory_config):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        await asyncio.gather(
            *(
                graph.ainvoke({"messages": [("user", "I love jazz.")]}, turn_config(alice, unique("t")))
                for _ in range(8)
            )
        )
        facts = await manager.long_term.list_facts(alice, include_history=True)
    assert [(f.attribute, f.value) for f in facts] == [("likes", "jazz")]


@pytest.mark.parametrize(
    "configurable",
    [
        {"thread_id": "t1"},
        {"thread_id": "t1", "user_id": ""},
        {"thread_id": "t1", "user_id": "a" * 129},
        {"thread_id": "t1", "user_id": "alice}:x"},
        {"thread_id": "t1", "user_id": "alice", "session_id": "s 1"},
        {"thread_id": "t1", "user_id": 42},
    ],
    ids=["missing", "empty", "oversized", "hash-tag", "space", "not-a-string"],
)
async def test_bad_ids_are_rejected_before_anything_is_written(tmp_path, configurable):
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        graph = memory_graph(manager)
        with pytest.raises(InvalidIdentifierError):
            await graph.ainvoke({"messages": [("user", "I'm Eve.")]}, {"configurable": configurable})
        assert await manager.long_term.list_threads("alice") == []
        assert [c async for c in manager.checkpointer.alist(None)] == []


async def test_a_state_without_messages_is_a_typed_error(tmp_path):
    class Bare(TypedDict):
        value: str

    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        builder = StateGraph(Bare)
        builder.add_node("load_memory", manager.nodes.load)
        builder.add_edge(START, "load_memory")
        builder.add_edge("load_memory", END)
        graph = builder.compile()
        with pytest.raises(StateSchemaError, match="messages"):
            await graph.ainvoke({"value": "x"}, turn_config("alice", "t1"))


async def test_messages_given_as_dicts_are_read_and_a_non_message_is_a_typed_error(memory_config):
    """The nodes read a caller's message dicts as messages. They read from the newest message
    back (the latest user message; those after the save cursor): a non-message there is refused
    before either tier is touched, one older than what they read is not looked at."""
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        config = turn_config(alice, unique("t"), session)
        turn = [{"role": "user", "content": "I live in Paris.", "id": "m1"}]
        update = await manager.nodes.save.ainvoke({"messages": turn}, config)
        assert update["memory_cursor"] == "m1"
        loaded = await manager.nodes.load.ainvoke({"messages": [*turn, ("user", "Where do I live?")]}, config)
        assert [fact["value"] for fact in loaded["facts"]] == ["Paris"]
        store = manager.session_store
        await store.client.expire(store.keys.session(alice, session), 50)
        for node in (manager.nodes.load, manager.nodes.save):
            with pytest.raises(StateSchemaError, match="not a message"):
                await node.ainvoke({"messages": [HumanMessage("I like tea.", id="m2"), 42]}, config)
        assert await store.client.ttl(store.keys.session(alice, session)) <= 50  # no read slid it
        assert [f.value for f in await manager.long_term.list_facts(alice)] == ["Paris"]
        saved = HumanMessage("I live in Paris.", id="m1")
        older = {"messages": [42, saved, HumanMessage("I like tea.", id="m3")], "memory_cursor": "m1"}
        assert (await manager.nodes.save.ainvoke(older, config))["memory_cursor"] == "m3"


async def test_per_tier_nodes_touch_only_their_tier(memory_config):
    alice, thread, session = unique("alice"), unique("t"), unique("s")

    def agent(state: MemoryState):
        return {"messages": [AIMessage("ok")], "session": {"seen": True}}

    async with MemoryManager(memory_config) as manager:
        builder = StateGraph(MemoryState)
        builder.add_node("load_session", manager.nodes.load_session)
        builder.add_node("agent", agent)
        builder.add_node("save_session", manager.nodes.save_session)
        builder.add_edge(START, "load_session")
        builder.add_edge("load_session", "agent")
        builder.add_edge("agent", "save_session")
        builder.add_edge("save_session", END)
        graph = builder.compile(checkpointer=manager.checkpointer)
        out = await graph.ainvoke(
            {"messages": [("user", "My name is Alice.")]}, turn_config(alice, thread, session)
        )
        assert "profile" not in out
        assert (await manager.sessions.get(alice, session)).data == {"seen": True}
        assert await manager.long_term.list_facts(alice) == []


async def test_restating_a_known_fact_does_not_bump_the_profile_version(memory_config):
    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        graph = memory_graph(manager)
        for _ in range(3):
            await graph.ainvoke({"messages": [("user", "I live in Oslo.")]}, turn_config(alice, unique("t")))
        profile = await manager.long_term.get_profile(alice)
    assert profile.document == {"location": "Oslo"}
    assert profile.version == 1
