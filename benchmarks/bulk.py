"""Benchmark ``bulk``: retention and bulk operations against LangGraph's own, on PostgreSQL.

Two databases hold identical data: ours (the manager's working and long-term tiers) and
LangGraph's (``AsyncPostgresSaver`` alone, plus the library's tables for the raw deletes).

- prune: 1000 threads x about 100 checkpoints (quick: 10 x 13), in rounds of a quarter
  (quick: halves) alternating which side goes first: ``manager.retention.run()`` with
  ``keep_last: 1`` (a round's threads are registered just before it) against
  ``AsyncPostgresSaver.aprune(ids, strategy="keep_latest")``; in checkpoints removed per second;
- forget: a user with 10k facts (each with an observation) and 50 threads (quick: 500, 3):
  ``manager.users.forget(user)`` against ``adelete_thread`` for the 50 threads plus one raw
  transaction of DELETEs of the user's rows; three users (quick: two), alternating which goes
  first, after one untimed round with a small user; each user's rows are vacuumed and analyzed
  on both databases once seeded, so neither side pays for the seeding's aftermath;
- migrate: ``manager.migrate_threads()`` of 10k version-1 threads (quick: 100) to version 2,
  in threads per second, with reading each thread's latest checkpoint (``aget_tuple``, the
  least any migration does) as the floor. LangGraph has no bulk state migration.

Target: at least as fast as LangGraph's equivalent (prune and forget).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import checkpoint_seed, report
from benchmarks.bulk_ops import USER_TABLES, SeedVersionOne, alternated, forget_both, migrate, report_forget
from benchmarks.facts_seed import Corpus, seed_postgres, user_id
from benchmarks.servers import Servers
from memory_tiers import MemoryManager

NAME = "bulk"


@dataclass(frozen=True)
class Sizes:
    """How much each part of the benchmark handles."""

    prune_threads: int
    template_turns: int  # 3 checkpoints a turn (input, start, node) + 1
    prune_rounds: int
    forget_facts: int
    forget_threads: int
    forget_users: int
    migrate_threads: int


SIZES = {
    False: Sizes(1000, 33, 4, 10_000, 50, 3, 10_000),
    True: Sizes(10, 4, 2, 500, 3, 2, 100),
}
TEMPLATE, MIGRATE_TEMPLATE = "bulk-template", "migrate-template"
WARM_UP_USER = 998  # user_id(90_998): none of the timed users
FORGET_TABLES = (*checkpoint_seed.SAVER_TABLES, *(table.name for table in USER_TABLES))


@dataclass(frozen=True)
class Sides:
    """Our manager and LangGraph's saver, each on its own database."""

    ours: MemoryManager
    ours_url: str
    theirs: MemoryManager
    theirs_url: str

    @property
    def saver(self) -> Any:
        """LangGraph's ``AsyncPostgresSaver`` on the second database (no guard, no registry)."""
        return self.theirs.checkpointer.inner


@asynccontextmanager
async def open_sides(servers: Servers, data_dir: Path) -> AsyncIterator[Sides]:
    """Both databases with every schema applied and the template thread in both."""
    async with servers.database("bulk_ours") as ours_url, servers.database("bulk_lg") as theirs_url:

        def config(url: str, name: str, keep_last: int | None) -> dict[str, Any]:
            working = {"backend": "postgres", "url": url, "retention": {"keep_last": keep_last}}
            return {"data_dir": str(data_dir / name), "working": working, "long_term": {"url": url}}

        async with (
            MemoryManager(config(ours_url, "ours", 1)) as ours,
            MemoryManager(config(theirs_url, "theirs", None)) as theirs,
        ):
            yield Sides(ours, ours_url, theirs, theirs_url)


async def run(servers: Servers, quick: bool) -> None:
    """Prune, forget, migrate."""
    sizes = SIZES[quick]
    print(
        f"\n== {NAME}: retention and bulk operations vs LangGraph's own, PostgreSQL (prune "
        f"{sizes.prune_threads:,} threads, forget {sizes.forget_users} users, migrate "
        f"{sizes.migrate_threads:,} threads)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        async with open_sides(servers, Path(tmp)) as sides:
            per_thread = await checkpoint_seed.write_template(
                sides.ours.checkpointer.inner, TEMPLATE, sizes.template_turns
            )
            await checkpoint_seed.copy_template(sides.ours_url, sides.theirs_url, TEMPLATE)
            await _prune(sides, sizes, per_thread)
            await _forget(sides, sizes)
            # Our database again, with threads of their own user: the registry is walked by user.
            working = {"backend": "postgres", "url": sides.ours_url}
            ids = [f"migrate-{n:05d}" for n in range(sizes.migrate_threads)]
            await migrate(working, sides.ours_url, Path(tmp), ids, _seed_migrate(sides.ours_url))


async def _prune(sides: Sides, sizes: Sizes, per_thread: int) -> None:
    ids = [f"prune-{n:05d}" for n in range(sizes.prune_threads)]
    for url in (sides.ours_url, sides.theirs_url):
        await checkpoint_seed.replicate(url, TEMPLATE, ids)
    rounds = [ids[r :: sizes.prune_rounds] for r in range(sizes.prune_rounds)]
    ours = theirs = 0.0
    for number, batch in enumerate(rounds):
        await checkpoint_seed.register(sides.ours_url, "prune-owner", batch)
        took = await alternated(number, sides.ours.retention.run, lambda b=batch: sides.saver.aprune(b))
        ours, theirs = ours + took[0], theirs + took[1]
    pruned = len(ids) * (per_thread - 1)
    report.note(
        f"prune: {len(ids)} threads x {per_thread} checkpoints, keep the latest; {pruned:,} removed each"
    )
    left = [await checkpoint_seed.count_checkpoints(url, ids) for url in (sides.ours_url, sides.theirs_url)]
    report.note(f"check checkpoints left: ours {left[0]}, LangGraph's {left[1]} (expected {len(ids)} each)")
    report.rates(
        "prune",
        {"manager.retention.run()": (pruned, ours), "AsyncPostgresSaver.aprune": (pruned, theirs)},
        "checkpoints",
    )
    report.throughput(NAME, "prune: retention.run / aprune(keep_latest)", pruned / ours, pruned / theirs)


async def _forget(sides: Sides, sizes: Sizes) -> None:
    # One untimed round first, with a small user: the first forget of a process also prepares
    # its statements (both sides'), which no later one pays.
    await _forget_user(sides, WARM_UP_USER, facts=100, thread_count=2)
    ours = theirs = 0.0
    for number in range(sizes.forget_users):
        took = await _forget_user(sides, number, facts=sizes.forget_facts, thread_count=sizes.forget_threads)
        ours, theirs = ours + took[0], theirs + took[1]
    users = sizes.forget_users
    report.note(f"forget: {users} users x ({sizes.forget_facts:,} facts + {sizes.forget_threads} threads)")
    report_forget(NAME, users, ours, theirs)


async def _forget_user(sides: Sides, number: int, *, facts: int, thread_count: int) -> tuple[float, float]:
    """Seed user ``number`` on both sides and forget it on both (`forget_both`); their seconds."""
    index = 90_000 + number
    owner = user_id(index)
    threads = [f"forget-{number}-{n:03d}" for n in range(thread_count)]
    urls = (sides.ours_url, sides.theirs_url)
    for url in urls:
        await seed_postgres(url, Corpus(index, 1, facts), observations=True)
        await checkpoint_seed.replicate(url, TEMPLATE, threads)
        await checkpoint_seed.register(url, owner, threads)
        await checkpoint_seed.settle(url, FORGET_TABLES)
    took = await forget_both(number, sides.ours, sides.saver, sides.theirs_url, owner, threads)
    left = [await checkpoint_seed.count_checkpoints(url, threads) for url in urls]
    if any(left):
        report.note(f"check forget {owner}: checkpoints left ours {left[0]}, LangGraph's {left[1]}")
    return took


def _seed_migrate(url: str) -> SeedVersionOne:
    """Threads copied in SQL from a template thread (`checkpoint_seed.replicate`)."""

    async def seed(manager: MemoryManager, ids: list[str]) -> None:
        await checkpoint_seed.write_template(manager.checkpointer.inner, MIGRATE_TEMPLATE, 2)
        await checkpoint_seed.replicate(url, MIGRATE_TEMPLATE, ids)

    return seed
