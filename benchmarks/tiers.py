"""Benchmark ``tiers``: load and save of all three tiers through the nodes vs the raw floor.

The nodes are called directly (``manager.nodes.load.ainvoke(state, config)``), as a graph would,
without the checkpointer. Each save is a new turn stating one new fact (extraction, one
consolidation transaction, the session pipeline) of a "writer" user; each load reads the
session of a "reader" user with a profile and 20 facts and recalls them for a question.
The floor (floors.py) does the same round trips with the raw drivers, in the same run,
interleaved.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from benchmarks import report, stacks
from benchmarks.floors import Floor, embedded_floor, postgres_redis_floor
from benchmarks.measure import Plan, Variant, interleave
from benchmarks.seeding import seed_user
from benchmarks.servers import Servers
from benchmarks.workload import SESSION_CONTEXT, question, turn_config, turn_messages, unique
from memory_tiers import MemoryManager

NAME = "tiers"
PLANS = {False: Plan(iterations=1000, warmup=100), True: Plan(iterations=60, warmup=10)}
SEED_TURNS = 20
LOAD, SAVE = "load (memory nodes)", "save (memory nodes)"
LOAD_FLOOR, SAVE_FLOOR = "load floor (raw drivers)", "save floor (raw drivers)"

FloorOpener = Callable[[str], AbstractAsyncContextManager[Floor]]


async def run(servers: Servers, quick: bool) -> None:
    """Measure the PostgreSQL + Redis stack, then the embedded one, each against its floor."""
    plan = PLANS[quick]
    report.header(NAME, "load and save of all three tiers vs the raw round trips", plan)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        root = Path(tmp)
        pg = stacks.postgres_redis(servers, root / "pg")
        await _bench(
            pg,
            plan,
            1.5,
            lambda user: postgres_redis_floor(
                servers.postgres_url, servers.redis_url, servers.key_prefix, user, SESSION_CONTEXT
            ),
        )
        emb = stacks.embedded(root / "embedded")
        await _bench(
            emb,
            plan,
            2.0,
            lambda user: embedded_floor(root / "embedded" / "long_term.db", user, SESSION_CONTEXT),
        )


async def _bench(stack: stacks.Stack, plan: Plan, limit: float, open_floor: FloorOpener) -> None:
    tag = unique(NAME)
    # Saves add a fact each, so they go to a second user: the loaded user keeps SEED_TURNS facts.
    user, writer = f"{tag}-reader", f"{tag}-writer"
    config = turn_config(user, f"{user}-thread", f"{user}-session")
    writer_config = turn_config(writer, f"{writer}-thread", f"{writer}-session")
    async with MemoryManager(stack.config) as manager:
        await seed_user(manager, config, user, SEED_TURNS)
        await seed_user(manager, writer_config, writer, SEED_TURNS)
        known = (await manager.nodes.load.ainvoke({"messages": question(tag, 0)}, writer_config))["facts"]

        async def load(i: int) -> None:
            await manager.nodes.load.ainvoke({"messages": question(tag, i)}, config)

        async def save(i: int) -> None:
            state = {"messages": turn_messages(writer, 1000 + i), "session": SESSION_CONTEXT, "facts": known}
            await manager.nodes.save.ainvoke(state, writer_config)

        async with open_floor(user) as floor:
            stats = await interleave(
                [
                    Variant(LOAD, load),
                    Variant(LOAD_FLOOR, lambda i: floor.load()),
                    Variant(SAVE, save),
                    Variant(SAVE_FLOOR, lambda i: floor.save()),
                ],
                plan,
            )
    report.table(stack.name, stats)
    load_ratio = report.ratio("load / load floor", stats[LOAD], stats[LOAD_FLOOR])
    save_ratio = report.ratio("save / save floor", stats[SAVE], stats[SAVE_FLOOR])
    report.target(NAME, f"{stack.name} load / raw floor", load_ratio, limit)
    report.target(NAME, f"{stack.name} save / raw floor", save_ratio, limit)
