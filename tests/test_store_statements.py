"""`SqlStore`'s statements built once: cached per filter shape, always scoped to the user.

Gets, searches and writes reuse statements built once (a search's once per filter shape, its
values bound per call), and a batch's lone get, search, put or delete skips SQLAlchemy's
execute path (`AsyncpgDirect`, `SqliteDirect`). These
tests pin what that must not change: each call sees only its own user's rows and its own
filter values, a statement cannot run without the user, writes are committed, and driver
errors on the direct path are translated (a broken connection is not reused).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg
import pytest
from helpers import unique
from langgraph.store.base import GetOp, PutOp, SearchOp
from sqlalchemy import event, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from memory_tiers.config import IdKeysConfig, StoreConfig
from memory_tiers.errors import BackendError, BackendUnavailableError
from memory_tiers.long_term.schema import store_items as items
from memory_tiers.store import SqlStore
from memory_tiers.store.filters import parse_filter
from memory_tiers.store.statements import KEY, NAMESPACE, NOW, USER
from memory_tiers.store.writes import UPSERT_KEYS


@pytest.fixture
async def engine(migrated_sql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_sql_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(engine: AsyncEngine) -> SqlStore:
    return SqlStore(engine, StoreConfig(), ids=IdKeysConfig())


@pytest.fixture
async def postgres_store(migrated_postgres_url: str) -> AsyncIterator[SqlStore]:
    engine = create_async_engine(migrated_postgres_url, pool_size=1, max_overflow=0)
    yield SqlStore(engine, StoreConfig(), ids=IdKeysConfig())
    await engine.dispose()


def test_filters_of_one_shape_share_the_shape_and_bind_their_values() -> None:
    first = parse_filter({"kind": "a", "level": 1, "tags": ["x"]}, "postgresql")
    second = parse_filter({"kind": "b", "level": 2.5, "tags": ["y", "z"]}, "postgresql")
    assert first.shape == second.shape
    assert first.params != second.params
    # Keys, operators and value types decide the shape; so do SQLite's expanded documents.
    assert (
        parse_filter({"kind": {"$ne": "a"}}, "postgresql").shape
        != parse_filter({"kind": "a"}, "postgresql").shape
    )
    assert (
        parse_filter({"level": {"$gt": 1}}, "postgresql").shape
        != parse_filter({"level": {"$gt": "1"}}, "postgresql").shape
    )
    assert parse_filter({"tags": ["x"]}, "sqlite").shape != parse_filter({"tags": ["x", "y"]}, "sqlite").shape


async def test_a_cached_search_serves_every_user_and_value_on_its_own(store):
    alice, bob = store.for_user(unique("alice")), store.for_user(unique("bob"))
    for owner, name in ((alice, "alice"), (bob, "bob")):
        for level in range(3):
            await owner.aput(("notes",), f"{name}-{level}", {"owner": name, "level": level})
    store._sql.search.cache_clear()
    for level in range(3):
        for owner, name in ((alice, "alice"), (bob, "bob")):
            found = await owner.asearch(("notes",), filter={"level": level})
            assert [item.key for item in found] == [f"{name}-{level}"]
            assert [
                item.key for item in await owner.asearch(("notes",), filter={"level": {"$gte": level}})
            ] == [f"{name}-{n}" for n in range(2, level - 1, -1)]
    # Two shapes ($eq and $gte on a number), whatever the user and the value.
    assert store._sql.search.cache_info().currsize == 2
    assert (await bob.aget(("notes",), "alice-0")) is None
    assert (await alice.aget(("notes",), "alice-0")).value == {"owner": "alice", "level": 0}
    two = await alice.abatch([GetOp(("notes",), "alice-1"), GetOp(("notes",), "bob-1")])  # the IN form
    assert [item and item.key for item in two] == ["alice-1", None]


async def test_a_statement_cannot_run_without_the_user(store, engine):
    async with engine.connect() as conn:
        with pytest.raises(StatementError, match=USER):
            await conn.execute(store._sql.get_one, {NOW: datetime.now(UTC), NAMESPACE: "n", KEY: "k"})
        search = store._sql.search(False, parse_filter({"a": 1}, store.dialect).shape)
        with pytest.raises(StatementError, match=USER):
            await conn.execute(search, {NOW: datetime.now(UTC), "s_limit": 10, "s_offset": 0, "f0": 1})


async def test_lone_gets_and_searches_go_straight_to_the_driver(store, monkeypatch):
    assert type(store._driver).__name__ == (
        "AsyncpgDirect" if store.dialect == "postgresql" else "SqliteDirect"
    )
    sent: list[str] = []
    rows = store._driver.rows

    async def spying(statement: Any, params: dict[str, Any]) -> Any:
        sent.append(params[USER])
        return await rows(statement, params)

    monkeypatch.setattr(store._driver, "rows", spying)
    alice_id = unique("alice")
    alice = store.for_user(alice_id)
    value = {"v": 1.5, "tags": ["a", "b"], "s": "x"}
    await alice.aput(("n",), "k", value)
    item = await alice.aget(("n",), "k")
    assert item.value == value and item.created_at.tzinfo is not None
    filters = ({"tags": ["a", "b"]}, {"v": {"$gt": 1}, "s": {"$gte": "x"}}, {"v": 1.5})
    for where in filters:
        assert [i.key for i in await alice.asearch(("n",), filter=where)] == ["k"], where
    bob_id = unique("bob")
    assert await store.for_user(bob_id).aget(("n",), "k") is None
    assert sent == [alice_id] * (1 + len(filters)) + [bob_id]
    # A batch of several reads shares one SQLAlchemy connection instead, with the same answers.
    both = await alice.abatch([GetOp(("n",), "k"), SearchOp(("n",), filter={"v": 1.5})])
    assert len(sent) == 2 + len(filters)
    assert both[0].value == value and [i.key for i in both[1]] == ["k"]


async def test_the_direct_path_refuses_to_send_without_the_user(postgres_store):
    with pytest.raises(KeyError, match=USER):
        await postgres_store._driver.rows(postgres_store._sql.get_one, {NAMESPACE: "n", KEY: "k"})


async def test_driver_errors_on_the_direct_path_are_translated(postgres_store, monkeypatch):
    alice = postgres_store.for_user(unique("alice"))
    await alice.aput(("n",), "k", {"v": 1})
    compiled = postgres_store._driver.compiled(postgres_store._sql.get_one)
    broken = compiled._replace(sql=compiled.sql.replace("mt_store_items", "mt_no_such_table"))
    with monkeypatch.context() as patch:
        patch.setattr(postgres_store._driver, "compiled", lambda statement, column_keys=None: broken)
        with pytest.raises(BackendError, match="mt_no_such_table") as refused:
            await alice.aget(("n",), "k")
    assert not isinstance(refused.value, BackendUnavailableError)
    assert (await alice.aget(("n",), "k")).value == {"v": 1}  # the connection was fine


async def test_a_server_still_starting_up_makes_the_direct_path_unavailable(migrated_postgres_url):
    """During a restart PostgreSQL refuses connections with 57P03, which SQLAlchemy's
    ``engine.connect()`` wraps; a check-out on the direct path must too, so the caller sees the
    tier unavailable (and may retry), not a bare driver error."""
    starting = [True]
    plain_url = migrated_postgres_url.replace("postgresql+asyncpg", "postgresql")

    async def connect() -> asyncpg.Connection:
        if starting[0]:
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
        return await asyncpg.connect(plain_url)

    engine = create_async_engine(migrated_postgres_url, async_creator=connect)
    alice = SqlStore(engine, StoreConfig(), ids=IdKeysConfig()).for_user(unique("alice"))
    try:
        with pytest.raises(BackendUnavailableError, match="starting up"):
            await alice.aget(("n",), "k")
        with pytest.raises(BackendUnavailableError, match="starting up"):
            await alice.aput(("n",), "k", {"v": 1})
        starting[0] = False
        await alice.aput(("n",), "k", {"v": 1})
        assert (await alice.aget(("n",), "k")).value == {"v": 1}
    finally:
        await engine.dispose()


async def test_a_connection_that_broke_is_not_reused(postgres_store, migrated_postgres_url):
    alice = postgres_store.for_user(unique("alice"))
    await alice.aput(("n",), "k", {"v": 1})
    assert await alice.aget(("n",), "k") is not None  # the pool's one connection, now idle
    async with postgres_store.engine.connect() as conn:
        pid = (await conn.get_raw_connection()).driver_connection.get_server_pid()
    admin = await asyncpg.connect(migrated_postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    with pytest.raises(BackendUnavailableError):
        await alice.aget(("n",), "k")
    assert (await alice.aget(("n",), "k")).value == {"v": 1}  # on a new connection


async def test_a_lost_connection_retires_the_pools_other_connections_of_its_time(migrated_postgres_url):
    """When the server goes away every pooled connection is gone with it. As SQLAlchemy does on
    a disconnect, a connection the direct path finds lost retires all the pool held then, so
    the caller's next call (its retry) runs on a new connection, not on the next dead one."""
    engine = create_async_engine(migrated_postgres_url, pool_size=2, max_overflow=0)
    alice = SqlStore(engine, StoreConfig(), ids=IdKeysConfig()).for_user(unique("alice"))
    admin = await asyncpg.connect(migrated_postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await alice.aput(("n",), "k", {"v": 1})
        async with engine.connect() as first, engine.connect() as second:  # both pooled, idle after
            raw = [await conn.get_raw_connection() for conn in (first, second)]
            pids = [connection.driver_connection.get_server_pid() for connection in raw]
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
        with pytest.raises(BackendUnavailableError):
            await alice.aget(("n",), "k")
        assert (await alice.aget(("n",), "k")).value == {"v": 1}
        async with engine.connect() as conn:  # SQLAlchemy's own path is not handed a dead one either
            assert await conn.scalar(select(items.c.key).where(items.c.key == "k")) == "k"
    finally:
        await admin.close()
        await engine.dispose()


async def test_a_lone_put_or_delete_is_one_statement_straight_on_the_driver(
    store, migrated_sql_url, monkeypatch
):
    """It is committed at once (on PostgreSQL by itself, without BEGIN/COMMIT round trips) and
    seen by another engine; a batch of several writes keeps SQLAlchemy's transaction."""
    sent: list[dict[str, Any]] = []
    execute = store._driver.execute

    async def spying(statement: Any, params: dict[str, Any], column_keys: Any = None) -> None:
        sent.append(dict(params))
        await execute(statement, params, column_keys)

    monkeypatch.setattr(store._driver, "execute", spying)
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = store.for_user(alice_id), store.for_user(bob_id)
    await alice.aput(("n",), "k", {"v": 1})
    first = await alice.aget(("n",), "k")
    await alice.aput(("n",), "k", {"v": 2, "s": "é\u202e"}, ttl=5)
    await bob.aput(("n",), "k", {"v": "bob's"})
    other = create_async_engine(migrated_sql_url)
    try:
        seen = SqlStore(other, StoreConfig(), ids=IdKeysConfig()).for_user(alice_id)
        item = await seen.aget(("n",), "k")
    finally:
        await other.dispose()
    assert item.value == {"v": 2, "s": "é\u202e"} and item.created_at == first.created_at
    assert item.updated_at > first.updated_at
    await alice.adelete(("n",), "k")
    assert await alice.aget(("n",), "k") is None
    assert (await bob.aget(("n",), "k")).value == {"v": "bob's"}
    assert [params.get("user_id", params.get("b_user")) for params in sent] == [alice_id] * 2 + [
        bob_id,
        alice_id,
    ]
    await alice.abatch([PutOp(("n",), "a", {"v": 1}), PutOp(("n",), "b", {"v": 2})])
    assert len(sent) == 4
    assert sorted(i.key for i in await alice.asearch(("n",))) == ["a", "b"]


async def test_driver_errors_on_the_direct_write_are_translated(store, monkeypatch):
    alice = store.for_user(unique("alice"))
    compiled = store._driver.compiled(store._writes.upsert, UPSERT_KEYS)
    broken = compiled._replace(sql=compiled.sql.replace("mt_store_items", "mt_no_such_table"))
    with monkeypatch.context() as patch:
        patch.setattr(store._driver, "compiled", lambda statement, column_keys=None: broken)
        with pytest.raises(BackendError, match="mt_no_such_table") as refused:
            await alice.aput(("n",), "k", {"v": 1})
    assert not isinstance(refused.value, BackendUnavailableError)
    assert await alice.aget(("n",), "k") is None
    await alice.aput(("n",), "k", {"v": 1})  # the connection was fine
    assert (await alice.aget(("n",), "k")).value == {"v": 1}


async def test_a_ttl_refresh_is_kept_beside_a_write_and_after_a_lone_read(store, engine):
    """A read that refreshes a TTL is a write too: beside a put it joins the batch's transaction,
    alone it is the one statement sent."""
    alice = store.for_user(unique("alice"))
    start = datetime(2030, 1, 1, tzinfo=UTC)
    alice.clock = lambda: start
    await alice.aput(("n",), "a", {"v": 1}, ttl=10)

    async def expiry() -> datetime:
        async with engine.connect() as conn:
            stmt = select(items.c.expires_at).where(items.c.user_id == alice.user_id, items.c.key == "a")
            value = (await conn.execute(stmt)).scalar_one()
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    assert await expiry() == start + timedelta(minutes=10)
    alice.clock = lambda: start + timedelta(minutes=5)
    found, _ = await alice.abatch([GetOp(("n",), "a", refresh_ttl=True), PutOp(("n",), "b", {"v": 2})])
    assert found.value == {"v": 1} and await expiry() == start + timedelta(minutes=15)
    assert (await alice.aget(("n",), "b")).value == {"v": 2}
    alice.clock = lambda: start + timedelta(minutes=8)
    assert (await alice.aget(("n",), "a", refresh_ttl=True)).value == {"v": 1}
    assert await expiry() == start + timedelta(minutes=18)


async def test_a_direct_write_whose_commit_fails_writes_nothing(migrated_sqlite_url):
    """SQLite (where the write and its commit run in one hop to the driver's thread): the INSERT
    ran, then its commit failed: it is rolled back, the error is a BackendError and the
    connection goes back to the pool with no transaction open."""
    engine = create_async_engine(migrated_sqlite_url)
    alice = SqlStore(engine, StoreConfig(), ids=IdKeysConfig()).for_user(unique("alice"))
    failures = ["the commit is refused once"]

    def refuse_a_commit(action: int, arg1: Any, *rest: Any) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT" and failures:
            failures.pop()
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    pooled = await engine.raw_connection()  # the pool's one connection, used by every call below
    await pooled.driver_connection.set_authorizer(refuse_a_commit)
    await greenlet_spawn(pooled.close)
    try:
        with pytest.raises(BackendError, match="not authorized"):
            await alice.aput(("n",), "k", {"v": 1})
        assert not failures
        assert await alice.aget(("n",), "k") is None
        pooled = await engine.raw_connection()
        try:
            assert not pooled.driver_connection.in_transaction
        finally:
            await greenlet_spawn(pooled.close)
        await alice.aput(("n",), "k", {"v": 2})
        assert (await alice.aget(("n",), "k")).value == {"v": 2}
    finally:
        await engine.dispose()


async def test_a_cancelled_lone_read_gives_its_connection_up(store, engine, monkeypatch):
    """A get cancelled while its statement runs (on the one greenlet that checks the connection
    out, runs and checks it in) leaves nothing checked out, and its connection, whose state is
    unknown, is never handed out again: the next get opens a new one."""
    alice = store.for_user(unique("alice"))
    await alice.aput(("n",), "k", {"v": 1})
    opened: list[object] = []
    event.listen(engine.sync_engine, "connect", lambda conn, record: opened.append(conn))
    driver_class, method = (
        (asyncpg.Connection, "fetch")
        if store.dialect == "postgresql"
        else (aiosqlite.Connection, "_execute")  # every call on aiosqlite's thread goes through it
    )
    original = getattr(driver_class, method)
    started = asyncio.Event()

    async def hangs(self: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(driver_class, method, original)
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(driver_class, method, hangs)
    get = asyncio.ensure_future(alice.aget(("n",), "k"))
    await asyncio.wait_for(started.wait(), 5)
    get.cancel()
    with pytest.raises(asyncio.CancelledError):
        await get
    assert engine.sync_engine.pool.checkedout() == 0
    assert (await alice.aget(("n",), "k")).value == {"v": 1}
    assert len(opened) == 1  # the cancelled one was dropped
    assert engine.sync_engine.pool.checkedout() == 0
