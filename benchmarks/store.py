"""Benchmark ``store``: memory_tiers' LangGraph store against LangGraph's own stores.

``manager.store`` on PostgreSQL and on SQLite (the embedded default) against ``InMemoryStore``,
``AsyncSqliteStore`` and ``AsyncPostgresStore`` (same database as ours, its own tables), all
holding the same 100k items (100 users x 1000; quick: 20 x 100; store_data.py). Interleaved,
one call per store per iteration: ``get`` of an existing item, ``put`` (an upsert into a small
key range, so after the warm-up every put updates), and a filtered ``search`` of one user's
namespace (kind, level and bucket: a handful of matches, one page). Before timing, every store
answers the same gets and searches and is compared with InMemoryStore (``check ...`` lines,
naming any store that returns fewer items). Targets: our get <= 0.5x AsyncPostgresStore's, our
search <= 1x; ours on SQLite is compared with AsyncSqliteStore, without a target.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.store.memory import InMemoryStore
from langgraph.store.postgres.aio import AsyncPostgresStore
from langgraph.store.sqlite.aio import AsyncSqliteStore

from benchmarks import report
from benchmarks.measure import Plan, Stats, Variant, interleave
from benchmarks.servers import Servers
from benchmarks.store_data import StoreView, key, search_filter, user
from memory_tiers import MemoryManager

NAME = "store"
SIZES = {False: (100, 1000), True: (20, 100)}  # users, items per user
PLANS = {False: Plan(iterations=500, warmup=50), True: Plan(iterations=30, warmup=5)}
OURS, POSTGRES = "memory_tiers SqlStore (PostgreSQL)", "AsyncPostgresStore"
OURS_SQLITE, SQLITE = "memory_tiers SqlStore (SQLite)", "AsyncSqliteStore"
STORES = 5
OPERATIONS = ("get", "put", "search")
CHECKS = 20
PUT_KEYS = 50


@asynccontextmanager
async def open_stores(url: str, data_dir: Path) -> AsyncIterator[list[StoreView]]:
    """The five stores, each set up and empty: ours on PostgreSQL and on SQLite (the embedded
    default), and LangGraph's three."""
    async with AsyncExitStack() as stack:
        config = {"data_dir": str(data_dir), "working": {"backend": "memory"}, "long_term": {"url": url}}
        manager = await stack.enter_async_context(MemoryManager(config))
        embedded = {"data_dir": str(data_dir / "embedded"), "working": {"backend": "memory"}}
        embedded_manager = await stack.enter_async_context(MemoryManager(embedded))
        sqlite = await stack.enter_async_context(
            AsyncSqliteStore.from_conn_string(str(data_dir / "store.db"))
        )
        await sqlite.setup()
        postgres = await stack.enter_async_context(AsyncPostgresStore.from_conn_string(url))
        await postgres.setup()
        yield [
            StoreView(OURS, manager.store, scoped=True),
            StoreView(OURS_SQLITE, embedded_manager.store, scoped=True),
            StoreView("InMemoryStore", InMemoryStore(), scoped=False),
            StoreView(SQLITE, sqlite, scoped=False),
            StoreView(POSTGRES, postgres, scoped=False),
        ]


async def run(servers: Servers, quick: bool) -> None:
    """Seed the four stores alike, check they agree, then time them interleaved."""
    users, items = SIZES[quick]
    plan = PLANS[quick]
    report.header(NAME, f"get / put / filtered search at {users * items:,} items, {STORES} stores", plan)
    with tempfile.TemporaryDirectory(prefix="mt-bench-") as tmp:
        async with servers.database("store") as url, open_stores(url, Path(tmp)) as views:
            for view in views:
                await view.seed(users, items)
            await _check(views, users, items)
            variants = [variant for view in views for variant in _variants(view, users, items)]
            stats = await interleave(variants, plan)
    for operation in OPERATIONS:
        report.table(operation, {view.name: stats[f"{view.name} {operation}"] for view in views})
    _ratios(stats)


def _variants(view: StoreView, users: int, items: int) -> list[Variant]:
    async def get(i: int) -> object:
        return await view.get(user((i * 31) % users), key((i * 7919) % items))

    async def put(i: int) -> object:
        owner = user((i * 17) % users)
        return await view.put(owner, f"p{i % PUT_KEYS:03d}", {"kind": "put", "level": -1, "round": i})

    async def search(i: int) -> object:
        return await view.search(user((i * 13) % users), search_filter(i))

    return [
        Variant(f"{view.name} {name}", call)
        for name, call in zip(OPERATIONS, (get, put, search), strict=True)
    ]


def _shape(item: Any) -> tuple[str, Any]:
    return (item.key, item.value)


async def _check(views: list[StoreView], users: int, items: int) -> None:
    """Every store answers CHECKS gets and searches as InMemoryStore does (the reference)."""
    reference = next(view for view in views if view.name == "InMemoryStore")
    others = [view for view in views if view is not reference]
    expected_gets, expected_searches = [], []
    probes = [(user((i * 13) % users), key((i * 7919) % items), search_filter(i)) for i in range(CHECKS)]
    for owner, item, where in probes:
        expected_gets.append(_shape(await reference.get(owner, item)))
        expected_searches.append(sorted(map(_shape, await reference.search(owner, where, limit=100))))
    found = sum(len(hits) for hits in expected_searches)
    for view in others:
        wrong_gets = fewer = different = 0
        for (owner, item, where), get, search in zip(probes, expected_gets, expected_searches, strict=True):
            got = await view.get(owner, item)
            wrong_gets += got is None or _shape(got) != get
            hits = sorted(map(_shape, await view.search(owner, where, limit=100)))
            fewer += len(hits) < len(search)
            different += hits != search
        verdict = (
            "identical"
            if not (wrong_gets or different)
            else f"DIFFERENT: {wrong_gets} gets, {different} searches ({fewer} returned fewer items)"
        )
        report.note(
            f"check {view.name} vs InMemoryStore on {CHECKS} gets and searches ({found} hits): {verdict}"
        )


def _ratios(stats: dict[str, Stats]) -> None:
    """Each of our stores against LangGraph's on the same database; targets on PostgreSQL."""
    found = {}
    for ours, theirs in ((OURS, POSTGRES), (OURS_SQLITE, SQLITE)):
        for operation in OPERATIONS:
            found[ours, operation] = report.ratio(
                f"{ours} {operation} / {theirs} {operation}",
                stats[f"{ours} {operation}"],
                stats[f"{theirs} {operation}"],
            )
    report.target(NAME, "get / AsyncPostgresStore get", found[OURS, "get"], 0.5)
    report.target(NAME, "filtered search / AsyncPostgresStore filtered search", found[OURS, "search"], 1.0)
