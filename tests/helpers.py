"""Small builders shared by the tests: graphs and unique ids."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.direct_sql.on_aiosqlite import SqliteDirect, SqliteStatements
from memory_tiers.direct_sql.on_asyncpg import AsyncpgDirect, AsyncpgStatements
from memory_tiers.long_term import migrate


def unique(prefix: str) -> str:
    """An id no other test run uses, so tests on shared servers never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def echo_agent(state: MemoryState) -> dict[str, Any]:
    """Replies with what memory told it, and counts turns in the session."""
    profile = state.get("profile") or {}
    session = dict(state.get("session") or {})
    session["turns"] = session.get("turns", 0) + 1
    name = profile.get("name", "stranger")
    return {"messages": [AIMessage(f"Hello {name}")], "session": session}


def memory_graph(manager: MemoryManager, agent: Any = echo_agent) -> Any:
    """load_memory -> agent -> save_memory, on the manager's checkpointer."""
    return manager.nodes.around(agent).compile(checkpointer=manager.checkpointer)


def turn_config(user_id: str, thread_id: str, session_id: str | None = None) -> dict[str, Any]:
    configurable = {"user_id": user_id, "thread_id": thread_id}
    if session_id is not None:
        configurable["session_id"] = session_id
    return {"configurable": configurable}


def migrated(url: str) -> str:
    """Apply the long-term schema to the database at ``url`` (synchronously, outside any test
    loop) and return the URL."""

    async def upgrade() -> None:
        engine = create_async_engine(url)
        try:
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(upgrade())
    return url


def fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, error: Exception) -> None:
    """Make the async method ``target.name`` raise ``error`` on its first call only."""
    real = getattr(target, name)
    failures = iter([error])

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if (failure := next(failures, None)) is not None:
            raise failure
        return await real(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)


@contextmanager
def counting_sql(engine: AsyncEngine) -> Iterator[list[str]]:
    """The first word of every SQL statement sent on ``engine``: through SQLAlchemy, or straight
    to the driver (`memory_tiers.direct_sql`: the hot path's SELECTs and the save's statements,
    which SQLAlchemy's events do not see; an executemany counts once, as SQLAlchemy's does), and
    BEGIN and COMMIT around a direct transaction (SQLAlchemy's own BEGIN is not counted)."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement.split()[0].upper())

    def counted(original: Any) -> Any:
        async def send(self: Any, statement: Any, params: Any) -> Any:
            direct = getattr(self, "direct", self)
            if direct.engine.sync_engine is engine.sync_engine:
                keys = tuple(params[0]) if isinstance(params, list) else None
                statements.append(direct.bound(statement, params[0] if keys else params, keys)[0].split()[0])
            return await original(self, statement, params)

        return send

    def transaction(original: Any) -> Any:
        async def run(self: Any, work: Any) -> Any:
            ours = self.engine.sync_engine is engine.sync_engine
            if ours:
                statements.append("BEGIN")
            result = await original(self, work)
            if ours:
                statements.append("COMMIT")
            return result

        return run

    patched = {
        (owner, name): counted
        for owner in (AsyncpgDirect, SqliteDirect, AsyncpgStatements, SqliteStatements)
        for name in ("rows", "many")
        if name in vars(owner)
    } | {(owner, "in_transaction"): transaction for owner in (AsyncpgDirect, SqliteDirect)}
    originals = {target: getattr(*target) for target in patched}
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    for (owner, name), wrap in patched.items():
        setattr(owner, name, wrap(originals[owner, name]))
    try:
        yield statements
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)
        event.remove(engine.sync_engine, "before_cursor_execute", record)
