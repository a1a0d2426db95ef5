"""The load's SELECT straight to aiosqlite (`SqliteDirect`): what it must not change.

Rows are what SQLAlchemy's row mappings would be (same keys, values and types), driver errors
are translated as on every other path, and a connection that broke is not handed out again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from helpers import unique
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.util import greenlet_spawn

from memory_tiers import FactCandidate, MemoryManager
from memory_tiers.direct_sql.on_aiosqlite import Abandoned, SqliteDirect, _committed
from memory_tiers.errors import BackendError, BackendUnavailableError
from memory_tiers.long_term.consolidate import touch_once
from memory_tiers.long_term.store import LongTermStore, _now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LongTermStore]:
    config = {"data_dir": str(tmp_path), "working": {"backend": "memory"}, "session": {"url": "memory://"}}
    async with MemoryManager(config) as manager:
        yield manager.long_term_store


async def _seeded(store: LongTermStore) -> str:
    alice = unique("alice")
    await store.patch_profile(alice, {"name": "Alice", "city": "Paris"})
    candidates = [FactCandidate(attribute="likes", value=f"topic{i}") for i in range(12)]
    await store.add_facts(alice, candidates)
    await store.add_facts(
        alice, [FactCandidate(attribute="lives_in", value="Paris", cardinality="one")], pinned=True
    )
    return alice


def _statements(store: LongTermStore, user: str, query: str | None) -> list[tuple[object, dict]]:
    n_terms, params = store._recall.params(user, query, _now())
    load = (store._load_statement(n_terms), params | {"load_user": user, "load_thread": None})
    n_terms, params = store._recall.params(user, query, _now(), limit=5)
    search = (store._recall.search(n_terms, matching_only=True), params)
    return [load, search]


@pytest.mark.parametrize("query", ["Which topic do I like? Paris", None, "nothing matches this"])
async def test_rows_are_sqlalchemys_row_mappings(store, query):
    assert isinstance(store._direct, SqliteDirect)
    for user in (await _seeded(store), unique("nobody")):
        for statement, params in _statements(store, user, query):
            expected = [dict(row) for row in await store._rows(statement, params)]
            direct = await store._direct.rows(statement, params)
            assert direct == expected
            assert [[type(v) for v in row.values()] for row in direct] == [
                [type(v) for v in row.values()] for row in expected
            ]


async def test_the_load_reads_through_the_direct_path(store, monkeypatch):
    alice = await _seeded(store)
    sent = []
    rows = SqliteDirect.rows

    async def counted(self, statement, params):
        sent.append(statement)
        return await rows(self, statement, params)

    monkeypatch.setattr(SqliteDirect, "rows", counted)
    context = await store.load_context(alice, None, "Which topic do I like?")
    assert len(sent) == 1
    assert context.profile == await store.get_profile(alice)
    assert context.profile.document["name"] == "Alice"
    assert context.facts[0].value == "Paris"  # pinned first
    assert all(f.created_at.tzinfo is not None for f in context.facts)


async def test_the_direct_path_refuses_to_send_without_the_user(store):
    statement, params = _statements(store, "alice", "x")[0]
    with pytest.raises(KeyError, match="recall_user"):
        await store._direct.rows(statement, {k: v for k, v in params.items() if k != "recall_user"})


async def test_driver_errors_on_the_direct_path_are_translated(store, monkeypatch):
    alice = await _seeded(store)
    reads = store._direct
    statement, params = _statements(store, alice, "topic1")[0]
    compiled = reads.compiled(statement)
    broken = compiled._replace(sql=compiled.sql.replace("mt_profiles", "mt_no_such_table"))
    with monkeypatch.context() as patch:
        patch.setattr(reads, "compiled", lambda statement, column_keys=None: broken)
        with pytest.raises(OperationalError, match="mt_no_such_table") as raw:
            await reads.rows(statement, params)
        assert not raw.value.connection_invalidated
        with pytest.raises(BackendError, match="mt_no_such_table") as refused:
            await store.load_context(alice, None, "topic1")
    assert not isinstance(refused.value, BackendUnavailableError)
    assert isinstance(refused.value.__cause__.orig, sqlite3.OperationalError)
    assert (await store.load_context(alice, None, "topic1")).profile.version == 2  # the connection was fine


def _connects(store: LongTermStore) -> list[object]:
    opened: list[object] = []
    event.listen(store.engine.sync_engine, "connect", lambda conn, record: opened.append(conn))
    return opened


async def _break_idle_connection(store: LongTermStore) -> None:
    """Close the driver of the pool's idle connection (opening one if none is idle) under the
    pool, as a connection lost while idle is: the next call on it finds it gone."""
    pooled = await store.engine.raw_connection()
    await pooled.driver_connection.close()
    await greenlet_spawn(pooled.close)


async def test_a_connection_that_broke_is_not_reused(store):
    alice = await _seeded(store)
    await store.load_context(alice, None, "topic1")  # a pooled connection, now idle
    opened = _connects(store)
    statement, params = _statements(store, alice, "topic1")[0]
    await _break_idle_connection(store)
    with pytest.raises(OperationalError, match="no active connection") as raw:
        await store._direct.rows(statement, params)
    assert raw.value.connection_invalidated
    assert store.engine.sync_engine.pool.checkedout() == 0
    await _break_idle_connection(store)  # none is idle: this opens one
    with pytest.raises(BackendUnavailableError, match="no active connection"):
        await store._hot_rows(statement, params)
    assert len(opened) == 1
    retries = store.telemetry.metrics.snapshot()["retries"]
    await _break_idle_connection(store)
    # The load retries a lost connection, on a new one.
    assert (await store.load_context(alice, None, "topic1")).profile.version == 2
    assert store.telemetry.metrics.snapshot()["retries"] == retries + 1
    assert len(opened) == 3


async def test_a_cancelled_read_does_not_hand_its_connection_out_again(store, monkeypatch):
    alice = await _seeded(store)
    await store.load_context(alice, None, "topic1")
    opened = _connects(store)
    hop = aiosqlite.Connection._execute
    started = asyncio.Event()

    async def hangs(self, fn, *args, **kwargs):
        monkeypatch.setattr(aiosqlite.Connection, "_execute", hop)
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", hangs)
    task = asyncio.ensure_future(store.load_context(alice, None, "topic1"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.engine.sync_engine.pool.checkedout() == 0
    assert (await store.load_context(alice, None, "topic1")).profile.version == 2
    assert len(opened) == 1


async def _traced(store: LongTermStore) -> list[str]:
    """The SQL the pool's one connection runs from now on (SQLite's trace callback)."""
    sql: list[str] = []
    pooled = await store.engine.raw_connection()
    await pooled.driver_connection.set_trace_callback(sql.append)
    await greenlet_spawn(pooled.close)
    return sql


async def test_a_transaction_whose_caller_gave_up_before_its_commit_is_rolled_back(store):
    # The whole transaction runs in the driver's thread, where a cancellation cannot reach: it
    # goes on after its caller has given up, and must then run no more statements nor commit.
    user, thread, later_thread = unique("alice"), unique("t"), unique("t")
    touch = store._thread_touch(user, thread, None, _now())
    later = store._thread_touch(user, later_thread, None, _now())
    await store.thread_owner(thread)  # the pool's one connection, now idle
    traced = await _traced(store)
    loop = asyncio.get_running_loop()
    written, gave_up = asyncio.Event(), threading.Event()

    async def work(statements):
        await touch_once(statements, touch)  # the registry row is written, not committed
        loop.call_soon_threadsafe(written.set)
        gave_up.wait(10)
        await touch_once(statements, later)  # refused: the caller has gone
        return "done"

    transaction = asyncio.ensure_future(store._direct.in_transaction(work))
    await asyncio.wait_for(written.wait(), 5)
    transaction.cancel()
    with pytest.raises(asyncio.CancelledError):
        await transaction
    gave_up.set()
    # The next transaction waits for SQLite's write lock: the abandoned one has ended by then.
    other = store._thread_touch(unique("bob"), unique("t"), None, _now())
    await store._direct.in_transaction(lambda statements: touch_once(statements, other))
    assert await store.thread_owner(thread) is None
    assert await store.thread_owner(later_thread) is None
    assert store.engine.sync_engine.pool.checkedout() == 0
    # The abandoned connection ran no second INSERT, and no COMMIT.
    assert [sql.split()[0] for sql in traced[:3]] == ["BEGIN", "INSERT", "ROLLBACK"]


async def test_a_connection_checked_in_mid_transaction_is_rolled_back_and_only_then(store, monkeypatch):
    """The long-term engine's check-in rolls back only an open transaction (one hop saved a
    call), and still rolls that one back."""
    await store.thread_owner(unique("warm"))  # the pool's one connection, now idle
    traced = await _traced(store)
    pooled = await store.engine.raw_connection()
    await pooled.driver_connection.execute("UPDATE mt_threads SET status = status")  # begins one
    assert pooled.driver_connection.in_transaction
    await greenlet_spawn(pooled.close)
    assert traced[-1] == "ROLLBACK"
    hop, hops = aiosqlite.Connection._execute, []

    async def counted(self, fn, *args, **kwargs):
        hops.append(fn)
        return await hop(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    statement, params = _statements(store, unique("alice"), "topic1")[0]
    await store._direct.rows(statement, params)
    assert len(hops) == 1  # the read, and no ROLLBACK at its check-in
    monkeypatch.undo()
    pooled = await store.engine.raw_connection()
    try:
        assert not pooled.driver_connection.in_transaction
    finally:
        await greenlet_spawn(pooled.close)


async def test_a_transaction_that_awaits_something_else_commits_nothing(store):
    user, thread = unique("alice"), unique("t")
    touch = store._thread_touch(user, thread, None, _now())

    async def work(statements):
        await touch_once(statements, touch)
        await asyncio.sleep(0)  # not a statement: it would suspend in the driver's thread

    with pytest.raises(RuntimeError, match="awaited something other than its statements"):
        await store._direct.in_transaction(work)
    assert await store.thread_owner(thread) is None
    assert store.engine.sync_engine.pool.checkedout() == 0


def test_a_commit_is_not_begun_for_a_caller_gone_and_rolled_back_on_failure():
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x)")
    abandoned = threading.Event()

    def write_then_fail():
        connection.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("fails after its write")

    with pytest.raises(RuntimeError, match="after its write"):
        _committed(connection, abandoned, write_then_fail)
    assert not connection.in_transaction
    abandoned.set()
    ran = []
    with pytest.raises(Abandoned):
        _committed(connection, abandoned, lambda: ran.append(connection.execute("INSERT INTO t VALUES (2)")))
    assert ran == []
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (0,)
