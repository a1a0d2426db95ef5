"""Statements sent straight to asyncpg, on a connection of the engine's own pool.

A hot-path read (the store's ``aget`` and ``asearch``, the load node's one SELECT) is a single
statement, and on SQLAlchemy's execute path the Python around that round trip (the connection
facade, the execution context, the result object, the greenlet hops: about 150-200 us a call)
costs as much as the round trip itself. `AsyncpgReads` sends the very same statements (built
once by their owners and compiled once per statement by the engine's dialect: the same SQL and
parameters, so asyncpg reuses one prepared statement per connection) on a connection checked out
of the engine's own pool: lone SELECTs outside any transaction (`AsyncpgReads.rows`), and the
PostgreSQL save's statements in one asyncpg transaction (`AsyncpgReads.transaction`). Driver
errors are raised as SQLAlchemy's, so `translate_errors` turns them into memory_tiers errors as
on every other path, and a connection that failed is invalidated in the pool, as SQLAlchemy does.

Parameters get SQLAlchemy's conversion (JSON to text) as compiled for the engine's dialect.
Rows come back as asyncpg's records, decoded by asyncpg's codecs (SQLAlchemy registers its JSON
codecs on every connection it opens), so only statements whose columns need no SQLAlchemy
conversion belong here: columns are the caller's to know.

Imported only for engines on the asyncpg driver (the ``postgres`` extra).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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
    # asyncpg's positional parameters: (name, _PER_CALL, SQLAlchemy's conversion of the value or
    # None) when the call binds it, else (name, the converted value the statement carries, None),
    # such as a filter path's labels.
    parameters: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]


class AsyncpgReads:
    """Runs statements on the asyncpg connection itself: lone SELECTs (`rows`), and the
    statements of one transaction (`transaction`).

    Args:
        engine: an `AsyncEngine` on the asyncpg driver.
        cache_size: how many statements' compiled forms are kept.
        columns: when given, the only columns a SELECT sent by `rows` may select (in this order).
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

    def _compile(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> _Compiled:
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.post_compile_params:
            raise ValueError("AsyncpgReads cannot expand IN parameters")
        parameters = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            # What SQLAlchemy would do to the value before the driver sees it (JSON to text).
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required or (column_keys is not None and name in column_keys):
                parameters.append((name, _PER_CALL, convert))
            else:
                parameters.append((name, bind.value if convert is None else convert(bind.value), None))
        return _Compiled(compiled.string, tuple(parameters))

    def _selecting(self, statement: Select[Any]) -> Select[Any]:
        if self.columns is not None:
            selected, expected = tuple(statement.selected_columns), self.columns
            if len(selected) != len(expected) or any(
                a is not b for a, b in zip(selected, expected, strict=True)
            ):
                raise ValueError("AsyncpgReads runs SELECTs of its own columns only")
        return statement

    def bound(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> tuple[str, list[Any]]:
        """The SQL asyncpg is sent for ``statement`` and its positional arguments for ``params``.

        Raises:
            KeyError: a parameter is missing.
        """
        sql, parameters = self._compiled(statement, column_keys)
        return sql, [
            value if value is not _PER_CALL else params[name] if convert is None else convert(params[name])
            for name, value, convert in parameters
        ]

    async def rows(self, statement: Select[Any], params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The rows of ``statement`` for ``params`` (by bound parameter name), outside any
        transaction.

        Raises:
            KeyError: a parameter is missing (the user's, say): nothing was sent.
            sqlalchemy.exc.DBAPIError: the server refused the statement.
            sqlalchemy.exc.InterfaceError: the connection failed (it is invalidated).
        """
        sql, args = self.bound(self._selecting(statement), params)
        async with self._connection() as driver:
            records: list[asyncpg.Record] = await driver.fetch(sql, *args)
        return records

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncpgStatements]:
        """One transaction on a pooled connection: committed when the block ends, rolled back if
        it raises. Errors are raised as by `rows`."""
        async with self._connection() as driver, driver.transaction():
            yield AsyncpgStatements(self, driver)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the engine's pool, given back (or invalidated, if it broke) after."""
        pooled = await self.engine.raw_connection()
        driver = pooled.driver_connection
        try:
            yield driver
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
                raise DBAPIError.instance(None, None, exc, Exception, connection_invalidated=broken) from exc
            raise  # OSError, TimeoutError, CancelledError: `translate_errors` knows them
        # Check-in may close the connection (pool overflow), which awaits.
        await greenlet_spawn(pooled.close)


class AsyncpgStatements:
    """`memory_tiers.long_term.statements.Statements` on an asyncpg connection in a transaction
    (`AsyncpgReads.transaction`): each statement compiled once, rows as asyncpg records."""

    pipelined = True  # asyncpg's fetchmany sends every execution before reading the results

    def __init__(self, compiler: AsyncpgReads, connection: Any) -> None:
        self._compiler = compiler
        self._connection = connection

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """See `Statements.rows`."""
        sql, args = self._compiler.bound(statement, params)
        records: list[asyncpg.Record] = await self._connection.fetch(sql, *args)
        return records

    async def many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> list[asyncpg.Record]:
        """See `Statements.many`: asyncpg sends the executions in one round trip."""
        keys = tuple(rows[0])
        bound = [self._compiler.bound(statement, row, keys) for row in rows]
        if len(bound) == 1:  # fetch's path is the shorter one
            records: list[asyncpg.Record] = await self._connection.fetch(bound[0][0], *bound[0][1])
        else:
            records = await self._connection.fetchmany(bound[0][0], [a for _, a in bound])
        return records
