"""Pieces of the bulk benchmarks: one-shot timing of both sides, a forget on both, a state migration."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from benchmarks import report
from benchmarks.servers import libpq_url
from memory_tiers import MemoryManager
from memory_tiers.long_term.schema import archives, fact_observations, facts, profiles, store_items, threads
from memory_tiers.state.migrators import StateMigrator

USER_TABLES = (fact_observations, facts, profiles, archives, store_items, threads)


async def timed(steps: Sequence[tuple[str, Callable[[], Awaitable[object]]]]) -> list[tuple[str, float]]:
    """Run each step once, in order; return (name, seconds) per step."""
    results = []
    for name, step in steps:
        started = time.perf_counter()
        await step()
        results.append((name, time.perf_counter() - started))
    return results


async def alternated(
    number: int, ours: Callable[[], Awaitable[object]], theirs: Callable[[], Awaitable[object]] | None
) -> tuple[float, float]:
    """Run our step and LangGraph's once each, ours first in even rounds (``number``), theirs
    first in odd ones; return their seconds (theirs 0 when there is none)."""
    steps = [("ours", ours), *([("theirs", theirs)] if theirs is not None else [])]
    seconds = dict(await timed(steps if number % 2 == 0 else steps[::-1]))
    return seconds["ours"], seconds.get("theirs", 0.0)


async def forget_both(
    number: int, ours: MemoryManager, saver: Any, theirs_url: str, owner: str, threads: Sequence[str]
) -> tuple[float, float]:
    """Forget ``owner`` on both sides, `alternated`: ``ours.users.forget`` against LangGraph's way,
    ``adelete_thread`` of each thread and one transaction of DELETEs (`forget_rows`)."""

    async def langgraph_forget() -> None:
        for thread in threads:
            await saver.adelete_thread(thread)
        await forget_rows(theirs_url, owner)

    return await alternated(number, lambda: ours.users.forget(owner), langgraph_forget)


def report_forget(benchmark: str, users: int, ours: float, theirs: float) -> None:
    """The forget rates of both sides and the target's verdict."""
    report.rates(
        "forget",
        {"manager.users.forget": (users, ours), "adelete_thread x threads + raw DELETEs": (users, theirs)},
        "users",
    )
    report.throughput(
        benchmark, "forget: users.forget / adelete_thread + raw DELETE", users / ours, users / theirs
    )


async def forget_rows(url: str, user_id: str) -> None:
    """The long-term half of forgetting a user by hand: one transaction of DELETEs by user."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        async with conn.transaction():
            for table in USER_TABLES:
                await conn.execute(f"DELETE FROM {table.name} WHERE user_id = $1", user_id)
    finally:
        await conn.close()


def _rename_note(state: dict[str, Any]) -> dict[str, Any]:
    migrated = {k: v for k, v in state.items() if k != "note"}
    migrated["summary"] = str(state.get("note", ""))
    return migrated


def migrator() -> StateMigrator:
    """Version 1 -> 2: ``note`` becomes ``summary``."""
    return StateMigrator.from_steps({1: _rename_note})
