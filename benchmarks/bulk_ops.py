"""Pieces of the bulk benchmark: one-shot timing, LangGraph's side of a forget, a state migration."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from benchmarks.servers import libpq_url
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
