"""Lone SELECTs sent straight to asyncpg, on a connection of the engine's own pool.

A hot-path read (the store's ``aget`` and ``asearch``, the load node's one SELECT) is a single
statement, and on SQLAlchemy's execute path the Python around that round trip (the connection
facade, the execution context, the result object, the greenlet hops: about 150-200 us a call)
costs as much as the round trip itself. `AsyncpgReads` sends the very same statements (built
once by their owners and compiled once per statement by the engine's dialect: the same SQL and
parameters, so asyncpg reuses one prepared statement per connection) on a connection checked out
of the engine's own pool, outside any transaction. Driver errors are raised as SQLAlchemy's, so
`translate_errors` turns them into memory_tiers errors as on every other path, and a connection
that failed is invalidated in the pool, as SQLAlchemy does.

Rows come back as asyncpg's records, decoded by asyncpg's codecs (SQLAlchemy registers its JSON
codecs on every connection it opens), so only statements whose parameters and columns need no
SQLAlchemy conversion belong here: parameters are checked, columns are the caller's to know.

Imported only for engines on the asyncpg driver (the ``postgres`` extra).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import ColumnElement, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

_PER_CALL = object()
# Raised as SQLAlchemy's DBAPIError subclass of the same name (InterfaceError, DataError...).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class _Compiled(NamedTuple):
    sql: str
    # asyncpg's positional parameters: (name, _PER_CALL) when the call binds it, else
    # (name, the value the statement carries), such as a filter path's labels.
    parameters: tuple[tuple[str, Any], ...]


class AsyncpgReads:
    """Runs SELECTs on the asyncpg connection itself.

    Args:
        engine: an `AsyncEngine` on the asyncpg driver.
        cache_size: how many statements' compiled forms are kept.
        columns: when given, the only columns a statement may select (in this order).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_size: int,
        columns: Sequence[ColumnElement[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.columns = None if columns is None else tuple(columns)
        self._compiled = functools.lru_cache(maxsize=cache_size)(self._compile)

    def _compile(self, statement: Select[Any]) -> _Compiled:
        dialect = self.engine.dialect
        if self.columns is not None:
            selected, expected = tuple(statement.selected_columns), self.columns
            if len(selected) != len(expected) or any(
                a is not b for a, b in zip(selected, expected, strict=True)
            ):
                raise ValueError("AsyncpgReads runs SELECTs of its own columns only")
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params:
            raise ValueError("AsyncpgReads cannot expand IN parameters")
        parameters = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            # SQLAlchemy would convert these values before the driver sees them; asyncpg would not.
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs SQLAlchemy's conversion")
            parameters.append((name, _PER_CALL if bind.required else bind.value))
        return _Compiled(compiled.string, tuple(parameters))

    def bound(self, statement: Select[Any], params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL asyncpg is sent for ``statement`` and its positional arguments for ``params``.

        Raises:
            KeyError: a parameter is missing.
        """
        sql, parameters = self._compiled(statement)
        return sql, [params[name] if value is _PER_CALL else value for name, value in parameters]

    async def rows(self, statement: Select[Any], params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The rows of ``statement`` for ``params`` (by bound parameter name).

        Raises:
            KeyError: a parameter is missing (the user's, say): nothing was sent.
            sqlalchemy.exc.DBAPIError: the server refused the statement.
            sqlalchemy.exc.InterfaceError: the connection failed (it is invalidated).
        """
        sql, args = self.bound(statement, params)
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        try:
            records: list[asyncpg.Record] = await driver.fetch(sql, *args)
        except BaseException as exc:
            # As SQLAlchemy decides: a connection that closed, or a command cut short (cancelled)
            # or confused, is not handed out again; one the server refused an input on is fine.
            broken = (
                driver.is_closed()
                or not isinstance(exc, Exception)
                or isinstance(exc, asyncpg.InternalClientError)
            )
            if broken:
                pooled.invalidate(exc)  # closes it without waiting, and returns its slot
            else:
                await greenlet_spawn(pooled.close)
            if isinstance(exc, _DRIVER_ERRORS):
                raise DBAPIError.instance(sql, args, exc, Exception, connection_invalidated=broken) from exc
            raise  # OSError, TimeoutError, CancelledError: `translate_errors` knows them
        # Check-in may close the connection (pool overflow), which awaits.
        await greenlet_spawn(pooled.close)
        return records
