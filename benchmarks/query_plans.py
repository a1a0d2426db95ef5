"""The query plans of the library's own statements: capture what it sends, EXPLAIN it.

The issue's warning, checked on every run: a plan that scans the facts table instead of
reading the user's rows through an index visits every user's facts, which costs many times the
user index at a million facts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_tiers.long_term.store import LongTermStore

Statement = tuple[str, Any]


@contextmanager
def captured(store: LongTermStore) -> Iterator[list[Statement]]:
    """The statements (driver SQL and parameters) ``store`` sends inside the block, through
    SQLAlchemy or straight to asyncpg or aiosqlite (its hot-path reads, see
    `memory_tiers.direct_sql`)."""
    seen: list[Statement] = []
    engine = store.engine

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    driver = store._direct
    direct = driver.rows if driver is not None else None

    async def recording(statement: Any, params: Any) -> Any:
        assert driver is not None and direct is not None
        sql, args = driver.bound(statement, params)
        seen.append((sql, tuple(args)))
        return await direct(statement, params)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    if driver is not None:
        driver.rows = recording  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
        if driver is not None:
            del driver.rows  # the class's method again


async def explain(engine: AsyncEngine, statement: Statement) -> list[str]:
    """The plan of one captured statement, one line per plan node."""
    sql, parameters = statement
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(
            f"{'EXPLAIN QUERY PLAN' if sqlite else 'EXPLAIN'} {sql}", parameters
        )
        rows = result.all()
    return [row[3] for row in rows] if sqlite else [row[0] for row in rows]


def scans_every_fact(plan: list[str]) -> bool:
    """Whether the plan scans the facts table (PostgreSQL's ``Seq Scan``, SQLite's ``SCAN``)
    instead of searching an index for the user's rows."""
    return any("Seq Scan on mt_facts" in line or line.startswith("SCAN mt_facts") for line in plan)
