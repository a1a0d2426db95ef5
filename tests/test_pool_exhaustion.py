"""An exhausted connection pool gives a typed error after its bounded wait, never a hang."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique

from memory_tiers import BackendUnavailableError, MemoryManager

HANG_BOUND = 30.0  # seconds: far above the pools' 1 s waits; reaching it means a hang


def one_connection_each(postgres_url: str, tmp_path: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "postgres", "url": postgres_url, "pool_min_size": 1, "pool_max_size": 1,
                    "connect_timeout": "1s"},
        "long_term": {"url": postgres_url, "pool_size": 1, "max_overflow": 0, "pool_timeout": "1s"},
    }  # fmt: skip


async def test_an_exhausted_long_term_pool_is_a_typed_error_then_recovers(postgres_url, tmp_path):
    alice = unique("alice")
    async with MemoryManager(one_connection_each(postgres_url, tmp_path)) as manager:
        async with manager.long_term.engine.connect():  # the pool's only connection, held
            with pytest.raises(BackendUnavailableError, match="long_term"):
                await asyncio.wait_for(manager.long_term.get_profile(alice), HANG_BOUND)
        profile = await manager.long_term.get_profile(alice)  # released: served again
    assert profile.version == 0


async def test_an_exhausted_checkpointer_pool_is_a_typed_error_then_recovers(postgres_url, tmp_path):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(one_connection_each(postgres_url, tmp_path)) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(alice, thread))
        async with manager.checkpointer.inner.conn.connection():  # the pool's only connection, held
            with pytest.raises(BackendUnavailableError, match="working"):
                await asyncio.wait_for(
                    graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread)), HANG_BOUND
                )
        out = await graph.ainvoke({"messages": [("user", "and again")]}, turn_config(alice, thread))
    assert [m.content for m in out["messages"] if m.type == "human"][-1] == "and again"
