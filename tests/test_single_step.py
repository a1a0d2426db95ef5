"""``manager.nodes.wrap(agent)``: memory around the agent in one super-step, one checkpoint."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import echo_agent, memory_graph, turn_config, unique
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from memory_tiers import MemoryManager, MemoryState, OwnershipError, StateSchemaError


def wrapped_graph(manager: MemoryManager, agent: Any = echo_agent) -> Any:
    builder = StateGraph(MemoryState)
    builder.add_node("agent", manager.nodes.wrap(agent))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=manager.checkpointer, store=manager.store)


async def checkpoints(graph: Any, config: dict[str, Any]) -> int:
    return len([s async for s in graph.aget_state_history(config)])


async def test_the_wrapped_agent_remembers_like_the_three_node_graph(memory_config):
    alice, bob = unique("alice"), unique("bob")
    async with MemoryManager(memory_config) as manager:
        wrapped, chained = wrapped_graph(manager), memory_graph(manager)
        results = {}
        for name, graph in (("wrapped", wrapped), ("chained", chained)):
            user = f"{alice}-{name}"
            first, second, session = unique("t"), unique("t"), unique("s")
            await graph.ainvoke(
                {"messages": [("user", "Hi, I'm Alice. I live in Paris.")]}, turn_config(user, first)
            )
            turn2 = await graph.ainvoke(
                {"messages": [("user", "Hello?")]}, turn_config(user, second, session)
            )
            turn3 = await graph.ainvoke(
                {"messages": [("user", "Me again")]}, turn_config(user, second, session)
            )
            facts = await manager.long_term.list_facts(user)
            results[name] = (
                turn2["messages"][-1].content,
                turn2["profile"],
                turn3["session"],
                sorted((f.attribute, f.value) for f in facts),
                turn3["memory_cursor"] == turn3["messages"][-1].id,
                await checkpoints(graph, turn_config(user, second)),
            )
        with pytest.raises(OwnershipError):
            await wrapped.ainvoke({"messages": [("user", "hi")]}, turn_config(bob, second))

    wrapped_result, chained_result = results["wrapped"], results["chained"]
    assert wrapped_result[:5] == chained_result[:5]
    assert wrapped_result[0] == "Hello Alice"
    assert wrapped_result[3] == [("location", "Paris"), ("name", "Alice")]
    # One checkpoint per super-step: the chain's load and save nodes cost two more per turn.
    assert chained_result[5] - wrapped_result[5] == 2 * 2


def test_the_wrapped_agent_serves_sync_graphs(memory_config):
    alice, thread = unique("alice"), unique("t")
    with MemoryManager(memory_config) as manager:
        graph = wrapped_graph(manager)
        graph.invoke({"messages": [("user", "My name is Alice.")]}, turn_config(alice, thread))
        result = graph.invoke({"messages": [("user", "Hi")]}, turn_config(alice, thread))

    assert result["messages"][-1].content == "Hello Alice"
    assert result["session"] == {"turns": 2}


async def test_a_state_holding_a_non_message_fails_before_the_agent_runs(memory_config):
    calls = []
    alice = unique("alice")

    def agent(state: MemoryState) -> dict[str, Any]:
        calls.append(state)
        return {"messages": [AIMessage("hi")]}

    async with MemoryManager(memory_config) as manager:
        node = manager.nodes.wrap(agent)
        state = {"messages": [42, HumanMessage("I like tea.")]}  # the wrong one is not the newest
        with pytest.raises(StateSchemaError, match="not a message"):
            await node.ainvoke(state, turn_config(alice, unique("t"), unique("s")))
        graph = wrapped_graph(manager, lambda state: {"messages": [42]})
        with pytest.raises(StateSchemaError, match="the agent's messages are not messages"):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t"), unique("s")))
    assert calls == []


async def test_an_agent_that_returns_no_dict_is_a_clear_error(tmp_path):
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        graph = wrapped_graph(manager, lambda state: "not an update")
        with pytest.raises(StateSchemaError, match="the agent returned str, not a dict"):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config("alice", "t1"))


async def test_the_wrapped_agent_takes_config_and_store_as_a_node_does(memory_config):
    # Parameters are passed as LangGraph passes them to a node: config, and the graph's store.
    seen: dict[str, Any] = {}

    async def agent(state: MemoryState, config: RunnableConfig, store: BaseStore) -> dict[str, Any]:
        seen["user"] = config["configurable"]["user_id"]
        seen["store"] = store
        return {"messages": [("ai", "ok")]}

    alice = unique("alice")
    async with MemoryManager(memory_config) as manager:
        graph = wrapped_graph(manager, agent)
        result = await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t")))
        store = manager.store

    assert result["messages"][-1].content == "ok"
    assert seen == {"user": alice, "store": store}


async def test_a_sync_wrapped_agent_runs_off_the_event_loop_with_its_runtime(memory_config):
    # A sync agent may block (a sync model call): as a sync LangGraph node, it runs in a worker
    # thread, not on the loop that serves the other turns, and gets the run's runtime.
    seen: dict[str, Any] = {}

    def agent(state: MemoryState, runtime: Runtime) -> dict[str, Any]:
        seen["thread"] = threading.current_thread()
        seen["store"] = runtime.store
        return {"messages": [("ai", "ok")]}

    async with MemoryManager(memory_config) as manager:
        graph = wrapped_graph(manager, agent)
        await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(unique("alice"), unique("t")))
        store = manager.store

    assert seen["thread"] is not threading.current_thread()
    assert seen["store"] is store


async def test_a_wrapped_turn_checkpoints_only_the_memory_that_changed(memory_config):
    """A turn that learns nothing new and leaves the session alone keeps the profile, session
    and version channels at the checkpoint versions of the turn before: no new copy is stored,
    and the state is the same."""
    alice = unique("alice")
    config = turn_config(alice, unique("t"), unique("s"))

    def agent(state: MemoryState) -> dict[str, Any]:
        return {"messages": [AIMessage(f"Hello {state['profile'].get('name')}")]}

    async with MemoryManager(memory_config) as manager:
        await manager.sessions.start(alice, config["configurable"]["session_id"], {"topic": "travel"})
        graph = wrapped_graph(manager, agent)
        await graph.ainvoke({"messages": [("user", "Hi, I'm Alice. I live in Paris.")]}, config)
        await graph.ainvoke({"messages": [("user", "Hello?")]}, config)
        before = (await manager.checkpointer.aget_tuple(config)).checkpoint["channel_versions"]
        state = await graph.ainvoke({"messages": [("user", "How are you?")]}, config)
        after = (await manager.checkpointer.aget_tuple(config)).checkpoint["channel_versions"]
    unchanged = ("profile", "session", "memory_version", "memory_errors")
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}
    assert after["messages"] != before["messages"] and after["memory_cursor"] != before["memory_cursor"]
    assert state["profile"] == {"name": "Alice", "location": "Paris"}
    assert state["session"] == {"topic": "travel"}
    assert state["messages"][-1].content == "Hello Alice"
    assert state["memory_cursor"] == state["messages"][-1].id


def test_a_sync_wrapped_turn_also_checkpoints_only_what_changed(memory_config):
    """The same through ``graph.invoke``; a memory key the agent returns is written even when
    its value did not change (the agent's update is the agent's)."""
    alice = unique("alice")
    config = turn_config(alice, unique("t"), unique("s"))

    def agent(state: MemoryState) -> dict[str, Any]:
        return {"messages": [AIMessage("ok")], "session": dict(state["session"])}

    with MemoryManager(memory_config) as manager:
        graph = wrapped_graph(manager, agent)
        for text in ("Hi, I'm Alice.", "Hello?"):
            graph.invoke({"messages": [("user", text)]}, config)
        before = manager.checkpointer.get_tuple(config).checkpoint["channel_versions"]
        graph.invoke({"messages": [("user", "How are you?")]}, config)
        after = manager.checkpointer.get_tuple(config).checkpoint["channel_versions"]
    assert after["profile"] == before["profile"] and after["memory_version"] == before["memory_version"]
    assert after["session"] != before["session"]
