"""Benchmark ``concurrency``: 100 concurrent sessions on one worker, PostgreSQL + Redis.

Each round is ``asyncio.gather`` of one turn for each of 100 users (quick: 10), each on its own
thread and session, through a compiled 1-node graph: without memory (the agent alone on the
raw LangGraph saver, same pool) and with full memory (``manager.nodes.wrap(agent)`` on
``manager.checkpointer``; and the 3-node ``around`` graph). Rounds of the variants alternate
(rotating which goes first); the first round of each is an untimed warm-up. Per variant: the
turns' p50 and p99 latency under that load and the throughput (turns per second of wall time).
The issue sets no target here; the ratios say what memory costs under load.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

from benchmarks import report, stacks
from benchmarks.measure import Plan, Stats
from benchmarks.servers import Servers
from benchmarks.turn import single_node_graph
from benchmarks.workload import agent, fact_text, turn_config, unique
from memory_tiers import MemoryManager

NAME = "concurrency"
SESSIONS = {False: 100, True: 10}
PLANS = {False: Plan(iterations=15, warmup=1), True: Plan(iterations=2, warmup=1)}  # rounds
PLAIN, WRAPPED, THREE_NODES = "no memory", "memory: wrap(agent)", "memory: 3 nodes"


async def _turn(graph: Any, tag: str, session: int, round_number: int) -> float:
    user = f"{tag}-u{session}"
    config = turn_config(user, f"{user}-t", f"{user}-s")
    started = time.perf_counter_ns()
    await graph.ainvoke({"messages": [HumanMessage(fact_text(round_number))]}, config)
    return (time.perf_counter_ns() - started) / 1000


async def run(servers: Servers, quick: bool) -> None:
    """Rounds of concurrent turns per variant, interleaved."""
    sessions, plan = SESSIONS[quick], PLANS[quick]
    report.header(NAME, f"{sessions} concurrent sessions on one worker, PostgreSQL + Redis (rounds)", plan)
    tag = unique(NAME)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        async with MemoryManager(stacks.postgres_redis(servers, Path(tmp)).config) as manager:
            graphs = {
                PLAIN: single_node_graph(agent, manager.checkpointer.inner),
                WRAPPED: single_node_graph(manager.nodes.wrap(agent), manager.checkpointer),
                THREE_NODES: manager.nodes.around(agent).compile(checkpointer=manager.checkpointer),
            }
            names = list(graphs)
            latencies: dict[str, list[float]] = {name: [] for name in names}
            wall: dict[str, float] = dict.fromkeys(names, 0.0)
            for round_number in range(plan.warmup + plan.iterations):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    started = time.perf_counter()
                    samples = await asyncio.gather(
                        *(
                            _turn(graphs[name], f"{tag}-{names.index(name)}", s, round_number)
                            for s in range(sessions)
                        )
                    )
                    if round_number >= plan.warmup:
                        wall[name] += time.perf_counter() - started
                        latencies[name].extend(samples)
    stats = {name: Stats.of(values) for name, values in latencies.items()}
    report.table(f"postgres+redis, {sessions} concurrent sessions: turn latency", stats)
    print(f"  {'throughput':<{report.NAME_WIDTH}} {'turns/s':>10}")
    rates = {name: len(latencies[name]) / wall[name] for name in names}
    for name in names:
        print(f"  {name:<{report.NAME_WIDTH}} {rates[name]:>10.0f}")
    for name in (WRAPPED, THREE_NODES):
        report.ratio(f"{name} / no memory latency", stats[name], stats[PLAIN])
        report.note(f"ratio {name} / no memory throughput: {rates[name] / rates[PLAIN]:.2f}x")
