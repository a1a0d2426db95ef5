"""The working tier on every backend: real LangGraph conversations through a `MemoryManager`."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from memory_tiers import BackendUnavailableError, MemoryManager, MemoryState, MemoryTiersError

RUN: RunnableConfig = {"configurable": {"thread_id": "t1", "user_id": "alice", "session_id": "s1"}}

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis-stack", marks=pytest.mark.redis_stack),
]


def _config(tmp_path: Path, working: dict[str, Any]) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path),
        "working": working,
        "session": {"url": "memory://"},
        "long_term": {"url": f"sqlite+aiosqlite:///{tmp_path / 'long_term.db'}"},
    }


def _working(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The working section for ``backend``, asking for a server fixture only when needed."""
    if backend == "postgres":
        return {"backend": backend, "url": request.getfixturevalue("fresh_postgres_url")}
    if backend == "redis":
        return {"backend": backend, "url": request.getfixturevalue("redis_stack_url")}
    return {"backend": backend}


def _graph(manager: MemoryManager, seen: list[list[str]]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """load -> agent -> save; the agent records the conversation it was shown and answers."""

    def agent(state: MemoryState) -> dict[str, Any]:
        history: list[AnyMessage] = state["messages"]
        seen.append([str(m.content) for m in history])
        return {"messages": [AIMessage(f"reply {len(seen)} after {len(history)} messages")]}

    return memory_graph(manager, agent)


def _contents(state: dict[str, Any]) -> list[str]:
    return [str(m.content) for m in state.get("messages", [])]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_two_turn_conversation_and_reopen(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Turn 2 sees turn 1; a new manager on the same storage sees the thread's state."""
    cfg = _config(tmp_path, _working(backend, request))
    seen: list[list[str]] = []
    async with MemoryManager(cfg) as manager:
        if backend == "redis":
            # The Redis Stack server lives for the whole run and the saver's keys are fixed.
            await manager.checkpointer.adelete_thread("t1")
        graph = _graph(manager, seen)
        first = await graph.ainvoke({"messages": [HumanMessage("hello")]}, RUN)
        second = await graph.ainvoke({"messages": [HumanMessage("again")]}, RUN)

    assert seen == [["hello"], ["hello", "reply 1 after 1 messages", "again"]]
    assert _contents(first) == ["hello", "reply 1 after 1 messages"]
    assert _contents(second) == [*seen[1], "reply 2 after 3 messages"]
    assert second["memory_cursor"] == second["messages"][-1].id

    reopened_seen: list[list[str]] = []
    async with MemoryManager(cfg) as manager:
        graph = _graph(manager, reopened_seen)
        snapshot = await graph.aget_state(RUN)
        if backend == "memory":
            # In-process checkpoints do not outlive their manager.
            assert _contents(snapshot.values) == []
            return
        assert _contents(snapshot.values) == _contents(second)
        assert snapshot.values["memory_cursor"] == second["memory_cursor"]
        third = await graph.ainvoke({"messages": [HumanMessage("still there?")]}, RUN)
        assert reopened_seen == [[*_contents(second), "still there?"]]
        assert _contents(third)[-1] == "reply 1 after 5 messages"
        if backend == "redis":
            await manager.checkpointer.adelete_thread("t1")


def _journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


async def test_sqlite_working_db_is_in_wal_mode(tmp_path: Path) -> None:
    """The working tier's SQLite file is switched to WAL (a persistent property of the file)."""
    path = tmp_path / "working.db"
    async with MemoryManager(_config(tmp_path, {"backend": "sqlite"})) as manager:
        graph = _graph(manager, [])
        await graph.ainvoke({"messages": [HumanMessage("hello")]}, RUN)
        assert path.is_file()
        assert _journal_mode(path) == "wal"
    assert _journal_mode(path) == "wal"


async def test_sqlite_working_url_is_a_file_path(tmp_path: Path) -> None:
    """``working.url`` places the SQLite file; it is in WAL mode too."""
    path = tmp_path / "elsewhere" / "checkpoints.sqlite"
    cfg = _config(tmp_path, {"backend": "sqlite", "url": str(path)})
    async with MemoryManager(cfg) as manager:
        await _graph(manager, []).ainvoke({"messages": [HumanMessage("hello")]}, RUN)
    assert _journal_mode(path) == "wal"
    assert not (tmp_path / "working.db").exists()


async def test_unreachable_postgres_raises_backend_unavailable(tmp_path: Path) -> None:
    """A dead PostgreSQL URL fails fast with an error naming the tier, password masked."""
    url = "postgresql://postgres:s3cret@127.0.0.1:1/x"
    cfg = _config(tmp_path, {"backend": "postgres", "url": url, "connect_timeout": "1s"})
    with pytest.raises(BackendUnavailableError) as info:
        async with MemoryManager(cfg):
            pass
    err = info.value
    assert err.tier == "working"
    assert "working" in str(err)
    assert "127.0.0.1:1" in str(err)
    assert "s3cret" not in str(err)
    assert "s3cret" not in repr(err)
    assert "s3cret" not in err.url


@pytest.mark.redis
async def test_redis_backend_without_modules_fails_clearly(redis_url: str, tmp_path: Path) -> None:
    """Plain Redis 7 (no RediSearch/RedisJSON) cannot hold checkpoints: a clear memory_tiers error."""
    cfg = _config(tmp_path, {"backend": "redis", "url": redis_url, "connect_timeout": "2s"})
    with pytest.raises(MemoryTiersError) as info:
        async with MemoryManager(cfg):
            pass
    err = info.value
    assert "working" in str(err)
    # Not a bare driver error: whatever the saver raised on setup is kept as the cause.
    assert err.__cause__ is not None


async def test_an_in_memory_long_term_database_serves_concurrent_turns():
    # One in-memory SQLite connection shared by concurrent transactions used to interleave
    # them (a claim's own row not found); callers now take turns on it.
    users = [unique("u") for _ in range(8)]
    config = {"working": {"backend": "memory"}, "long_term": {"url": "sqlite+aiosqlite:///:memory:"}}
    async with MemoryManager(config) as manager:
        graph = memory_graph(manager)
        results = await asyncio.gather(
            *(graph.ainvoke({"messages": [("user", f"I'm {u}")]}, turn_config(u, f"t-{u}")) for u in users)
        )
        owners = {t.user_id for u in users for t in await manager.long_term.list_threads(u)}
    assert len(results) == len(users) and owners == set(users)


@pytest.mark.postgres
async def test_concurrent_turns_on_postgres_use_the_pools_connections_at_once(tmp_path, request):
    """AsyncPostgresSaver's own lock let one call run at a time, whatever the pool
    (langchain-ai/langgraph#7259): six concurrent turns never needed a second connection."""
    working = {**_working("postgres", request), "pool_min_size": 1, "pool_max_size": 3}
    users = [unique("user") for _ in range(6)]
    async with MemoryManager(_config(tmp_path, working)) as manager:
        graph = memory_graph(manager)
        turns = [
            graph.ainvoke({"messages": [("user", f"hello from {user}")]}, turn_config(user, f"{user}-t"))
            for user in users
        ]
        await asyncio.gather(*turns)
        stats = manager.checkpointer.inner.conn.get_stats()
        states = [await graph.aget_state(turn_config(user, f"{user}-t")) for user in users]

    assert stats.get("requests_queued", 0) > 0 and 1 < stats["pool_size"] <= 3
    assert [s.values["messages"][0].content for s in states] == [f"hello from {u}" for u in users]
