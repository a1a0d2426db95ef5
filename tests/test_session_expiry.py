"""Sessions about to expire are archived into long-term memory before Redis drops them.

Expiry is simulated by deleting a session's document and claim ("as if its TTL ran out"; the
shadow copy stays, as it would) and sweeping with a later ``now``; the tests that need Redis
to expire keys itself use 1 s TTLs and bounded polls, never timed assertions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MEMORY_BACKENDS, PIPELINED_REDIS, memory_config_for
from helpers import memory_graph, turn_config, unique

from memory_tiers import MemoryManager, OwnershipError
from memory_tiers.session.store import SessionStore

POLL_LIMIT = 15.0  # seconds any bounded wait may take before the test fails


@pytest.fixture(params=[*MEMORY_BACKENDS, PIPELINED_REDIS])
def memory_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The suite's backends, and real Redis written by pipelines as well as by scripts."""
    return memory_config_for(request, tmp_path)


def with_session(memory_config: dict[str, Any], **session: Any) -> dict[str, Any]:
    return {**memory_config, "session": {**memory_config.get("session", {}), **session}}


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds; fail after POLL_LIMIT seconds."""
    deadline = time.monotonic() + POLL_LIMIT
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def expire(store: SessionStore, user_id: str, session_id: str) -> None:
    """As if the session's TTL ran out: its document and claim are gone, its shadow stays."""
    await store.client.delete(store.keys.session(user_id, session_id))
    await store.client.delete(store.keys.claim(session_id))


def a_moment_later() -> float:
    """A sweep time for a session Redis has just expired: fakeredis rounds a GETEX expiry down
    to a whole second, so its key can go up to 1 s before the index entry is due."""
    return time.time() + 1


def after_expiry(store: SessionStore) -> float:
    """A sweep time at which every session written so far is due."""
    return time.time() + store.ttl_seconds + 1


async def archived(manager: MemoryManager, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    return [(a["session_id"], a["data"]) for a in await manager.long_term.list_archives(user_id)]


async def expiry_entries(store: SessionStore) -> dict[str, float]:
    return dict(await store.client.zrange(store.keys.expiry_index(), 0, -1, withscores=True))


async def all_keys(store: SessionStore) -> list[str]:
    return sorted([k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")])


async def test_an_expired_session_is_archived_once_with_its_context(memory_config):
    alice, session = unique("alice"), unique("s")
    config = with_session(memory_config, ttl="1s", sweep_interval=None)
    async with MemoryManager(config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "planning a trip"})
        await manager.sessions.update(alice, session, {"topics": ["rome"]})
        key = store.keys.session(alice, session)
        await wait_for(lambda: _gone(store, key), "Redis to expire the session")  # real TTL

        assert await manager.sessions.sweep(now=a_moment_later()) == 1
        assert await manager.sessions.sweep(now=a_moment_later()) == 0
        rows = await manager.long_term.list_archives(alice)
        assert [(a["kind"], a["session_id"], a["summary"]) for a in rows] == [
            ("session", session, "planning a trip")
        ]
        assert rows[0]["data"] == {"summary": "planning a trip", "topics": ["rome"]}
        assert not await store.client.exists(store.keys.shadow(alice, session))
        assert store.keys.expiry_member(alice, session) not in await expiry_entries(store)


async def _gone(store: SessionStore, key: str) -> bool:
    return not await store.client.exists(key)


async def test_a_crash_between_archive_and_delete_leaves_one_archive_row(memory_config, monkeypatch):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "half done"})
        await expire(store, alice, session)
        real_add_archive = manager.long_term.add_archive
        crashes = iter([RuntimeError("crash after the archive")])

        async def archive_then_crash(*args, **kwargs):
            archive_id = await real_add_archive(*args, **kwargs)
            if (crash := next(crashes, None)) is not None:
                raise crash
            return archive_id

        monkeypatch.setattr(manager.long_term, "add_archive", archive_then_crash)
        with pytest.raises(RuntimeError, match="crash after the archive"):
            await manager.sessions.sweep(now=after_expiry(store))
        assert await store.client.exists(store.keys.shadow(alice, session))  # not cleaned up yet

        assert await manager.sessions.sweep(now=after_expiry(store)) == 1
        assert await archived(manager, alice) == [(session, {"summary": "half done"})]
        assert not await store.client.exists(store.keys.shadow(alice, session))
        assert await expiry_entries(store) == {}


async def test_a_stopped_sweeper_loses_nothing_within_the_grace_and_past_it_the_context_is_gone(
    memory_config,
):
    alice, kept, lost = unique("alice"), unique("kept"), unique("lost")
    # Within the grace: the session is gone, its shadow is not; a late sweep archives it.
    async with MemoryManager(with_session(memory_config, ttl="1s", sweep_interval=None)) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, kept, {"summary": "kept"})
        await wait_for(lambda: _gone(store, store.keys.session(alice, kept)), "Redis to expire the session")
        assert await manager.sessions.sweep(now=a_moment_later()) == 1

    # Past the grace Redis drops the shadow too: that context is gone for good, and the sweep
    # only clears its index entry.
    config = with_session(memory_config, ttl="1s", expiry_grace="1s", sweep_interval=None)
    async with MemoryManager(config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, lost, {"summary": "lost"})
        shadow = store.keys.shadow(alice, lost)
        await wait_for(lambda: _gone(store, shadow), "Redis to expire the shadow")
        report = await store.sweep_expired(now=a_moment_later())
        assert (report.archived, report.missing, report.lost) == (0, 1, 1)  # and a warning is logged
        assert await archived(manager, alice) == [(kept, {"summary": "kept"})]
        assert await expiry_entries(store) == {}


async def test_a_live_session_is_never_archived_and_sliding_reads_push_its_shadow(memory_config):
    alice, session = unique("alice"), unique("s")
    config = with_session(memory_config, ttl="100s", expiry_grace="1h")
    async with MemoryManager(config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "still talking"})
        shadow, member = store.keys.shadow(alice, session), store.keys.expiry_member(alice, session)
        assert 3600 < await store.client.ttl(shadow) <= 3700
        # As if 90 s had passed since the last write:
        await store.client.expire(shadow, 3610)
        await store.client.zadd(store.keys.expiry_index(), {member: time.time() + 10})
        before_read = time.time()
        await manager.sessions.get(alice, session)  # slides the session, its shadow and its entry
        assert 3690 < await store.client.ttl(shadow) <= 3700
        assert (await expiry_entries(store))[member] >= before_read + 100

        # Even a sweep that believes everything is due finds it alive and only reschedules it.
        assert await manager.sessions.sweep(now=time.time() + 10_000) == 0
        assert (await manager.sessions.get(alice, session)).data == {"summary": "still talking"}
        assert await store.client.exists(shadow)
        assert (await expiry_entries(store))[member] > time.time()
        assert await archived(manager, alice) == []


async def test_a_save_racing_the_archive_is_not_lost(memory_config, monkeypatch):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "old"})
        await expire(store, alice, session)
        real_add_archive = manager.long_term.add_archive

        async def archive_while_a_save_lands(*args, **kwargs):
            archive_id = await real_add_archive(*args, **kwargs)
            await store.save(alice, session, {"summary": "new"})  # another worker, same moment
            return archive_id

        monkeypatch.setattr(manager.long_term, "add_archive", archive_while_a_save_lands)
        assert await manager.sessions.sweep(now=after_expiry(store)) == 1
        monkeypatch.undo()

        # The sweep saw the shadow change under its WATCH and left the new session alone.
        assert (await manager.sessions.get(alice, session)).data == {"summary": "new"}
        assert store.keys.expiry_member(alice, session) in await expiry_entries(store)
        await expire(store, alice, session)
        assert await manager.sessions.sweep(now=after_expiry(store)) == 1
        assert sorted(data["summary"] for _, data in await archived(manager, alice)) == ["new", "old"]


async def test_a_save_racing_the_index_cleanup_keeps_its_entry(memory_config, monkeypatch):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "old"})
        await expire(store, alice, session)
        real_zrem = store.client.zrem

        async def zrem_after_a_save(*args):
            await store.save(alice, session, {"summary": "new"})  # lands between DEL and ZREM
            return await real_zrem(*args)

        monkeypatch.setattr(store.client, "zrem", zrem_after_a_save)
        assert await manager.sessions.sweep(now=after_expiry(store)) == 1
        monkeypatch.undo()

        # The ZREM removed the new session's entry; the check after it put the entry back.
        assert (await expiry_entries(store))[store.keys.expiry_member(alice, session)] > time.time()
        await expire(store, alice, session)
        assert await manager.sessions.sweep(now=after_expiry(store)) == 1
        assert sorted(data["summary"] for _, data in await archived(manager, alice)) == ["new", "old"]


async def test_reusing_an_expired_session_id_archives_the_old_context_first(memory_config):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "trip to rome"})
        await expire(store, alice, session)
        record = await manager.sessions.start(alice, session, {"summary": "a new topic"})
        assert record.data == {"summary": "a new topic"}
        assert await archived(manager, alice) == [(session, {"summary": "trip to rome"})]  # no sweep yet
        assert await manager.sessions.sweep(now=time.time() + 1) == 0

        # The same through the graph: the load node archives the expired turn-1 context.
        thread, graph_session = unique("t"), unique("s")
        graph = memory_graph(manager)
        config = turn_config(alice, thread, graph_session)
        await graph.ainvoke({"messages": [("user", "hi")]}, config)
        await expire(store, alice, graph_session)
        out = await graph.ainvoke({"messages": [("user", "hi again")]}, config)
        assert out["session"] == {"turns": 1}  # a fresh session
        assert (graph_session, {"turns": 1}) in await archived(manager, alice)


async def test_another_user_cannot_reuse_an_expired_id_to_read_its_context(memory_config):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"secret": "canary-123"})
        await expire(store, alice, session)

        record = await manager.sessions.start(bob, session)  # the id is free again
        assert record.data == {}
        assert "canary-123" not in repr(await store.export_user(bob))
        with pytest.raises(OwnershipError):
            await manager.sessions.start(alice, session)  # now bob holds it

        assert await manager.sessions.sweep(now=after_expiry(store)) == 1  # alice's old context
        assert await archived(manager, alice) == [(session, {"secret": "canary-123"})]
        assert await manager.long_term.list_archives(bob) == []
        assert (await manager.sessions.get(bob, session)).data == {}


async def test_without_archive_on_expiry_no_shadow_or_index_is_written(memory_config):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(with_session(memory_config, archive_on_expiry=False)) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "x"})
        await manager.sessions.update(alice, session, {"more": 1})
        await manager.sessions.get(alice, session)
        keys = await all_keys(store)
        assert store.keys.session(alice, session) in keys
        assert not [k for k in keys if "session-shadow" in k or k == store.keys.expiry_index()]
        await expire(store, alice, session)
        assert await manager.sessions.sweep(now=after_expiry(store)) == 0


async def test_end_drops_the_shadow_and_the_index_entry(memory_config):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "done"})
        await manager.sessions.end(alice, session)
        assert not await store.client.exists(store.keys.shadow(alice, session))
        assert await expiry_entries(store) == {}
        assert await manager.sessions.sweep(now=after_expiry(store)) == 0
        assert await archived(manager, alice) == [(session, {"summary": "done"})]


async def test_export_and_forget_a_user(memory_config):
    alice, bob = unique("alice"), unique("bob")
    alice_too = alice + "0"  # an id that extends alice's must not match her patterns
    live, expired, other = unique("s"), unique("s"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, live, {"summary": "live"})
        await manager.sessions.start(alice, expired, {"summary": "expired"})
        await expire(store, alice, expired)
        await manager.sessions.start(bob, other, {"summary": "bob's"})
        await manager.sessions.start(alice_too, unique("s"), {"summary": "not alice"})
        untouched = [k for k in await all_keys(store) if f"{{{alice}}}" not in k and live not in k]

        exported = await store.export_user(alice)
        assert [(r.session_id, r.data, r.expired) for r in exported] == [
            (live, {"summary": "live"}, False),
            (expired, {"summary": "expired"}, True),
        ]

        assert await store.forget_user(alice) > 0
        keys = await all_keys(store)
        # Only the tombstone, which holds no data and expires in minutes.
        assert [k for k in keys if f"{{{alice}}}" in k] == [store.keys.forgotten(alice)]
        keys.remove(store.keys.forgotten(alice))
        assert store.keys.claim(live) not in keys
        assert not [m for m in await expiry_entries(store) if m.split(" ")[0] == alice]
        assert sorted(keys) == sorted(untouched)  # bob's and alice_too's keys are intact
        assert (await manager.sessions.get(bob, other)).data == {"summary": "bob's"}

        assert await store.forget_user(alice) == 0
        assert await store.export_user(alice) == []


async def test_forget_finds_an_entry_only_the_expiry_index_names_and_pages_through_the_others(
    memory_config, monkeypatch
):
    alice, stale, others = unique("alice"), unique("s"), 3000
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        index = store.keys.expiry_index()
        # Alice's session expired and so did its shadow (no sweeper ran): only its index entry
        # still names her, among other users' entries.
        await store.client.zadd(index, {store.keys.expiry_member(alice, stale): time.time() - 3600})
        entries = {store.keys.expiry_member(f"other-{n}", "s"): n for n in range(others)}
        await store.client.zadd(index, entries)
        sent: list[str] = []
        execute_command = type(store.client).execute_command

        async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
            sent.append(str(args[0]).upper())
            return await execute_command(self, *args, **kwargs)

        monkeypatch.setattr(type(store.client), "execute_command", recorded)
        removed = await store.forget_user(alice)
        monkeypatch.undo()
        left = await expiry_entries(store)

    assert removed == 1
    assert store.keys.expiry_member(alice, stale) not in left and len(left) == others
    # Pages of about a thousand entries, not Redis' default ten (about 300 round trips here).
    assert 1 <= sent.count("ZSCAN") <= 10


async def test_the_manager_sweeps_periodically_and_survives_a_failing_sweep(
    memory_config, monkeypatch, caplog
):
    alice, session = unique("alice"), unique("s")
    config = with_session(memory_config, ttl="1s", sweep_interval="100ms")
    caplog.set_level(logging.WARNING, logger="memory_tiers.session.expiry")
    async with MemoryManager(config) as manager:
        expiry = manager.session_store.expiry
        assert expiry is not None
        real_sweep = expiry.sweep
        failures = iter([RuntimeError("redis hiccup")])

        async def flaky_sweep(**kwargs):
            if (failure := next(failures, None)) is not None:
                raise failure
            return await real_sweep(**kwargs)

        monkeypatch.setattr(expiry, "sweep", flaky_sweep)
        await manager.sessions.start(alice, session, {"summary": "swept in the background"})

        async def archived_in_background() -> bool:
            return bool(await manager.long_term.list_archives(alice))

        await wait_for(archived_in_background, "the background sweeper to archive the session")
        assert await archived(manager, alice) == [(session, {"summary": "swept in the background"})]
    assert "session expiry sweep failed" in caplog.text


async def test_a_sweep_pages_through_the_index_and_skips_what_it_cannot_read(memory_config, monkeypatch):
    from memory_tiers.session import expiry

    monkeypatch.setattr(expiry, "_PAGE", 2)  # several pages from a handful of entries
    alice = unique("alice")
    live = [unique("live") for _ in range(3)]
    gone, garbled = unique("gone"), unique("garbled")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        for session in (*live, gone, garbled):
            await manager.sessions.start(alice, session, {"summary": session})
        await expire(store, alice, gone)
        await expire(store, alice, garbled)
        await store.client.set(store.keys.shadow(alice, garbled), "{not json")

        report = await store.sweep_expired(now=after_expiry(store))  # every entry is due
        assert (report.examined, report.archived, report.live, report.unreadable) == (5, 1, 3, 1)
        assert await archived(manager, alice) == [(gone, {"summary": gone})]
        assert (await store.sweep_expired(now=after_expiry(store), limit=2)).examined == 2


async def test_forgetting_a_user_while_a_sweep_archives_their_session_leaves_nothing(memory_config):
    # The sweep has read the shadow; the user is forgotten (shadow and long-term rows deleted)
    # before the sweep writes its archive row. The forget's tombstone makes the sweep take its
    # row back, so the user does not come back to life in long-term memory.
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(with_session(memory_config, sweep_interval=None)) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "secret plans"})
        await expire(store, alice, session)
        target = manager.sessions.archive_target
        archive = target.archive

        async def forgotten_meanwhile(record: Any) -> object:
            await manager.users.forget(alice)
            return await archive(record)

        target.archive = forgotten_meanwhile  # type: ignore[method-assign]
        await manager.sessions.sweep(now=after_expiry(store))
        target.archive = archive  # type: ignore[method-assign]
        archives = await manager.long_term.list_archives(alice)
        leftovers = [key for key in await all_keys(store) if f"{{{alice}}}" in key]

    assert archives == []
    assert leftovers == [store.keys.forgotten(alice)]
