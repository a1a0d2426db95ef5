"""The query plans of the library's own statements: capture what it sends, EXPLAIN it.

The issue's warning, checked on every run: a plan that reads the full-text index (PostgreSQL's
GIN ``ix_mt_facts_search``, SQLite's ``mt_facts_fts``) visits every user's matching facts
before the user filter, which costs 5-25x the user index at a million facts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

FULL_TEXT_MARKERS = ("ix_mt_facts_search", "mt_facts_fts")

Statement = tuple[str, Any]


@contextmanager
def captured(engine: AsyncEngine) -> Iterator[list[Statement]]:
    """The statements (driver SQL and parameters) ``engine`` executes inside the block."""
    seen: list[Statement] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


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


def full_text_index_used(plan: list[str]) -> bool:
    """Whether the plan reads the full-text index (not only the user's rows)."""
    return any(marker in line for line in plan for marker in FULL_TEXT_MARKERS)
