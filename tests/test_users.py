"""User data rights: `manager.users.export` and `manager.users.forget`, proved on the raw backends.

Every forget test populates two users, forgets one, and then looks into each backend directly
(SQL tables, the SQLite full-text index, Redis keys, the checkpointer's own storage) instead of
trusting the library's read API; the same probes must find the other user's data, so a probe
that sees nothing cannot pass by accident.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from helpers import memory_graph, turn_config, unique
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import BaseModel
from sqlalchemy import func, select

import memory_tiers.long_term.user_data
import memory_tiers.users
import memory_tiers.working.thread_data
from memory_tiers import FactCandidate, InvalidIdentifierError, MemoryManager, MemoryState, OwnershipError
from memory_tiers.errors import BackendError
from memory_tiers.extractors.rules import RulesExtractor
from memory_tiers.jsonable import to_json
from memory_tiers.long_term.schema import metadata
from memory_tiers.long_term.user_data import user_rows
from memory_tiers.session.users import FORGOTTEN_TTL_SECONDS
from memory_tiers.working.fencing import RedisHeads

USER_TABLES = [table for table in metadata.sorted_tables if "user_id" in table.c]


# -- two users' data ----------------------------------------------------------------------


@dataclass
class Person:
    """A user with a canary word planted in every tier."""

    user_id: str = field(default_factory=lambda: unique("user"))
    canary: str = field(default_factory=lambda: f"canary{uuid.uuid4().hex[:10]}")
    threads: list[str] = field(default_factory=lambda: [unique("t"), unique("t")])
    sessions: list[str] = field(default_factory=lambda: [unique("s"), unique("s")])
    live_session: str = field(default_factory=lambda: unique("s"))


async def populate(manager: MemoryManager, person: Person) -> None:
    """Turns on two threads (with a superseded fact), a profile, an API fact, a store item, an
    archive and a live session, each holding the person's canary."""
    graph = memory_graph(manager)
    user, canary = person.user_id, person.canary
    for thread, session, message in zip(
        person.threads,
        person.sessions,
        (f"I live in Rome. I like {canary}.", "I moved to Milan."),
        strict=True,
    ):
        await graph.ainvoke({"messages": [("user", message)]}, turn_config(user, thread, session))
    await manager.long_term.patch_profile(user, {"nickname": canary})
    await manager.long_term.add_facts(user, [FactCandidate(attribute="motto", value=f"{canary} motto")])
    await manager.store.for_user(user).aput(("notes",), "n1", {"text": canary})
    await manager.long_term.add_archive(user, kind="thread", summary=canary, data={"canary": canary})
    await manager.sessions.start(user, person.live_session, {"note": canary})


# -- probes on the raw backends -------------------------------------------------------------


async def sql_rows(manager: MemoryManager, user_id: str) -> dict[str, int]:
    """Rows of ``user_id`` in every long-term table that has a user_id column."""
    async with manager.long_term.engine.connect() as conn:
        return {
            table.name: await conn.scalar(
                select(func.count()).select_from(table).where(table.c.user_id == user_id)
            )
            for table in USER_TABLES
        }


async def is_tombstone(manager: MemoryManager, person: Person, key: str) -> bool:
    """The one key forget leaves: it says the user was just forgotten, holds no data, and
    expires within minutes (so that a sweeper mid-archive elsewhere takes its archive back)."""
    client = manager.session_store.client
    if key != manager.session_store.keys.forgotten(person.user_id):
        return False
    assert await client.get(key) == "1" and 0 < await client.ttl(key) <= FORGOTTEN_TTL_SECONDS
    return True


async def redis_leaks(manager: MemoryManager, person: Person) -> list[str]:
    """The person's session-tier entries, found by SCAN over this manager's key prefix: keys under
    their hash tag or claiming one of their session ids, and their members of the expiry index."""
    store = manager.session_store
    mine = [f"{{{person.user_id}}}"] + [f"{{{s}}}" for s in (*person.sessions, person.live_session)]
    found = [
        key
        async for key in store.client.scan_iter(match=f"{manager.config.session.key_prefix}:*", count=500)
        if any(tag in key for tag in mine) and not await is_tombstone(manager, person, key)
    ]
    index = store.keys.expiry_index()
    found += [
        f"{index} {member}"
        async for member, _ in store.client.zscan_iter(index)
        if member.startswith(f"{person.user_id} ")
    ]
    return found


async def checkpoint_entries(manager: MemoryManager, backend: str, thread_id: str) -> int:
    """What the checkpointer's own storage holds for the thread, counted in its own terms."""
    config = manager.config.working
    if backend == "memory":
        saver = manager.checkpointer.inner
        return (
            int(thread_id in saver.storage)
            + sum(key[0] == thread_id for key in saver.writes)
            + sum(key[0] == thread_id for key in saver.blobs)
        )
    if backend == "sqlite":
        with sqlite3.connect(Path(manager.data_dir) / "working.db") as conn:
            return sum(
                conn.execute(f"SELECT count(*) FROM {table} WHERE thread_id = ?", (thread_id,)).fetchone()[0]
                for table in ("checkpoints", "writes")
            )
    if backend == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(config.url.get_secret_value()) as conn:
            total = 0
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
                cursor = await conn.execute(
                    f"SELECT count(*) FROM {table} WHERE thread_id = %s", (thread_id,)
                )
                total += (await cursor.fetchone())[0]
            return total
    async with redis.asyncio.Redis.from_url(config.url.get_secret_value()) as client:
        return len([key async for key in client.scan_iter(match=f"*{thread_id}*", count=1000)])


async def probe(manager: MemoryManager, backend: str, person: Person) -> dict[str, Any]:
    """Everything of the person found by looking into the backends directly (the fencing heads
    through the fence's own store: a hash per thread in Redis, or the process's dictionary)."""
    heads = manager.checkpointer.fence.heads
    return {
        "sql": {name: n for name, n in (await sql_rows(manager, person.user_id)).items() if n},
        "redis": await redis_leaks(manager, person),
        "checkpoints": {t: n for t in person.threads if (n := await checkpoint_entries(manager, backend, t))},
        "heads": {t: found for t in person.threads if (found := await heads.read(t))},
    }


def assert_all_there(found: dict[str, Any], person: Person) -> None:
    assert set(found["sql"]) == {table.name for table in USER_TABLES}, found
    user_tag, claim = f"{{{person.user_id}}}", f"{{{person.live_session}}}"
    assert any(user_tag in key for key in found["redis"]) and any(claim in key for key in found["redis"])
    assert set(found["checkpoints"]) == set(person.threads), found
    assert set(found["heads"]) == set(person.threads), found


NOTHING = {"sql": {}, "redis": [], "checkpoints": {}, "heads": {}}


def assert_nothing_left(found: dict[str, Any]) -> None:
    assert found == NOTHING


# -- backends -----------------------------------------------------------------------------

FAMILIES = [
    pytest.param("embedded", "sqlite", id="embedded"),
    pytest.param("postgres+redis", "postgres", id="postgres+redis", marks=pytest.mark.postgres),
    pytest.param("embedded", "memory", id="memory-checkpointer"),
    pytest.param("embedded", "redis", id="redis-checkpointer", marks=pytest.mark.redis_stack),
]


def with_working(config: dict[str, Any], backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """``config`` with its working tier on ``backend`` (memory or Redis Stack), else as it is."""
    if backend == "memory":
        return {**config, "working": {"backend": "memory"}}
    if backend == "redis":
        return {**config, "working": {"backend": "redis", "url": request.getfixturevalue("redis_stack_url")}}
    return config


@pytest.fixture
def config(memory_config: dict[str, Any], backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The manager config of the family and checkpointer ``backend`` a test is parametrized with."""
    return with_working(memory_config, backend, request)


on_every_backend = pytest.mark.parametrize(("memory_config", "backend"), FAMILIES, indirect=["memory_config"])


async def two_people(manager: MemoryManager) -> tuple[Person, Person]:
    alice, bob = Person(), Person()
    for person in (alice, bob):
        await populate(manager, person)
    return alice, bob


@on_every_backend
async def test_forget_leaves_nothing_of_the_user_and_everything_of_the_other(
    config: dict[str, Any], backend: str
) -> None:
    async with MemoryManager(config) as manager:
        alice, bob = await two_people(manager)
        assert_all_there(await probe(manager, backend, alice), alice)

        report = await manager.users.forget(alice.user_id)

        assert_nothing_left(await probe(manager, backend, alice))
        assert_all_there(await probe(manager, backend, bob), bob)
        assert report.threads == 2 and report.long_term["mt_threads"] == 2
        assert report.sessions > 0 and report.long_term["mt_facts"] >= 4  # Rome (superseded), Milan, ...
        assert report.found_anything

        again = await manager.users.forget(alice.user_id)
        assert not again.found_anything
        assert_nothing_left(await probe(manager, backend, alice))

        # Bob's graph runs on, with his history and his memory.
        graph = memory_graph(manager)
        state = await graph.ainvoke(
            {"messages": [("user", "still there?")]}, turn_config(bob.user_id, bob.threads[0])
        )
        assert bob.canary in json.dumps(to_json(state["messages"]))
        assert state["profile"]["nickname"] == bob.canary
        # Alice may come back: her old thread id starts empty, her memory too.
        state = await graph.ainvoke(
            {"messages": [("user", "hello")]}, turn_config(alice.user_id, alice.threads[0])
        )
        assert [m.content for m in state["messages"]] == ["hello", "Hello stranger"]


@on_every_backend
async def test_forget_drops_the_checkpointers_cached_owners(config: dict[str, Any], backend: str) -> None:
    """The checkpointer caches a thread's owner; once forgotten, the thread id is free, and who
    claims it next (here in the registry, as another worker would) owns it: no cached entry may
    let the forgotten user back into it."""
    async with MemoryManager(config) as manager:
        alice, _ = await two_people(manager)
        await manager.users.forget(alice.user_id)
        newcomer, taken = unique("user"), alice.threads[0]
        await manager.long_term.claim_thread(newcomer, taken)
        with pytest.raises(OwnershipError):
            await memory_graph(manager).ainvoke(
                {"messages": [("user", "me again")]}, turn_config(alice.user_id, taken)
            )
        # Refused at the checkpointer, before LangGraph wrote her input into the thread.
        assert await checkpoint_entries(manager, backend, taken) == 0


def crash_on_call(real: Any, name: str, call: int) -> Any:
    """``real`` (async), raising on its ``call``-th call only, as a crash would."""
    calls = iter(range(1, 1_000))

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == call:
            raise ConnectionError(f"crash in {name}")
        return await real(*args, **kwargs)

    return flaky


def fail_on_call(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, call: int) -> None:
    """Make ``target.name`` (async) raise on its ``call``-th call only."""
    monkeypatch.setattr(target, name, crash_on_call(getattr(target, name), name, call))


@pytest.mark.parametrize("step", ["checkpoints", "heads", "sessions", "long_term"])
async def test_a_forget_that_crashed_part_way_is_finished_by_the_next(
    memory_config: dict[str, Any], step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = dict(memory_config.get("working") or {}).get("backend", "sqlite")
    async with MemoryManager(memory_config) as manager:
        alice, bob = await two_people(manager)
        second = sorted(alice.threads)[1]  # the registry lists threads in id order
        with monkeypatch.context() as patch:
            patch.setattr(memory_tiers.working.thread_data, "THREAD_BATCH", 1)
            if step == "checkpoints":  # the second batch's delete, after the first batch is done
                deletes = memory_tiers.working.thread_data._BATCH_DELETES
                for saver, delete in deletes.items():
                    patch.setitem(deletes, saver, crash_on_call(delete, saver, 2))
            elif step == "heads":  # the second batch deleted, its owners and heads not yet forgotten
                fail_on_call(patch, manager.checkpointer, "forget_owners", 2)
            elif step == "sessions":
                fail_on_call(patch, manager.session_store, "forget_user", 1)
            else:  # inside the SQL transaction, at its last table (the registry)
                real = memory_tiers.long_term.user_data._delete_statement

                def crash_at_registry(table: Any, user_id: str) -> Any:
                    if table.name == "mt_threads":
                        raise ConnectionError("crash in the transaction")
                    return real(table, user_id)

                patch.setattr(memory_tiers.long_term.user_data, "_delete_statement", crash_at_registry)
            with pytest.raises(ConnectionError, match="crash"):
                await manager.users.forget(alice.user_id)

        found = await probe(manager, backend, alice)
        # The long-term rows go in one transaction: all of them are still there, the registry too.
        assert set(found["sql"]) == {table.name for table in USER_TABLES}
        if step == "checkpoints":  # the thread after the crash is all there
            assert set(found["checkpoints"]) == set(found["heads"]) == {second}
        elif step == "heads":  # its checkpoints went, its head is left for the next call
            assert not found["checkpoints"] and set(found["heads"]) == {second}

        await manager.users.forget(alice.user_id)
        assert_nothing_left(await probe(manager, backend, alice))
        assert_all_there(await probe(manager, backend, bob), bob)


@pytest.mark.parametrize(("memory_config", "backend"), FAMILIES, indirect=["memory_config"])
async def test_forget_deletes_all_threads_at_once_and_their_heads_in_one_call(
    config: dict[str, Any], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a delete per thread (LangGraph's ``adelete_thread``): one statement on PostgreSQL, one
    commit on SQLite, two searches on the Redis checkpointer (the threads' writes, then their
    checkpoints), and one call (one DEL on Redis) for the fencing heads of all the threads."""
    async with MemoryManager(config) as manager:
        alice, bob = await two_people(manager)
        saver, heads = manager.checkpointer.inner, manager.checkpointer.fence.heads
        per_thread = crash_on_call(saver.adelete_thread, "adelete_thread", 1)
        monkeypatch.setattr(saver, "adelete_thread", per_thread)
        forgotten: list[set[str]] = []
        real_forget = heads.forget

        async def forget(*thread_ids: str) -> None:
            forgotten.append(set(thread_ids))
            await real_forget(*thread_ids)

        monkeypatch.setattr(heads, "forget", forget)
        statements: list[str] = []
        if backend == "postgres":
            import psycopg

            real_execute = psycopg.AsyncCursor.execute

            async def execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                if "checkpoint" in str(query):
                    statements.append(" ".join(str(query).split()))
                return await real_execute(cursor, query, *args, **kwargs)

            monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)
        commits: list[int] = []
        if backend == "sqlite":
            real_commit = saver.conn.commit

            async def commit() -> None:
                commits.append(1)
                await real_commit()

            monkeypatch.setattr(saver.conn, "commit", commit)
        searches: list[str] = []
        if backend == "redis":
            for index in (saver.checkpoint_writes_index, saver.checkpoints_index):

                async def search(query: Any, index: Any = index, real: Any = index.search) -> Any:
                    searches.append(index.name)
                    return await real(query)

                monkeypatch.setattr(index, "search", search)
        redis_dels: list[tuple[Any, ...]] = []
        client = manager.session_store.client
        if isinstance(heads, RedisHeads):
            real_command = client.execute_command

            async def execute_command(*args: Any, **options: Any) -> Any:
                if args[0] == "DEL" and any(":heads:" in str(key) for key in args[1:]):
                    redis_dels.append(args[1:])
                return await real_command(*args, **options)

            monkeypatch.setattr(client, "execute_command", execute_command)

        report = await manager.users.forget(alice.user_id)

        assert report.threads == 2
        assert forgotten == [set(alice.threads)]
        if backend == "postgres":
            assert len(statements) == 1 and statements[0].startswith("WITH writes AS (DELETE"), statements
        if backend == "sqlite":
            assert len(commits) == 1
        if backend == "redis":
            writes, checkpoints = saver.checkpoint_writes_index.name, saver.checkpoints_index.name
            assert searches == [writes, checkpoints]
        if isinstance(heads, RedisHeads):  # the postgres+redis family
            assert [set(keys) for keys in redis_dels] == [
                {manager.session_store.keys.thread_heads(t) for t in alice.threads}
            ]
        monkeypatch.undo()
        assert_nothing_left(await probe(manager, backend, alice))
        assert_all_there(await probe(manager, backend, bob), bob)


# -- export -------------------------------------------------------------------------------


class Scratch(MemoryState, total=False):
    scratch: dict[str, Any]


def scratch_agent(state: Scratch) -> dict[str, Any]:
    """Leaves values in the state that JSON has no form for."""
    return {
        "messages": [AIMessage("noted")],
        "scratch": {"raw": b"\x00\xff", "nan": float("nan"), "at": datetime(2024, 5, 1, tzinfo=UTC)},
    }


def human_texts(export: dict[str, Any]) -> list[str]:
    return [
        message["data"]["content"]
        for thread in export["working"]["threads"]
        for checkpoint in thread["checkpoints"]
        for message in checkpoint["channel_values"].get("messages", [])
        if message["type"] == "human"
    ]


@on_every_backend
async def test_export_holds_the_user_in_every_tier_and_nobody_else(
    config: dict[str, Any], backend: str
) -> None:
    async with MemoryManager(config) as manager:
        alice, bob = await two_people(manager)
        graph = manager.nodes.around(scratch_agent, Scratch).compile(checkpointer=manager.checkpointer)
        await graph.ainvoke(
            {"messages": [("user", "keep this")]}, turn_config(alice.user_id, alice.threads[0])
        )
        export = await manager.users.export(alice.user_id)

    dumped = json.dumps(export, allow_nan=False)
    assert bob.canary not in dumped and bob.user_id not in dumped
    assert export["format"] == memory_tiers.users.EXPORT_FORMAT and export["user_id"] == alice.user_id
    assert datetime.fromisoformat(export["exported_at"]).tzinfo is not None

    long_term = export["long_term"]
    assert long_term["profile"]["document"]["nickname"] == alice.canary
    history = {(f["attribute"], f["value"], f["superseded_by"] is None) for f in long_term["facts"]}
    assert {
        ("location", "Rome", False),
        ("location", "Milan", True),
        ("likes", alice.canary, True),
    } <= history
    assert all(fact["observations"] for fact in long_term["facts"])
    assert {row["thread_id"] for row in long_term["threads"]} == set(alice.threads)
    assert [row["summary"] for row in long_term["archives"]] == [alice.canary]
    assert [row["value"] for row in long_term["store_items"]] == [{"text": alice.canary}]
    assert {name for name in long_term} >= {"profile", "facts", "threads", "archives", "store_items"}

    sessions = {record["session_id"]: record for record in export["session"]["sessions"]}
    assert set(sessions) >= {alice.live_session, *alice.sessions}
    assert sessions[alice.live_session]["data"] == {"note": alice.canary}

    working = {thread["thread_id"]: thread["checkpoints"] for thread in export["working"]["threads"]}
    assert set(working) == set(alice.threads)
    assert f"I live in Rome. I like {alice.canary}." in human_texts(export)
    latest = working[alice.threads[0]][0]
    assert latest["parent_id"] == working[alice.threads[0]][1]["id"]
    assert datetime.fromisoformat(latest["ts"]) and latest["metadata"]["source"] == "loop"
    # AsyncRedisSaver keeps channel values as RedisJSON, which has no NaN: it stores null.
    nan = None if backend == "redis" else {"__type__": "builtins.float", "repr": "nan"}
    assert latest["channel_values"]["scratch"] == {
        "raw": {"__type__": "bytes", "base64": "AP8="},
        "nan": nan,
        "at": "2024-05-01T00:00:00+00:00",
    }


async def test_rows_read_one_per_page_are_the_rows_read_at_once(memory_config: dict[str, Any]) -> None:
    alice = Person()
    async with MemoryManager(memory_config) as manager:
        await populate(manager, alice)
        await manager.store.for_user(alice.user_id).aput(("notes", "more"), "n2", {"text": "second"})
        for table in USER_TABLES:
            paged = [row async for row in user_rows(manager.long_term, table, alice.user_id, page_size=1)]
            at_once = [row async for row in user_rows(manager.long_term, table, alice.user_id)]
            assert paged == at_once and at_once, table.name


async def test_export_and_forget_validate_the_user_id(tmp_path: Path) -> None:
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        for call in (manager.users.export, manager.users.forget):
            with pytest.raises(InvalidIdentifierError):
                await call("{alice}")
        assert (await manager.users.export(unique("nobody")))["long_term"]["facts"] == []


class Model(BaseModel):
    name: str
    at: datetime


def test_to_json_converts_what_json_cannot_hold() -> None:
    loop: list[Any] = []
    loop.append(loop)
    converted = to_json(
        {
            "message": HumanMessage("hi", id="m1"),
            "model": Model(name="x", at=datetime(2024, 1, 1, tzinfo=UTC)),
            "inf": float("-inf"),
            "set": {1},
            ("a", 1): "tuple key",
            "loop": loop,
            "other": object(),
        }
    )
    json.dumps(converted, allow_nan=False)
    assert converted["message"]["type"] == "human" and converted["message"]["data"]["content"] == "hi"
    assert converted["model"] == {"name": "x", "at": "2024-01-01T00:00:00Z"}
    assert converted["inf"] == {"__type__": "builtins.float", "repr": "-inf"}
    assert converted["set"] == [1] and converted["('a', 1)"] == "tuple key"
    assert converted["loop"] == [{"__type__": "builtins.list", "repr": "<cycle>"}]
    assert converted["other"]["__type__"] == "builtins.object"


# -- deferred learning ----------------------------------------------------------------------


def deferred(config: dict[str, Any], debounce: str) -> dict[str, Any]:
    long_term = {
        **dict(config.get("long_term") or {}),
        "extraction": {"mode": "deferred", "debounce": debounce},
    }
    return {**config, "long_term": long_term}


async def test_a_pending_deferred_turn_does_not_bring_facts_back(memory_config: dict[str, Any]) -> None:
    alice, bob = Person(), Person()
    async with MemoryManager(deferred(memory_config, "1h")) as manager:
        graph = memory_graph(manager)
        for person in (alice, bob):
            await graph.ainvoke(
                {"messages": [("user", f"I like {person.canary}.")]},
                turn_config(person.user_id, person.threads[0]),
            )
        assert manager.learner.deferred.pending == 2

        report = await manager.users.forget(alice.user_id)
        await manager.flush()

        assert report.deferred_turns == 1
        assert await sql_rows(manager, alice.user_id) == {table.name: 0 for table in USER_TABLES}
        assert [f.value for f in await manager.long_term.list_facts(bob.user_id)] == [bob.canary]


async def test_forget_waits_for_a_deferred_run_already_under_way(memory_config: dict[str, Any]) -> None:
    alice = Person()
    started, release = asyncio.Event(), asyncio.Event()

    class Slow(RulesExtractor):
        async def extract(self, messages, context):
            started.set()
            await release.wait()
            return super().extract(messages, context)

    async with MemoryManager(deferred(memory_config, "1ms")) as manager:
        manager.learner.extractors[:] = [Slow()]
        await memory_graph(manager).ainvoke(
            {"messages": [("user", f"I like {alice.canary}.")]}, turn_config(alice.user_id, alice.threads[0])
        )
        await started.wait()
        forget = asyncio.create_task(manager.users.forget(alice.user_id))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not forget.done()  # it waits for the run, which would otherwise write after it
        release.set()
        report = await forget

        assert report.deferred_turns == 0 and report.long_term["mt_facts"] == 1
        assert await sql_rows(manager, alice.user_id) == {table.name: 0 for table in USER_TABLES}


async def test_a_sqlite_batch_delete_that_fails_rolls_back_and_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The saver's connection is shared with every run: a half-done delete left open on it would
    be committed by the next checkpoint write."""
    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        alice, _ = await two_people(manager)
        saver = manager.checkpointer.inner
        real = saver.conn.executemany
        calls = iter(range(1, 100))

        async def second_table_fails(sql: str, rows: Any) -> Any:
            if next(calls) == 2:  # "writes" deleted, "checkpoints" not yet
                raise sqlite3.OperationalError("disk I/O error")
            return await real(sql, rows)

        monkeypatch.setattr(saver.conn, "executemany", second_table_fails)
        with pytest.raises(BackendError, match="disk I/O error"):
            await manager.users.forget(alice.user_id)
        monkeypatch.undo()

        assert not saver.conn.in_transaction
        found = await probe(manager, "sqlite", alice)
        assert set(found["checkpoints"]) == set(alice.threads)  # nothing of the batch went
        async with saver.lock:
            cursor = await saver.conn.execute(
                "SELECT count(*) FROM writes WHERE thread_id IN (?, ?)", tuple(alice.threads)
            )
            (writes,) = await cursor.fetchone()
        assert writes > 0  # the first table's deletes were rolled back too
        await manager.users.forget(alice.user_id)
        assert_nothing_left(await probe(manager, "sqlite", alice))
