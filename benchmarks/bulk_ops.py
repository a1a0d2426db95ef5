"""Pieces of the bulk benchmarks: one-shot timing of both sides, a forget on both, a state migration."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import checkpoint_seed, report
from benchmarks.servers import libpq_url
from memory_tiers import MemoryManager
from memory_tiers.long_term.schema import archives, fact_observations, facts, profiles, store_items, threads
from memory_tiers.state.bulk import DEFAULT_CONCURRENCY
from memory_tiers.state.migrators import StateMigrator

USER_TABLES = (fact_observations, facts, profiles, archives, store_items, threads)
MIGRATE_OWNER = "migrate-owner"  # and the concurrency its half is migrated at

SeedVersionOne = Callable[[MemoryManager, list[str]], Awaitable[None]]
"""Writes threads of state version 1 under the given ids, on the manager's working tier."""


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


async def migrate(
    working: dict[str, Any],
    sql_url: str,
    data_dir: Path,
    ids: list[str],
    seed: SeedVersionOne,
    shared_saver: Any = None,
) -> None:
    """``manager.migrate_threads()`` of threads ``ids`` from state version 1 to 2 (``seed``
    writes them): half of them one at a time, the other half at the default concurrency, each
    half a user's (`register`). Against the least any migration does: reading each thread's
    latest checkpoint (``aget_tuple``); LangGraph has no bulk state migration. Both managers
    open ``working``, or share ``shared_saver`` when given (an InMemorySaver lives in its manager's
    process only). Prints the rates and a check of the versions after the run."""
    base = {"data_dir": str(data_dir / "migrate"), "working": working, "long_term": {"url": sql_url}}
    async with MemoryManager(base, checkpointer=shared_saver) as v1:
        await seed(v1, ids)
    halves = {1: ids[0::2], DEFAULT_CONCURRENCY: ids[1::2]}
    for concurrency, half in halves.items():
        await checkpoint_seed.register(sql_url, f"{MIGRATE_OWNER}-{concurrency}", half)
    v2_config = {**base, "state": {"version": 2}}
    async with MemoryManager(v2_config, checkpointer=shared_saver, state_migrator=migrator()) as v2:
        saver = v2.checkpointer.inner

        async def read_all() -> None:
            for thread in ids:
                await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})

        def migrate_half(concurrency: int) -> Callable[[], Awaitable[object]]:
            owner = f"{MIGRATE_OWNER}-{concurrency}"
            return lambda: v2.migrate_threads(user_id=owner, concurrency=concurrency)

        steps = [("floor", read_all), *((str(c), migrate_half(c)) for c in halves)]
        seconds = dict(await timed(steps))
        versions: Counter[int] = Counter()
        failed = 0
        for concurrency in halves:
            done = await v2.migrate_threads(user_id=f"{MIGRATE_OWNER}-{concurrency}", dry_run=True)
            versions, failed = versions + done.before, failed + len(done.failed)
    report.note(f"migrate: {len(ids):,} threads from state version 1 to 2, half one at a time")
    report.note(f"check after the run: threads per version {dict(versions)}, {failed} failed")
    rows = {f"migrate_threads, {c} at a time": (len(half), seconds[str(c)]) for c, half in halves.items()}
    report.rates("migrate", {**rows, "floor: aget_tuple per thread": (len(ids), seconds["floor"])}, "threads")
    serial, concurrent = (seconds[str(c)] / len(half) for c, half in halves.items())
    floor = seconds["floor"] / len(ids)
    report.note(
        f"per thread: {serial / floor:.2f}x the read floor one at a time, {concurrent / floor:.2f}x "
        f"{DEFAULT_CONCURRENCY} at a time ({serial / concurrent:.2f}x as fast)"
    )
