"""Thread ids that differ only in case are two threads, of two users, on the Redis checkpointer
(and the filter that keeps them apart leaves what other savers listed as it was).

AsyncRedisSaver finds a thread's documents by a RediSearch TAG field, which folds case: its own
``alist``, ``adelete_thread`` and ``aprune`` for thread ``Thread-X`` also reach ``thread-x``.
Through memory_tiers, nothing one user does to ``Thread-X`` lists, exports, prunes or deletes
anything of another user's ``thread-x``.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import turn_config, unique
from langgraph.types import Command
from test_threads import log_graph, states

from memory_tiers import MemoryManager
from memory_tiers.working import redis_saver


def _two_threads() -> tuple[str, str]:
    """Alice's and Bob's thread ids: the same but for case."""
    token = unique("thread")
    return token.upper(), token.lower()


def _alice_and_bob() -> tuple[str, str, str, str]:
    """Two users and their threads, whose ids differ only in case."""
    alice_thread, bob_thread = _two_threads()
    return unique("alice"), unique("bob"), alice_thread, bob_thread


def _redis_manager(redis_stack_url: str, tmp_path: Any) -> MemoryManager:
    return MemoryManager({"data_dir": str(tmp_path), "working": {"backend": "redis", "url": redis_stack_url}})


async def _keys(saver: Any, thread: str) -> set[str]:
    """Every key of the thread's checkpoints and writes (SCAN's MATCH is case-sensitive)."""
    found = set()
    for kind in ("checkpoint", "checkpoint_write", "checkpoint_latest"):
        async for key in saver._redis.scan_iter(f"{kind}:{thread}:*", count=1000):
            found.add(key.decode() if isinstance(key, bytes) else key)
    return found


async def _bob_waits_and_alice_talks(
    manager: MemoryManager, alice: str, bob: str, alice_thread: str, bob_thread: str
) -> Any:
    graph = log_graph(manager, ask=True)
    for answer in "ab":
        await graph.ainvoke({"turns": 0}, turn_config(bob, bob_thread))
        await graph.ainvoke(Command(resume=answer), turn_config(bob, bob_thread))
    await graph.ainvoke({"turns": 0}, turn_config(bob, bob_thread))  # waits for an answer
    for answer in "cde":
        await graph.ainvoke({"turns": 0}, turn_config(alice, alice_thread))
        await graph.ainvoke(Command(resume=answer), turn_config(alice, alice_thread))
    return graph


@pytest.mark.redis_stack
async def test_listings_and_exports_hold_only_the_users_own_thread(redis_stack_url, tmp_path):
    alice, bob, alice_thread, bob_thread = _alice_and_bob()
    async with _redis_manager(redis_stack_url, tmp_path) as manager:
        graph = await _bob_waits_and_alice_talks(manager, alice, bob, alice_thread, bob_thread)
        saver = manager.checkpointer.inner
        mine = {
            key.rsplit(":", 1)[1] for key in await _keys(saver, alice_thread) if key.startswith("checkpoint:")
        }
        upstream = [t async for t in saver.alist({"configurable": {"thread_id": alice_thread}})]
        listed = [t async for t in manager.checkpointer.alist({"configurable": {"thread_id": alice_thread}})]
        first = [t async for t in manager.checkpointer.alist(turn_config(alice, alice_thread), limit=2)]
        history = await states(graph, alice, alice_thread)
        exported = (await manager.users.export(alice))["working"]["threads"]
        info = await manager.threads.history(alice, alice_thread)

    assert len(upstream) > len(mine), "the saver's own listing must fold case for this test to mean anything"
    assert {t.config["configurable"]["checkpoint_id"] for t in listed} == mine
    assert len(first) == 2 and {t.config["configurable"]["thread_id"] for t in first} == {alice_thread}
    assert set(history) == mine
    assert [t["thread_id"] for t in exported] == [alice_thread]
    assert {c["id"] for c in exported[0]["checkpoints"]} == mine
    assert {c.checkpoint_id for c in info} <= mine and info


@pytest.mark.redis_stack
@pytest.mark.parametrize("page", [None, 3], ids=["pages-of-1000", "pages-of-3"])
@pytest.mark.parametrize("action", ["prune", "delete", "archive", "forget", "adelete_thread"])
async def test_what_one_user_removes_leaves_the_other_users_thread_whole(
    redis_stack_url, tmp_path, monkeypatch, action, page
):
    if page is not None:  # every search pages, with the other thread's documents on its pages
        monkeypatch.setattr(redis_saver, "PAGE", page)
    alice, bob, alice_thread, bob_thread = _alice_and_bob()
    working = {"backend": "redis", "url": redis_stack_url, "retention": {"keep_last": 1}}
    async with MemoryManager({"data_dir": str(tmp_path), "working": working}) as manager:
        graph = await _bob_waits_and_alice_talks(manager, alice, bob, alice_thread, bob_thread)
        saver = manager.checkpointer.inner
        bob_before, bob_keys = await states(graph, bob, bob_thread), await _keys(saver, bob_thread)
        alice_keys = await _keys(saver, alice_thread)
        if action == "prune":
            report = await manager.retention.run()
            assert report.failed == {} and report.pruned_threads >= 1
        elif action == "delete":
            assert await manager.threads.delete(alice, alice_thread) is True
        elif action == "archive":
            await manager.threads.archive(alice, alice_thread)
        elif action == "forget":
            await manager.users.forget(alice)
        else:
            await manager.checkpointer.adelete_thread(alice_thread)
        alice_left = await _keys(saver, alice_thread)
        if action == "prune":  # bob's own thread may be pruned too, by its own plan: compare its head
            bob_head = max(bob_before)
            assert (await states(graph, bob, bob_thread))[bob_head] == bob_before[bob_head]
        else:
            assert await states(graph, bob, bob_thread) == bob_before
            assert await _keys(saver, bob_thread) == bob_keys
        resumed = await graph.ainvoke(Command(resume="z"), turn_config(bob, bob_thread))

    assert bob_before[max(bob_before)][2] == ("approve?",)  # bob's pending interrupt, kept
    assert resumed["log"] == ["turn-1:a", "turn-2:b", "turn-3:z"]
    assert alice_left < alice_keys if action == "prune" else not alice_left


async def test_a_listing_by_a_number_still_finds_the_thread_on_sqlite(tmp_path):
    """AsyncSqliteSaver matches a thread named by a number to its text id (PostgreSQL's and the
    in-memory saver do not): the exact-thread filter compares ids as text, so it keeps that."""
    from langgraph.checkpoint.base import empty_checkpoint

    async with MemoryManager({"data_dir": str(tmp_path)}) as manager:
        config = {"configurable": {"thread_id": "4242", "checkpoint_ns": ""}}
        await manager.checkpointer.inner.aput(config, empty_checkpoint(), {}, {})
        upstream = [t async for t in manager.checkpointer.inner.alist({"configurable": {"thread_id": 4242}})]
        listed = [t async for t in manager.checkpointer.alist({"configurable": {"thread_id": 4242}})]

    assert len(upstream) == 1
    assert [t.config["configurable"]["thread_id"] for t in listed] == ["4242"]


@pytest.mark.redis_stack
async def test_a_limited_listing_asks_the_saver_for_more_only_while_other_threads_fill_it(
    redis_stack_url, tmp_path, monkeypatch
):
    alice, bob, alice_thread, bob_thread = _alice_and_bob()
    async with _redis_manager(redis_stack_url, tmp_path) as manager:
        graph = log_graph(manager)
        for _ in range(2):
            await graph.ainvoke({"turns": 0}, turn_config(alice, alice_thread))
        for _ in range(4):  # bob's checkpoints are the newest: they come first in the saver's listing
            await graph.ainvoke({"turns": 0}, turn_config(bob, bob_thread))
        saver = manager.checkpointer.inner
        alices = [t async for t in manager.checkpointer.alist(turn_config(alice, alice_thread))]
        asked: list[Any] = []
        real = saver.alist

        def counted(config: Any, **kwargs: Any) -> Any:
            asked.append(kwargs.get("limit"))
            return real(config, **kwargs)

        monkeypatch.setattr(saver, "alist", counted)
        newest = [t async for t in manager.checkpointer.alist(turn_config(alice, alice_thread), limit=2)]
        asked_for_two, asked = asked, []
        one = [t async for t in manager.checkpointer.alist(turn_config(bob, bob_thread), limit=1)]

    ids = [t.config["configurable"]["checkpoint_id"] for t in newest]
    assert ids == [t.config["configurable"]["checkpoint_id"] for t in alices[:2]]
    assert asked_for_two[0] == 2 and asked_for_two == sorted(asked_for_two) and len(asked_for_two) > 1
    assert asked == [1] and one[0].config["configurable"]["thread_id"] == bob_thread


@pytest.mark.redis_stack
async def test_a_checkpoint_written_between_the_savers_listings_is_not_listed_twice(
    redis_stack_url, tmp_path, monkeypatch
):
    alice, bob, alice_thread, bob_thread = _alice_and_bob()
    async with _redis_manager(redis_stack_url, tmp_path) as manager:
        graph = log_graph(manager)
        await graph.ainvoke({"turns": 0}, turn_config(alice, alice_thread))
        for _ in range(2):  # bob's checkpoints come between alice's old and new ones
            await graph.ainvoke({"turns": 0}, turn_config(bob, bob_thread))
        await graph.ainvoke({"turns": 0}, turn_config(alice, alice_thread))
        saver = manager.checkpointer.inner
        before = [t async for t in manager.checkpointer.alist(turn_config(alice, alice_thread))]
        real, listings = saver.alist, []

        async def alice_talks_after_the_first(config: Any, **kwargs: Any) -> Any:
            listings.append(kwargs.get("limit"))
            async for tup in real(config, **kwargs):
                yield tup
            if len(listings) == 1:
                await graph.ainvoke({"turns": 0}, turn_config(alice, alice_thread))

        monkeypatch.setattr(saver, "alist", alice_talks_after_the_first)
        newest = [t async for t in manager.checkpointer.alist(turn_config(alice, alice_thread), limit=4)]

    ids = [t.config["configurable"]["checkpoint_id"] for t in newest]
    assert len(before) >= 4 and len(listings) > 1, "the first listing must stop in bob's checkpoints"
    assert ids == [t.config["configurable"]["checkpoint_id"] for t in before[:4]]
