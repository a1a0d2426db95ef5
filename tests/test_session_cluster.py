"""The session tier on a real 3-master Redis Cluster (``session.cluster: true``).

Every session operation runs through `redis.asyncio.cluster.RedisCluster`: the graph nodes'
load and save, ``manager.sessions`` start/get/update/list/end/sweep, an expired session archived
on load and by the sweeper, and ``manager.users`` export/forget. A user's keys must share one
slot (asked of the server with CLUSTER KEYSLOT), while the claims and the expiry index live in
other slots, so the store's non-transactional pipelines really do span slots and nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from helpers import memory_graph, turn_config, unique
from redis.asyncio.cluster import RedisCluster

from memory_tiers import ConfigError, MemoryManager, NotFoundError, OwnershipError, UsageError
from memory_tiers.session.store import SessionStore


def cluster_config(tmp_path: Path, url: str) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "session": {"url": url, "cluster": True, "key_prefix": unique("mt-cluster")},
    }


async def slot(client: Any, key: str) -> int:
    """The key's slot, as the server computes it."""
    return int(await client.execute_command("CLUSTER KEYSLOT", key))


async def user_keys(store: SessionStore, user_id: str) -> list[str]:
    return [key async for key in store.client.scan_iter(match=store.keys.user_pattern(user_id))]


async def expire(store: SessionStore, user_id: str, session_id: str) -> None:
    """As if the session's TTL ran out: its document and claim are gone, its shadow stays."""
    await store.client.delete(store.keys.session(user_id, session_id))
    await store.client.delete(store.keys.claim(session_id))
    await store.client.zadd(store.keys.index(user_id), {session_id: time.time() - 1})  # its score passed


async def test_every_session_operation_works_on_a_cluster_and_a_users_keys_share_a_slot(
    redis_cluster_url, tmp_path
):
    alice, bob = unique("alice"), unique("bob")
    s_turn, s_api, s_gone, s_swept = (unique("s") for _ in range(4))
    async with MemoryManager(cluster_config(tmp_path, redis_cluster_url)) as manager:
        store = manager.session_store
        assert isinstance(store.client, RedisCluster)
        assert len(store.client.get_primaries()) == 3

        # A graph turn: the load node reads the session, the save node writes it back.
        graph = memory_graph(manager)
        for _ in range(2):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, unique("t"), s_turn))
        assert (await manager.sessions.get(alice, s_turn)).data["turns"] == 2  # the session spans threads

        # manager.sessions, end to end.
        await manager.sessions.start(alice, s_api, {"summary": "planning"})
        with pytest.raises(UsageError):
            await manager.sessions.start(alice, s_api)
        updated = await manager.sessions.update(alice, s_api, {"topics": ["rome"]})
        assert updated.data == {"summary": "planning", "topics": ["rome"]}
        for sid in (s_gone, s_swept):
            await manager.sessions.start(alice, sid, {"summary": sid})
        assert sorted(await manager.sessions.list(alice)) == sorted([s_turn, s_api, s_gone, s_swept])
        with pytest.raises(OwnershipError):  # the claim lives in another slot than bob's keys
            await manager.sessions.start(bob, s_api)
        with pytest.raises(OwnershipError):
            await manager.sessions.get(bob, s_api)

        # One user's keys share a slot; claims and the expiry index are elsewhere.
        keys = await user_keys(store, alice)
        assert len(keys) >= 9  # 4 documents, 4 shadows, the index
        slots = {await slot(store.client, key) for key in keys}
        assert len(slots) == 1
        (alice_slot,) = slots
        others = {await slot(store.client, store.keys.claim(sid)) for sid in (s_turn, s_api, s_gone, s_swept)}
        others.add(await slot(store.client, store.keys.expiry_index()))
        assert alice_slot not in others and len(others) > 1
        assert await slot(store.client, store.keys.forgotten(alice)) == alice_slot

        # Expired, found by a load (archive on the read path); expired, found by the sweeper.
        await expire(store, alice, s_gone)
        with pytest.raises(NotFoundError):
            await manager.sessions.get(alice, s_gone)
        await expire(store, alice, s_swept)
        after_expiry = time.time() + store.ttl_seconds + 1  # every entry is due then
        assert await manager.sessions.sweep(now=after_expiry) == 1
        report = await store.sweep_expired(now=after_expiry)  # the live ones are rescheduled
        assert (report.examined, report.live, report.archived) == (2, 2, 0)
        archives = {a["session_id"]: a["data"] for a in await manager.long_term.list_archives(alice)}
        assert archives == {s_gone: {"summary": s_gone}, s_swept: {"summary": s_swept}}

        # end: archived, then deleted with its claim.
        await manager.sessions.end(alice, s_api)
        assert sorted(await manager.sessions.list(alice)) == [s_turn]  # s_gone's load did not re-list it
        assert await store.client.exists(store.keys.claim(s_api)) == 0
        await manager.sessions.start(bob, s_api, {"summary": "bob's now"})  # the id is free again

        # Users: export, then forget (claims released under WATCH/MULTI in their own slots).
        exported = await manager.users.export(alice)
        assert [s["session_id"] for s in exported["session"]["sessions"]] == [s_turn]
        report = await manager.users.forget(alice)
        assert report.sessions > 0
        assert await user_keys(store, alice) == [store.keys.forgotten(alice)]  # the short-lived tombstone
        assert await store.client.exists(store.keys.claim(s_turn)) == 0
        entries = await store.client.zrange(store.keys.expiry_index(), 0, -1)
        assert [store.keys.parse_expiry_member(m)[0] for m in entries] == [bob]
        assert (await manager.users.export(alice))["session"]["sessions"] == []
        # Bob is untouched.
        assert (await manager.sessions.get(bob, s_api)).data == {"summary": "bob's now"}
        await manager.users.forget(bob)


async def test_a_plain_client_on_a_cluster_node_fails_where_the_cluster_client_works(
    redis_cluster_url, tmp_path
):
    """The test would pass without the cluster client only if every key happened to hash to the
    first node: show that a plain connection to one node is redirected (MOVED) on some keys."""
    plain = redis.asyncio.Redis.from_url(redis_cluster_url, decode_responses=True)
    try:
        moved = 0
        for n in range(20):
            try:
                await plain.set(f"mt-cluster-probe:{{{n}}}", "1", ex=5)
                await plain.delete(f"mt-cluster-probe:{{{n}}}")
            except redis.exceptions.MovedError:
                moved += 1
        assert moved > 0
    finally:
        await plain.aclose()


async def test_cluster_with_an_in_process_url_is_a_config_error(tmp_path):
    config = {"data_dir": str(tmp_path / "data"), "session": {"cluster": True}}
    with pytest.raises(ConfigError, match=r"session\.cluster"):
        async with MemoryManager(config):
            pass


async def test_loading_an_expired_session_does_not_list_it_again(memory_config):
    """Regression: a sliding load re-scored an expired session's stale index entry (ZADD XX only
    checks the member), so `sessions.list` showed it for another TTL."""
    alice, sid = unique("alice"), unique("s")
    async with MemoryManager(memory_config) as manager:
        store = manager.session_store
        await manager.sessions.start(alice, sid)
        await expire(store, alice, sid)
        with pytest.raises(NotFoundError):
            await manager.sessions.get(alice, sid)
        assert await manager.sessions.list(alice) == []
