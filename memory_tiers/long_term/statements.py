"""Where a transaction's statements go: a SQLAlchemy connection, or asyncpg's own connection.

Consolidation (`memory_tiers.long_term.consolidate`) runs the same prebuilt statements either
way; it only needs each statement's rows, by column name. `SqlAlchemyStatements` executes them
on an `AsyncConnection` (every dialect); `memory_tiers.direct_sql`'s `AsyncpgStatements` and
`SqliteStatements` send their compiled form straight to the driver inside one transaction (the
save's hot path), skipping SQLAlchemy's execute path around each round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

Row = Mapping[str, Any]


class Statements(Protocol):
    """Runs statements of one transaction; rows come back as mappings by column name."""

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> Sequence[Row]:
        """The rows ``statement`` returns for ``params`` (none for a statement without RETURNING)."""
        ...

    async def many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> Sequence[Row]:
        """Run ``statement`` once per parameter set in ``rows`` (an INSERT without ``VALUES``
        takes its columns from their keys); the rows all executions return, in order."""
        ...


class SqlAlchemyStatements:
    """`Statements` on a SQLAlchemy connection (inside the caller's transaction)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> Sequence[Row]:
        """See `Statements.rows`."""
        return _mappings(await self.connection.execute(statement, dict(params)))

    async def many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> Sequence[Row]:
        """See `Statements.many`; SQLAlchemy sends an INSERT's rows as one multi-row statement."""
        return _mappings(await self.connection.execute(statement, [dict(row) for row in rows]))


def _mappings(result: Any) -> Sequence[Row]:
    return result.mappings().all() if result.returns_rows else []
