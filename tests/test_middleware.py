"""`manager.middleware()` gives a LangChain ``create_agent`` agent the three tiers, with the
nodes' guarantees, on the embedded defaults and on real PostgreSQL + Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fake_agents import SYSTEM_PROMPT, fake_model, memory_agent, tool_call
from helpers import turn_config, unique
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.runnables import RunnableLambda

from memory_tiers import InvalidIdentifierError, MemoryManager, MissingDependencyError, OwnershipError


async def test_the_model_sees_what_another_thread_taught_it_but_the_thread_does_not_keep_it(
    memory_config,
):
    alice, thread = unique("alice"), unique("t")
    model = fake_model()
    async with MemoryManager(memory_config) as manager:
        agent = memory_agent(manager, model)
        await agent.ainvoke(
            {"messages": [("user", "Hi, I'm Alice. I live in Paris. I like green tea.")]},
            turn_config(alice, unique("t"), unique("s")),
        )
        learned = await manager.long_term.list_facts(alice)
        model.calls.clear()
        out = await agent.ainvoke({"messages": [("user", "Where do I live?")]}, turn_config(alice, thread))
        checkpointed = (await agent.aget_state(turn_config(alice, thread))).values["messages"]
    assert {(f.attribute, f.value) for f in learned} == {
        ("name", "Alice"),
        ("location", "Paris"),
        ("likes", "green tea"),
    }
    (sent,) = model.calls
    system, question = sent
    assert isinstance(system, SystemMessage)
    assert system.text.startswith(SYSTEM_PROMPT + "\n\n<memory>\n")
    assert '- profile.location = "Paris"' in system.text
    assert '- user.likes = "green tea"' in system.text
    assert question.text == "Where do I live?"
    assert [m.type for m in checkpointed] == ["human", "ai"]
    assert all("<memory>" not in m.text for m in checkpointed)
    assert out["profile"] == {"name": "Alice", "location": "Paris"}


async def test_every_model_call_of_a_tool_loop_sees_memory_loaded_once(memory_config):
    alice = unique("alice")
    model = fake_model(tool_call("search_memory", query="tea"), AIMessage("You like tea."))
    async with MemoryManager(memory_config) as manager:
        await manager.long_term.patch_profile(alice, {"name": "Alice"})
        agent = memory_agent(manager, model, tools=True)
        out = await agent.ainvoke(
            {"messages": [("user", "What do I drink?")]}, turn_config(alice, unique("t"))
        )
    assert len(model.calls) == 2
    assert all('profile.name = "Alice"' in sent[0].text for sent in model.calls)
    assert [m.type for m in out["messages"]] == ["human", "ai", "tool", "ai"]


async def test_another_user_on_the_same_thread_is_refused_and_the_thread_is_unchanged(memory_config):
    alice, bob, thread = unique("alice"), unique("bob"), unique("t")
    model = fake_model()
    async with MemoryManager(memory_config) as manager:
        agent = memory_agent(manager, model)
        await agent.ainvoke(
            {"messages": [("user", "I'm Alice. I live in Paris.")]}, turn_config(alice, thread)
        )
        before = await agent.aget_state(turn_config(alice, thread))
        calls = len(model.calls)
        with pytest.raises(OwnershipError):
            await agent.ainvoke({"messages": [("user", "I live on Mars.")]}, turn_config(bob, thread))
        after = await agent.aget_state(turn_config(alice, thread))
        bob_facts = await manager.long_term.list_facts(bob)
        owner = await manager.long_term.thread_owner(thread)
    assert after.values["messages"] == before.values["messages"]
    assert after.config == before.config
    assert len(model.calls) == calls
    assert bob_facts == [] and owner == alice


def test_a_sync_agent_works_with_the_sync_manager(memory_config):
    alice, thread = unique("alice"), unique("t")
    model = fake_model()
    with MemoryManager(memory_config) as manager:
        agent = memory_agent(manager, model)
        agent.invoke({"messages": [("user", "Call me Al.")]}, turn_config(alice, thread))
        out = agent.invoke({"messages": [("user", "hi")]}, turn_config(alice, thread))
        profile = manager.run(manager.long_term.get_profile(alice))
    assert profile.document == {"name": "Al"}
    assert 'profile.name = "Al"' in model.calls[-1][0].text
    assert [m.type for m in out["messages"]] == ["human", "ai", "human", "ai"]


async def test_ids_can_come_from_the_runtime_context(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        agent = memory_agent(manager, fake_model())
        await agent.ainvoke(
            {"messages": [("user", "My name is Alice.")]},
            {"configurable": {"thread_id": thread}},
            context={"user_id": alice},
        )
        assert (await manager.long_term.get_profile(alice)).document == {"name": "Alice"}
        assert await manager.long_term.thread_owner(thread) == alice


async def test_a_run_without_a_user_is_refused_before_anything_is_written(tmp_path):
    model = fake_model()
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        agent = memory_agent(manager, model)
        with pytest.raises(InvalidIdentifierError):
            await agent.ainvoke({"messages": [("user", "I'm Eve.")]}, {"configurable": {"thread_id": "t1"}})
        assert model.calls == []
        assert [c async for c in manager.checkpointer.alist(None)] == []


async def test_saving_a_turn_again_after_a_crash_stores_nothing_new(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        middleware = manager.middleware()
        agent = create_agent(fake_model(), middleware=[middleware], checkpointer=manager.checkpointer)
        config = turn_config(alice, thread)
        await agent.ainvoke({"messages": [("user", "I like tea. I live in Rome.")]}, config)
        state = (await agent.aget_state(config)).values
        before = await manager.long_term.list_facts(alice, include_history=True)
        observations = [await manager.long_term.fact_observations(alice, f.id) for f in before]
        # The save ran, then the process died before its checkpoint: on resume the hook runs
        # again from the same checkpoint, with the cursor not yet advanced.
        resumed = {
            "configurable": {**config["configurable"], "checkpoint_map": {"": before[0].checkpoint_id}}
        }
        hook = RunnableLambda(lambda s: s, afunc=lambda s: middleware.aafter_agent(s, None))
        await hook.ainvoke({**state, "memory_cursor": None}, resumed)
        after = await manager.long_term.list_facts(alice, include_history=True)
        again = [await manager.long_term.fact_observations(alice, f.id) for f in after]
    assert [f.id for f in after] == [f.id for f in before]
    assert again == observations


async def test_replaying_a_turn_from_history_adds_no_duplicate_facts(memory_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(memory_config) as manager:
        agent = memory_agent(manager, fake_model())
        config = turn_config(alice, thread)
        await agent.ainvoke({"messages": [("user", "I like tea. I live in Rome.")]}, config)
        before = await manager.long_term.list_facts(alice, include_history=True)
        history = [s async for s in agent.aget_state_history(config)]
        start = next(s for s in history if s.next == ("MemoryMiddleware.before_agent",))
        await agent.ainvoke(None, {"configurable": {**start.config["configurable"], "user_id": alice}})
        after = await manager.long_term.list_facts(alice, include_history=True)
        profile = await manager.long_term.get_profile(alice)
    assert [f.id for f in after] == [f.id for f in before]
    assert profile.version == 1


def test_importing_memory_tiers_does_not_import_langchain():
    code = "import sys, memory_tiers, memory_tiers.integrations; print('langchain' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_without_langchain_the_middleware_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "memory_tiers.integrations.middleware", raising=False)
    monkeypatch.setitem(sys.modules, "langchain.agents.middleware", None)
    manager = MemoryManager({"data_dir": str(tmp_path)})
    with pytest.raises(MissingDependencyError, match=r"memory-tiers\[llm\]"):
        manager.middleware()
