"""Load: concurrent sessions on PostgreSQL + Redis with zero errors, zero lost acknowledged
writes and pools that never run dry.

The size comes from the environment: ``MEMORY_TIERS_LOAD_SESSIONS`` (default 50) sessions run at
once, each ``MEMORY_TIERS_LOAD_TURNS`` (default 20) turns in a row; the full run of
docs/reliability.md is ``MEMORY_TIERS_LOAD_TURNS=200``. Every turn goes through
``manager.nodes.wrap`` (one super-step per turn) with the default pool sizes, and what was
acknowledged is counted afterwards straight in the database.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import servers_config
from faults import ack_agent, turn_facts, turn_pairs, turn_text
from helpers import unique
from langgraph.graph import END, START, StateGraph
from sqlalchemy import text

from memory_tiers import MemoryManager, MemoryState

SESSIONS = int(os.environ.get("MEMORY_TIERS_LOAD_SESSIONS", "50"))
TURNS = int(os.environ.get("MEMORY_TIERS_LOAD_TURNS", "20"))
BOUND_S = float(os.environ.get("MEMORY_TIERS_LOAD_BOUND_S", 60.0 + 0.05 * SESSIONS * TURNS))
"""Upper bound on the whole run's wall time (a hang or a crawl fails the test)."""

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _graph(manager: MemoryManager) -> Any:
    builder = StateGraph(MemoryState)
    builder.add_node("agent", manager.nodes.wrap(ack_agent))
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=manager.checkpointer)


class _PoolWatch:
    """Peak use of the long-term engine's pool, sampled while the load runs."""

    def __init__(self, manager: MemoryManager) -> None:
        self.pool = manager.long_term.engine.pool
        self.peak_checked_out = 0

    async def run(self) -> None:
        while True:
            self.peak_checked_out = max(self.peak_checked_out, self.pool.checkedout())
            await asyncio.sleep(0.01)


async def _session(
    graph: Any, run: str, n: int, acked: dict[str, list[str]], errors: list[str], times: list[float]
):
    user, thread = f"u{n}-{run}", f"t{n}-{run}"
    config = {"configurable": {"user_id": user, "thread_id": thread, "session_id": f"s{n}-{run}"}}
    for turn in range(TURNS):
        tag = f"n{n}x{turn}"
        started = time.perf_counter()
        try:
            out = await graph.ainvoke({"messages": [("user", turn_text(tag))]}, config)
        except Exception as error:
            errors.append(f"{tag}: {type(error).__name__}: {error}")
            continue
        times.append(time.perf_counter() - started)
        if out["messages"][-1].content == f"ack {turn_text(tag)}":
            acked[thread].append(tag)


async def _stored(
    manager: MemoryManager, run: str
) -> tuple[dict[str, int], dict[str, set[str]], Counter[str]]:
    """Checkpoints per thread, current fact values per user and observations per user, read with
    plain SQL."""
    like = f"%-{run}"
    async with manager.long_term.engine.connect() as conn:
        checkpoints = dict(
            (
                await conn.execute(
                    text(
                        "SELECT thread_id, count(*) FROM checkpoints "
                        "WHERE checkpoint_ns = '' AND thread_id LIKE :like GROUP BY thread_id"
                    ),
                    {"like": like},
                )
            ).all()
        )
        facts: dict[str, set[str]] = defaultdict(set)
        for user, value in await conn.execute(
            text("SELECT user_id, value FROM mt_facts WHERE valid_to IS NULL AND user_id LIKE :like"),
            {"like": like},
        ):
            facts[user].add(value)
        observations = Counter(
            dict(
                (
                    await conn.execute(
                        text(
                            "SELECT user_id, count(*) FROM mt_fact_observations "
                            "WHERE user_id LIKE :like GROUP BY user_id"
                        ),
                        {"like": like},
                    )
                ).all()
            )
        )
    return checkpoints, facts, observations


async def test_concurrent_sessions_lose_nothing_and_never_exhaust_a_pool(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    config = servers_config(request, tmp_path, request.getfixturevalue("fresh_postgres_url"))
    run = unique("load").removeprefix("load-")
    acked: dict[str, list[str]] = defaultdict(list)
    errors: list[str] = []
    times: list[float] = []
    async with MemoryManager(config) as manager:
        graph = _graph(manager)
        watch = _PoolWatch(manager)
        watcher = asyncio.create_task(watch.run())
        started = time.perf_counter()
        try:
            async with asyncio.timeout(BOUND_S):
                await asyncio.gather(
                    *(_session(graph, run, n, acked, errors, times) for n in range(SESSIONS))
                )
        finally:
            watcher.cancel()
        wall = time.perf_counter() - started
        pool_status = watch.pool.status()
        metrics = manager.metrics.snapshot()
        checkpointer_pool = manager.checkpointer.inner.conn.get_stats()
        checkpoints, facts, observations = await _stored(manager, run)
        histories = {}
        for n in range(SESSIONS):
            ids = {"user_id": f"u{n}-{run}", "thread_id": f"t{n}-{run}", "session_id": f"s{n}-{run}"}
            snapshot = await graph.aget_state({"configurable": ids})
            histories[ids["thread_id"]] = turn_pairs(snapshot.values["messages"])

    total = sum(len(tags) for tags in acked.values())
    ordered = sorted(times)
    p50 = statistics.median(ordered) if ordered else 0.0
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    print(
        f"\nload: {SESSIONS} sessions x {TURNS} turns = {total} acknowledged in {wall:.1f} s "
        f"({total / wall:.0f} turns/s), {len(errors)} errors, p50 {p50 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms per turn; metrics {metrics}; long-term pool peak "
        f"{watch.peak_checked_out} checked out ({pool_status}); checkpointer pool {checkpointer_pool}"
    )

    assert errors == []
    assert total == SESSIONS * TURNS
    assert metrics.get("retries", 0) == 0 and metrics.get("degradations", 0) == 0
    assert checkpointer_pool.get("requests_errors", 0) == 0  # no pool wait ran out
    for n in range(SESSIONS):
        thread, user = f"t{n}-{run}", f"u{n}-{run}"
        tags = acked[thread]
        assert histories[thread] == tags, thread  # every acknowledged turn once, in order
        assert checkpoints.get(thread, 0) >= len(tags), thread
        wanted = set().union(*(turn_facts(tag) for tag in tags))
        assert wanted <= facts[user], sorted(wanted - facts[user])[:5]
        assert observations[user] == 2 * len(tags), user
