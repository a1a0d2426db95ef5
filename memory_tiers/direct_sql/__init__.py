"""Statements sent straight to the driver (asyncpg, aiosqlite), on a connection of the engine's
own pool.

The hot path's statements (the load node's one SELECT, the store's lone ``aget``, ``asearch``,
``aput`` and ``adelete``, the save's transaction) are few, and on SQLAlchemy's execute path the
Python around each round trip (the connection facade, the execution context, the result object,
the greenlet hops; on aiosqlite four or five hops to the driver's thread a statement) costs as
much as the round trip itself. On aiosqlite a direct call is one hop, a transaction's statements
and its commit included (`memory_tiers.direct_sql.on_aiosqlite`). `AsyncpgDirect` and
`SqliteDirect` send the very same statements, built once by their owners and compiled once per
statement by the engine's dialect (the same SQL and parameters, so asyncpg reuses one prepared
statement per connection), on a connection checked out of the engine's own pool: so its pragmas,
its check-in reset and its invalidation are the pool's, as on every other path. Parameters get
the conversions SQLAlchemy's types would apply; driver errors are raised as SQLAlchemy's, so
`translate_errors` turns them into memory_tiers errors as everywhere else, and a connection that
broke is invalidated in the pool. What the direct path does not see is the engine's own
execution events and options (``before_cursor_execute`` listeners, an ``isolation_level``
execution option).

Statements with IN lists that SQLAlchemy would expand are refused: their text changes with the
list (the hot path's statements take arrays, or JSON arrays on SQLite, instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_tiers.direct_sql.compiled import settle

__all__ = ["direct_sql", "settle"]

if TYPE_CHECKING:
    from memory_tiers.direct_sql.on_aiosqlite import SqliteDirect
    from memory_tiers.direct_sql.on_asyncpg import AsyncpgDirect


def direct_sql(
    engine: AsyncEngine, *, cache_size: int, columns: Sequence[ColumnElement[Any]] | None = None
) -> AsyncpgDirect | SqliteDirect | None:
    """The direct path for ``engine``'s driver (asyncpg or aiosqlite), or None for another driver
    (which keeps SQLAlchemy's execute path); ``columns``, if given, are the only ones an asyncpg
    SELECT may select (`AsyncpgDirect`)."""
    if engine.dialect.driver == "asyncpg":
        from memory_tiers.direct_sql.on_asyncpg import AsyncpgDirect  # the postgres extra

        return AsyncpgDirect(engine, cache_size=cache_size, columns=columns)
    if engine.dialect.driver == "aiosqlite":
        from memory_tiers.direct_sql.on_aiosqlite import SqliteDirect

        return SqliteDirect(engine, cache_size=cache_size)
    return None
