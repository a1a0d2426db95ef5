"""A graph that remembers things per user in `manager.store`, LangGraph's BaseStore API.

Run it from anywhere: ``python examples/store_graph.py``. It needs no server and no API key
(embedded SQLite, in a temporary directory) and shows that the store is scoped to the run's
user: Bob's run, using the very same namespace and key, cannot see what Alice stored.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from memory_tiers import MemoryManager

NAMESPACE = ("preferences",)  # no user in it: the store adds the scope itself


class State(TypedDict, total=False):
    text: str
    reply: str


async def remember(state: State, runtime: Runtime) -> State:
    """'remember X' stores X as the user's favourite drink; anything else recalls it."""
    store = runtime.store
    assert store is not None
    text = state["text"]
    if text.startswith("remember "):
        await store.aput(NAMESPACE, "drink", {"drink": text.removeprefix("remember ")})
        return {"reply": "noted"}
    item = await store.aget(NAMESPACE, "drink")
    return {"reply": f"your drink is {item.value['drink']}" if item else "I don't know your drink yet"}


def build_graph(manager: MemoryManager) -> CompiledStateGraph:
    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder.compile(checkpointer=manager.checkpointer, store=manager.store)


def turn(user_id: str, thread_id: str) -> RunnableConfig:
    return {"configurable": {"user_id": user_id, "thread_id": thread_id}}


async def main(data_dir: str) -> None:
    async with MemoryManager({"data_dir": data_dir}) as manager:
        graph = build_graph(manager)

        out = await graph.ainvoke({"text": "remember green tea"}, turn("alice", "alice-1"))
        print(f"alice: remember green tea -> {out['reply']}")
        # A new thread: the store is long-term memory, shared by all of Alice's threads.
        out = await graph.ainvoke({"text": "what do I drink?"}, turn("alice", "alice-2"))
        print(f"alice (new thread): what do I drink? -> {out['reply']}")
        # Same namespace, same key, another user: nothing to see.
        out = await graph.ainvoke({"text": "what do I drink?"}, turn("bob", "bob-1"))
        print(f"bob: what do I drink? -> {out['reply']}")

        # Outside a graph run, name the user explicitly.
        alice, bob = manager.store.for_user("alice"), manager.store.for_user("bob")
        print(f"alice's namespaces: {await alice.alist_namespaces()}")
        print(f"bob's namespaces: {await bob.alist_namespaces()}")
        print(f"bob's search for alice's item: {await bob.asearch(NAMESPACE, filter={'drink': 'green tea'})}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="memory-tiers-store-") as data_dir:
        asyncio.run(main(data_dir))
