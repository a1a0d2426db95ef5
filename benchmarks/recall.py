"""Benchmark ``recall``: user-scoped full-text top-k at scale, on PostgreSQL and SQLite.

The facts table grows in stages up to 1M facts over 10k users (100 facts each; quick: 20k over
200 users), seeded straight into the library's tables (facts_seed.py). At each size, interleaved:

- ``load_context``: ``manager.long_term.load_context(user, thread, message)``, the load node's
  one SELECT (profile, pinned facts and the top-k for the message) and its Python around it;
- ``search_facts``: ``manager.long_term.search_facts(user, message)``, facts matching it;
- the raw floors (recall_floor.py): the same user-scoped top-k with the driver alone.

Each iteration asks for another user, with a message naming an attribute and two vocabulary
words. At the largest size the plans of the library's statements and of the floors are printed
(``plan ...`` lines), with a warning when a plan reads the full-text index. Targets (absolute,
from the issue): p50 <= 1 ms and p99 <= 3 ms at the largest size.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from benchmarks import facts_seed, report
from benchmarks.curves import RECALL, Curve
from benchmarks.measure import Plan, Stats, Variant, interleave
from benchmarks.query_plans import captured, explain, scans_every_fact
from benchmarks.recall_floor import RecallFloor, postgres_recall_floor, sqlite_recall_floor
from benchmarks.servers import Servers
from memory_tiers import MemoryManager

NAME = "recall"
FACTS_PER_USER = 100
SIZES = {False: (10_000, 100_000, 1_000_000), True: (2_000, 20_000)}
PLANS = {False: Plan(iterations=1000, warmup=100), True: Plan(iterations=60, warmup=10)}
SMALLER_PLANS = {False: Plan(iterations=300, warmup=30), True: Plan(iterations=30, warmup=5)}
K = 8
P50_LIMIT, P99_LIMIT = 1000.0, 3000.0
LOAD, LOAD_FLOOR = "load_context (library)", "load floor (raw driver)"
SEARCH, SEARCH_FLOOR = "search_facts (library)", "search floor (raw driver)"
CHECKED_QUERIES = 20
PLAN_LINE = 150

Seeder = Callable[[facts_seed.Corpus], Awaitable[None]]
FloorOpener = Callable[[], AbstractAsyncContextManager[RecallFloor]]


def messages(count: int = 64, seed: int = 11) -> list[str]:
    """Turn messages: an attribute (5% of the facts have it) and two vocabulary words."""
    rng = random.Random(seed)
    vocabulary = facts_seed.words()
    return [
        f"Do I still {rng.choice(facts_seed.ATTRIBUTES).replace('_', ' ')} "
        f"{rng.choice(vocabulary)} or {rng.choice(vocabulary)}?"
        for _ in range(count)
    ]


def asked(i: int, users: int) -> str:
    """The user iteration ``i`` asks for (a stride through all users)."""
    return facts_seed.user_id((i * 7919) % users)


async def run(servers: Servers, quick: bool) -> list[Curve]:
    """Grow and measure PostgreSQL, then SQLite."""
    plan = PLANS[quick]
    report.header(NAME, f"user-scoped full-text top-k at up to {SIZES[quick][-1]:,} facts", plan)
    curves: list[Curve] = []
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        root = Path(tmp)
        async with servers.database("recall") as url:
            config = {
                "data_dir": str(root / "pg"),
                "working": {"backend": "memory"},
                "long_term": {"url": url},
            }
            curves += await _bench(
                "postgresql",
                config,
                quick,
                lambda corpus: facts_seed.seed_postgres(url, corpus),
                lambda: postgres_recall_floor(url),
            )
        sqlite_dir = root / "sqlite"
        sqlite_path = sqlite_dir / "long_term.db"

        async def seed_sqlite(corpus: facts_seed.Corpus) -> None:
            facts_seed.seed_sqlite(sqlite_path, corpus)

        curves += await _bench(
            "sqlite",
            {"data_dir": str(sqlite_dir), "working": {"backend": "memory"}},
            quick,
            seed_sqlite,
            lambda: sqlite_recall_floor(sqlite_path),
        )
    return curves


async def _bench(
    database: str, config: dict[str, Any], quick: bool, seed: Seeder, open_floor: FloorOpener
) -> list[Curve]:
    curves = {name: Curve(RECALL, f"{database} {name.split()[0]}") for name in (LOAD, SEARCH)}
    queries = messages()
    sizes = SIZES[quick]
    async with MemoryManager(config) as manager:  # applies the schema
        long_term = manager.long_term
        seeded = 0
        for size in sizes:
            users = size // FACTS_PER_USER
            started = time.monotonic()
            await seed(facts_seed.Corpus(seeded, users - seeded, FACTS_PER_USER))
            report.note(f"seeded {database} to {size:,} facts in {time.monotonic() - started:.1f} s")
            seeded = users

            async with open_floor() as floor:

                def variant(
                    name: str, call: Callable[[str, str], Awaitable[object]], users: int = users
                ) -> Variant:
                    async def one(i: int) -> object:
                        return await call(asked(i, users), queries[i % len(queries)])

                    return Variant(name, one)

                variants = [
                    variant(LOAD, lambda user, q: long_term.load_context(user, f"{user}-t", q)),
                    variant(LOAD_FLOOR, lambda user, q: floor.load(user, q, K)),
                    variant(SEARCH, lambda user, q: long_term.search_facts(user, q, k=K)),
                    variant(SEARCH_FLOOR, lambda user, q: floor.search(user, q, K)),
                ]
                largest = size == sizes[-1]
                stats = await interleave(variants, PLANS[quick] if largest else SMALLER_PLANS[quick])
                report.table(f"{database}: {size:,} facts over {users:,} users", stats)
                report.ratio("load_context / load floor", stats[LOAD], stats[LOAD_FLOOR])
                report.ratio("search_facts / search floor", stats[SEARCH], stats[SEARCH_FLOOR])
                for name, curve in curves.items():
                    curve.add(size, stats[name])
                if largest:
                    await _check(manager, floor, queries, users)
                    await _plans(manager, floor, queries[0])
                    _targets(database, size, stats)
    return list(curves.values())


async def _check(manager: MemoryManager, floor: RecallFloor, queries: list[str], users: int) -> None:
    """The library and the floor find the same facts (ids, as sets: ties may order apart)."""
    differ = 0
    found = 0
    for i in range(CHECKED_QUERIES):
        user, query = asked(i, users), queries[i % len(queries)]
        ours = {fact.id for fact in await manager.long_term.search_facts(user, query, k=100)}
        raw = set(await floor.search(user, query, 100))
        found += len(ours)
        differ += ours != raw
    verdict = "same facts" if not differ else f"DIFFERENT facts on {differ} queries"
    report.note(f"check search_facts vs raw floor on {CHECKED_QUERIES} queries: {verdict} ({found} found)")


async def _plans(manager: MemoryManager, floor: RecallFloor, query: str) -> None:
    long_term = manager.long_term
    for label, call in (
        ("load_context", lambda: long_term.load_context("u00000", "u00000-t", query)),
        ("search_facts", lambda: long_term.search_facts("u00000", query, k=K)),
    ):
        with captured(long_term) as statements:
            await call()
        plan = await explain(long_term.engine, statements[-1])
        _print_plan(f"{label} (library)", plan)
    for label, search in (("load floor", False), ("search floor", True)):
        _print_plan(label, await floor.explain(search))


def _print_plan(label: str, plan: list[str]) -> None:
    report.note(f"plan {label}:")
    for line in plan:
        report.note(f"plan   {line if len(line) <= PLAN_LINE else line[: PLAN_LINE - 3] + '...'}")
    if scans_every_fact(plan):
        report.note(f"plan warning: {label} scans the facts table, i.e. every user's facts")


def _targets(database: str, size: int, stats: dict[str, Stats]) -> None:
    for name, label in ((LOAD, "load_context"), (SEARCH, "search_facts")):
        s = stats[name]
        report.bound(NAME, f"{database} {label} p50 at {size:,} facts", s.p50, P50_LIMIT)
        report.bound(NAME, f"{database} {label} p99 at {size:,} facts", s.p99, P99_LIMIT)
