"""The session tier: TTL written with the value, sliding reads, owner claims, per-user index."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis
from conftest import MEMORY_BACKENDS, PIPELINED_REDIS, memory_config_for
from helpers import unique
from redis.asyncio.cluster import RedisCluster
from services import private_redis

from memory_tiers import MemoryManager, NotFoundError, OwnershipError, UsageError
from memory_tiers.session.clients import runs_scripts


@pytest.fixture(params=[*MEMORY_BACKENDS, PIPELINED_REDIS])
def memory_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    """The suite's backends, and real Redis written by pipelines as well as by scripts."""
    return memory_config_for(request, tmp_path)


async def test_value_and_ttl_are_written_together_and_reads_slide_the_ttl(memory_config):
    alice, session = unique("alice"), unique("s")
    config = {**memory_config, "session": {**memory_config.get("session", {}), "ttl": "100s"}}
    async with MemoryManager(config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session, {"summary": "hello"})
        key = store.keys.session(alice, session)
        # The write alone gave the document and the new claim their TTL.
        assert 90 < await store.client.ttl(key) <= 100
        assert 90 < await store.client.ttl(store.keys.claim(session)) <= 100
        await store.client.expire(key, 10)  # as if 90 s had passed
        record = await manager.sessions.get(alice, session)
        assert record.data == {"summary": "hello"}
        assert 90 < await store.client.ttl(key) <= 100
        assert 90 < await store.client.ttl(store.keys.claim(session)) <= 100


async def test_without_sliding_reads_leave_the_ttl_alone(memory_config):
    alice, session = unique("alice"), unique("s")
    config = {**memory_config, "session": {**memory_config.get("session", {}), "sliding": False}}
    async with MemoryManager(config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session)
        await store.client.expire(store.keys.session(alice, session), 10)
        await manager.sessions.get(alice, session)
        assert await store.client.ttl(store.keys.session(alice, session)) <= 10


async def test_keys_carry_the_prefix_and_the_user_hash_tag(memory_config):
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session)
        keys = sorted([k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")])
    prefix = store.keys.prefix
    assert f"{prefix}:{{{alice}}}:session:{session}" in keys
    assert f"{prefix}:{{{alice}}}:sessions" in keys
    assert f"{prefix}:session-owner:{{{session}}}" in keys


async def test_lifecycle_start_update_list_end_archives_to_long_term(memory_config):
    alice = unique("alice")
    s1, s2 = unique("s"), unique("s")
    async with MemoryManager(memory_config) as manager:
        await manager.sessions.start(alice, s1, {"summary": "planning a trip"})
        await manager.sessions.start(alice, s2)
        with pytest.raises(UsageError):
            await manager.sessions.start(alice, s1)
        updated = await manager.sessions.update(alice, s1, {"topics": ["rome"]})
        assert updated.data == {"summary": "planning a trip", "topics": ["rome"]}
        assert sorted(await manager.sessions.list(alice)) == sorted([s1, s2])
        await manager.sessions.end(alice, s1)
        assert await manager.sessions.list(alice) == [s2]
        with pytest.raises(NotFoundError):
            await manager.sessions.get(alice, s1)
        archives = await manager.long_term.list_archives(alice)
    assert [(a["kind"], a["session_id"], a["summary"]) for a in archives] == [
        ("session", s1, "planning a trip")
    ]


async def test_another_user_cannot_read_update_or_end_a_session(memory_config):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config) as manager:
        await manager.sessions.start(alice, session, {"secret": "canary-123"})
        for call in (
            manager.sessions.get(bob, session),
            manager.sessions.update(bob, session, {"x": 1}),
            manager.sessions.end(bob, session),
            manager.sessions.start(bob, session),
        ):
            with pytest.raises(OwnershipError):
                await call
        assert (await manager.sessions.get(alice, session)).data == {"secret": "canary-123"}
        assert await manager.sessions.list(bob) == []


async def test_an_ended_session_id_can_be_claimed_again(memory_config):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config) as manager:
        await manager.sessions.start(alice, session)
        await manager.sessions.end(alice, session)
        record = await manager.sessions.start(bob, session)
    assert record.user_id == bob


async def test_a_save_refused_for_another_users_session_id_writes_nothing(memory_config):
    alice, bob, session = unique("alice"), unique("bob"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await store.save(alice, session, {"secret": "canary-123"})
        with pytest.raises(OwnershipError):
            await store.save(bob, session, {"x": 1})
        bobs_keys = [k async for k in store.client.scan_iter(match=store.keys.user_pattern(bob))]
        assert bobs_keys == []
        assert await store.client.zrange(store.keys.expiry_index(), 0, -1) == [
            store.keys.expiry_member(alice, session)
        ]
        assert await store.client.get(store.keys.claim(session)) == alice
        assert (await store.get(alice, session)).data == {"secret": "canary-123"}


async def test_a_resent_load_of_an_expired_session_still_takes_it_off_the_list(memory_config, monkeypatch):
    """A read redis-py sends again after a connection error (the same command, the same
    expiry time) must leave the index as one read does, though its first attempt, whose reply
    was lost, already re-scored or removed the entry."""
    alice, session = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, session)
        await store.client.delete(store.keys.session(alice, session))  # its TTL ran out
        expires_at = store._expires_at()
        monkeypatch.setattr(store, "_expires_at", lambda: expires_at)
        send_once = store.scripts.read if store.scripts is not None else store._read_pipelined
        await send_once(alice, session, expires_at)  # the attempt whose reply was lost
        assert await store.load(alice, session) is None  # the resent read
        assert await manager.sessions.list(alice) == []
        assert await store.client.zscore(store.keys.index(alice), session) is None


async def test_reads_and_writes_are_scripts_only_on_a_standalone_redis_with_scripts_on(memory_config):
    async with MemoryManager(memory_config) as manager:
        session = manager.config.session
        # The documented rule: a Cluster and memory:// (fakeredis) always use pipelines.
        in_process = session.url.get_secret_value().startswith("memory://")
        expected = session.scripts and not session.cluster and not in_process
        assert (manager.session_store.scripts is not None) == expected


async def test_a_redis_that_forgot_the_scripts_is_sent_them_again(tmp_path):
    alice, session = unique("alice"), unique("s")
    with private_redis(aof=False) as server:
        config = {"data_dir": str(tmp_path / "data"), "session": {"url": server.url}}
        async with MemoryManager(config) as manager:
            store = manager.session_store
            assert store.scripts is not None
            await store.save(alice, session, {"n": 1})
            await store.client.script_flush()  # as after a restart: the server has no scripts
            assert (await store.get(alice, session)).data == {"n": 1}
            await store.client.script_flush()
            await store.save(alice, session, {"n": 2})
            assert (await store.get(alice, session)).data == {"n": 2}


def test_only_a_standalone_redis_py_client_is_sent_scripts():
    class OwnFake(fakeredis.FakeAsyncRedis):
        pass

    assert runs_scripts(aioredis.Redis())  # not connected: the choice is by client kind
    assert not runs_scripts(fakeredis.FakeAsyncRedis())
    assert not runs_scripts(OwnFake())  # a subclass of fakeredis is still fakeredis
    assert not runs_scripts(RedisCluster(host="127.0.0.1", port=1))
