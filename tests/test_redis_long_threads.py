"""A thread longer than AsyncRedisSaver's listing lists, exports and shows its history whole.

``AsyncRedisSaver.alist`` without a limit returns the newest 10,000 checkpoints of a thread
(its search's default size). Through memory_tiers the listing asks for as many as the thread
has, so a longer thread's export, history and LangGraph's ``aget_state_history`` hold all of it.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import turn_config, unique
from langgraph.checkpoint.base.id import uuid6
from test_redis_thread_ids import _keys
from test_threads import log_graph

from memory_tiers import MemoryManager
from memory_tiers.working import redis_saver

OLD_BRANCH = redis_saver.LISTING_CAP + 50


async def _add_old_branch(saver: Any, thread: str, ids: list[str]) -> None:
    """Write checkpoints ``ids`` (older than the thread's own) as a chain of copies of the
    thread's first checkpoint document, in one pipeline (the saver would take seconds)."""
    first = min(await _checkpoint_ids(saver, thread))
    template = await saver._redis.json().get(saver._make_redis_checkpoint_key(thread, "", first))
    pipeline = saver._redis.pipeline(transaction=False)
    parent = ""
    for cid in ids:
        doc = {**template, "checkpoint_id": cid, "parent_checkpoint_id": parent}
        doc["checkpoint"] = {**template["checkpoint"], "id": cid}
        pipeline.json().set(saver._make_redis_checkpoint_key(thread, "", cid), "$", doc)
        parent = cid
    await pipeline.execute()


async def _checkpoint_ids(saver: Any, thread: str) -> set[str]:
    return {k.rsplit(":", 1)[1] for k in await _keys(saver, thread) if k.startswith("checkpoint:")}


def _ids(tuples: list[Any]) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


@pytest.mark.redis_stack
async def test_a_thread_past_the_savers_listing_cap_lists_exports_and_shows_every_checkpoint(
    redis_stack_url, tmp_path, monkeypatch
):
    alice, thread = unique("alice"), unique("thread")
    old_ids = [str(uuid6()) for _ in range(OLD_BRANCH)]  # ids are time-ordered: older than the turns'
    async with MemoryManager(
        {"data_dir": str(tmp_path), "working": {"backend": "redis", "url": redis_stack_url}}
    ) as manager:
        graph = log_graph(manager)
        for _ in range(2):
            await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
        saver = manager.checkpointer.inner
        turns = await _checkpoint_ids(saver, thread)
        await _add_old_branch(saver, thread, old_ids)
        stored = await _checkpoint_ids(saver, thread)
        upstream = [t async for t in saver.alist({"configurable": {"thread_id": thread}})]
        listed = [t async for t in manager.checkpointer.alist({"configurable": {"thread_id": thread}})]
        exported = (await manager.users.export(alice))["working"]["threads"]
        history = await manager.threads.history(alice, thread)
        state = await graph.aget_state(turn_config(alice, thread))
        asked, real = [], saver.alist

        def counted(config: Any, **kwargs: Any) -> Any:
            asked.append(kwargs.get("limit"))
            return real(config, **kwargs)

        monkeypatch.setattr(saver, "alist", counted)
        newest = await manager.threads.history(alice, thread, limit=3)
        older = await manager.threads.history(alice, thread, before=history[2].checkpoint_id, limit=2)

    assert stored == turns | set(old_ids)
    assert len(upstream) == redis_saver.LISTING_CAP, "the saver's own listing must stop short"
    assert _ids(listed) == sorted(stored, reverse=True)
    assert {c["id"] for c in exported[0]["checkpoints"]} == stored
    assert [c.checkpoint_id for c in history] == sorted(stored, reverse=True)
    assert state.values["log"] == ["turn-1", "turn-2"]
    # A page of history asks the saver for a page (then more while newer ones fill it), never
    # for the whole thread.
    assert newest == history[:3] and older == history[3:5]
    assert None not in asked and max(asked) < len(stored)
