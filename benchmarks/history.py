"""Benchmark ``history``: tier load + save at turn 1 vs turn 200 of a thread.

- turn 1: every iteration is a brand-new user, thread and session (empty history, no facts);
- turn 200: one thread with 199 saved turns (398 messages in the state, about 200 facts);
  every iteration runs its 200th turn again with new message ids (so it extracts a new fact).

One sample is the load node followed by the save node, as in a turn, called directly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import report, stacks
from benchmarks.measure import Plan, Variant, interleave
from benchmarks.seeding import seed_user
from benchmarks.servers import Servers
from benchmarks.workload import SESSION_CONTEXT, turn_config, turn_messages, unique
from memory_tiers import MemoryManager

NAME = "history"
PLANS = {False: Plan(iterations=300, warmup=30), True: Plan(iterations=20, warmup=5)}
LONG = 200
TARGET = 1.2
FIRST, LATER = "load + save at turn 1", f"load + save at turn {LONG}"


async def run(servers: Servers, quick: bool) -> None:
    """Measure both stacks."""
    plan = PLANS[quick]
    report.header(NAME, f"tier cost at turn 1 vs turn {LONG} of a thread", plan)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        root = Path(tmp)
        await _bench(stacks.postgres_redis(servers, root / "pg"), plan)
        await _bench(stacks.embedded(root / "embedded"), plan)


async def one_turn(
    manager: MemoryManager, config: dict[str, Any], history: list[Any], new: list[Any]
) -> None:
    """Load, then save, one turn whose messages are ``history + new`` (cursor at the history's end)."""
    state: dict[str, Any] = {"messages": [*history, new[0]], "session": SESSION_CONTEXT}
    if history:
        state["memory_cursor"] = history[-1].id
    loaded = await manager.nodes.load.ainvoke(state, config)
    await manager.nodes.save.ainvoke({**state, **loaded, "messages": [*history, *new]}, config)


async def _bench(stack: stacks.Stack, plan: Plan) -> None:
    tag = unique(NAME)
    long_config = turn_config(f"{tag}-long", f"{tag}-long-t", f"{tag}-long-s")
    async with MemoryManager(stack.config) as manager:
        history = await seed_user(manager, long_config, f"{tag}-long", LONG - 1)

        async def first(i: int) -> None:
            user = f"{tag}-new{i}"
            await one_turn(manager, turn_config(user, f"{user}-t", f"{user}-s"), [], turn_messages(user, 0))

        async def later(i: int) -> None:
            await one_turn(manager, long_config, history, turn_messages(f"{tag}-long", LONG + i))

        stats = await interleave([Variant(FIRST, first), Variant(LATER, later)], plan)
    report.table(stack.name, stats)
    value = report.ratio(f"turn {LONG} / turn 1", stats[LATER], stats[FIRST])
    report.target(NAME, f"{stack.name} turn {LONG} / turn 1", value, TARGET)
