"""The performance contract, counted not timed: round trips per turn do not grow with history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from helpers import counting_sql, turn_config, unique
from redis.asyncio.client import Pipeline, Redis

from memory_tiers import MemoryManager


@dataclass
class Counts:
    redis_round_trips: int = 0
    sql_statements: list[str] = field(default_factory=list)


@contextmanager
def counting(manager: MemoryManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """Count Redis round trips (a command or a pipeline) and SQL statements of the manager,
    sent through SQLAlchemy or straight to asyncpg."""
    counts = Counts()
    execute_command, execute_pipeline = Redis.execute_command, Pipeline.execute

    async def counted_command(self, *args, **kwargs):
        counts.redis_round_trips += 1
        return await execute_command(self, *args, **kwargs)

    async def counted_pipeline(self, *args, **kwargs):
        counts.redis_round_trips += 1
        return await execute_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(Redis, "execute_command", counted_command)
    monkeypatch.setattr(Pipeline, "execute", counted_pipeline)
    try:
        with counting_sql(manager.long_term.engine) as counts.sql_statements:
            yield counts
    finally:
        monkeypatch.undo()


async def test_load_and_save_cost_fixed_round_trips_whatever_the_history(memory_config, monkeypatch):
    alice, thread = unique("alice"), unique("t")
    config = turn_config(alice, thread, unique("s"))
    async with MemoryManager(memory_config) as manager:
        measured = {}
        for turn in range(1, 31):
            state = {"messages": [("user", f"I like topic {turn}."), ("ai", "noted")]}
            if turn in (1, 30):
                with counting(manager, monkeypatch) as load:
                    loaded = await manager.nodes.load.ainvoke(state, config)
                with counting(manager, monkeypatch) as save:
                    await manager.nodes.save.ainvoke({**state, **loaded}, config)
                measured[turn] = (load, save)
            else:
                await manager.nodes.save.ainvoke(state, config)
        facts = await manager.long_term.list_facts(alice)
        dialect = manager.long_term.dialect

    assert len(facts) == 30  # history really grew
    for turn, (load, save) in measured.items():
        assert load.redis_round_trips == 1, turn
        assert load.sql_statements == ["SELECT"], turn
        assert save.redis_round_trips == 1, turn
        # SQLite, one transaction: thread registry upsert, the replay check (this turn's
        # observation keys, by index), fact upsert, observation insert; the supersede step is
        # skipped for "many" facts; no reads of history. PostgreSQL: one statement, committed by
        # itself (no BEGIN or COMMIT), the registry upsert as a CTE and mt_consolidate doing the
        # rest on the server.
        expected = (
            ["WITH"]
            if dialect == "postgresql"
            else ["BEGIN", "INSERT", "SELECT", "INSERT", "INSERT", "COMMIT"]
        )
        assert save.sql_statements == expected, turn
    assert measured[1][1].sql_statements == measured[30][1].sql_statements
