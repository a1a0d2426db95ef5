"""Benchmark ``history``: tier load + save at turn 1 vs turns 50, 100 and 200 of a thread.

- turn 1: every iteration is a brand-new user, thread and session (empty history, no facts);
- turn N (50, 100, 200; quick: 200 only): threads with N - 1 saved turns (2(N - 1) messages in
  the state, about N facts), one user each; every iteration runs the Nth turn of one of them
  again with new message ids (so it extracts a new fact), rotating over enough threads that
  none gains more than `GROWTH` facts over the run.

One sample is the load node followed by the save node, as in a turn, called directly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import report, stacks
from benchmarks.curves import HISTORY, Curve
from benchmarks.measure import Plan, Variant, interleave
from benchmarks.seeding import seed_user
from benchmarks.servers import Servers
from benchmarks.workload import SESSION_CONTEXT, turn_config, turn_messages, unique
from memory_tiers import MemoryManager

NAME = "history"
PLANS = {False: Plan(iterations=300, warmup=30), True: Plan(iterations=20, warmup=5)}
LONG = 200
LENGTHS = {False: (50, 100, LONG), True: (LONG,)}
TARGET = 1.2
GROWTH = 10  # the most turns a seeded thread gets during the run
Thread = tuple[str, dict[str, Any], list[Any]]  # user, config, saved messages


def label(turn: int) -> str:
    """The variant measuring the ``turn``-th turn of a thread."""
    return f"load + save at turn {turn}"


FIRST, LATER = label(1), label(LONG)


async def run(servers: Servers, quick: bool) -> list[Curve]:
    """Measure both stacks; return their cost-vs-history curves."""
    plan = PLANS[quick]
    lengths = LENGTHS[quick]
    report.header(NAME, f"tier cost at turn 1 vs turns {', '.join(map(str, lengths))} of a thread", plan)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        root = Path(tmp)
        return [
            await _bench(stacks.postgres_redis(servers, root / "pg"), plan, lengths),
            await _bench(stacks.embedded(root / "embedded"), plan, lengths),
        ]


async def one_turn(
    manager: MemoryManager, config: dict[str, Any], history: list[Any], new: list[Any]
) -> None:
    """Load, then save, one turn whose messages are ``history + new`` (cursor at the history's end)."""
    state: dict[str, Any] = {"messages": [*history, new[0]], "session": SESSION_CONTEXT}
    if history:
        state["memory_cursor"] = history[-1].id
    loaded = await manager.nodes.load.ainvoke(state, config)
    await manager.nodes.save.ainvoke({**state, **loaded, "messages": [*history, *new]}, config)


def _later(manager: MemoryManager, tag: str, length: int, threads: list[Thread]) -> Variant:
    """Iteration ``i`` runs the ``length``-th turn of seeded thread ``i % len(threads)`` again,
    with new ids."""

    async def later(i: int) -> None:
        user, config, history = threads[i % len(threads)]
        await one_turn(manager, config, history, turn_messages(user, length + i))

    return Variant(label(length), later)


async def _seeded(manager: MemoryManager, tag: str, length: int, count: int) -> list[Thread]:
    """``count`` users, each with one thread of ``length - 1`` saved turns."""
    threads = []
    for n in range(count):
        user = f"{tag}-len{length}-{n}"
        config = turn_config(user, f"{user}-t", f"{user}-s")
        threads.append((user, config, await seed_user(manager, config, user, length - 1)))
    return threads


async def _bench(stack: stacks.Stack, plan: Plan, lengths: tuple[int, ...]) -> Curve:
    tag = unique(NAME)
    async with MemoryManager(stack.config) as manager:

        async def first(i: int) -> None:
            user = f"{tag}-new{i}"
            await one_turn(manager, turn_config(user, f"{user}-t", f"{user}-s"), [], turn_messages(user, 0))

        variants = [Variant(FIRST, first)]
        # Each timed turn adds a fact: spread over several users, the facts a turn N recalls
        # stay about N (10 turns more a user over the run) instead of growing with iterations.
        count = max(1, (plan.iterations + plan.warmup) // GROWTH)
        for length in lengths:
            variants.append(_later(manager, tag, length, await _seeded(manager, tag, length, count)))
        stats = await interleave(variants, plan)
    report.table(stack.name, stats)
    value = report.ratio(f"turn {LONG} / turn 1", stats[LATER], stats[FIRST])
    report.target(NAME, f"{stack.name} turn {LONG} / turn 1", value, TARGET)
    curve = Curve(HISTORY, stack.name)
    for turn in (1, *lengths):
        curve.add(turn, stats[label(turn)])
    return curve
