"""Lone SELECTs sent straight to aiosqlite, on a connection of the engine's own pool.

SQLAlchemy's execute path on aiosqlite hops to the driver's thread four or five times per
statement (cursor, execute, fetchall, cursor close, then the ROLLBACK of the check-in), and each
hop costs tens of microseconds of event-loop and thread hand-over. `SqliteReads` sends the very
same statement (built once by its owner, compiled once by the engine's dialect: the same SQL and
parameters) with aiosqlite's ``execute_fetchall``, one hop, on a connection checked out of the
engine's own pool (so its pragmas, its check-in and its invalidation are SQLAlchemy's, as on
every other path). Parameters and columns get the conversions SQLAlchemy's types would apply
(SQLite keeps datetimes and JSON as text, booleans as integers), taken from those same types.
Driver errors are raised as SQLAlchemy's, so `translate_errors` turns them into memory_tiers
errors as on every other path, and a connection that failed is invalidated in the pool.

It is the SQLite counterpart of `memory_tiers.asyncpg_reads`.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

_PER_CALL = object()
# What aiosqlite raises (as ValueError) on a connection whose thread is gone; SQLAlchemy's adapter
# raises it as an OperationalError and counts it as a disconnect.
_CLOSED = ("no active connection", "connection closed")


class _Compiled(NamedTuple):
    sql: str
    # (name, _PER_CALL or the converted value the statement carries, SQLAlchemy's conversion).
    parameters: tuple[tuple[str, Any, Callable[[Any], Any] | None], ...]
    keys: tuple[str, ...]
    # (key, SQLAlchemy's result processor) of the columns whose values it converts.
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]


class SqliteReads:
    """Runs SELECTs on the aiosqlite connection itself.

    Args:
        engine: an `AsyncEngine` on the aiosqlite driver.
        cache_size: how many statements' compiled forms are kept.
    """

    def __init__(self, engine: AsyncEngine, *, cache_size: int) -> None:
        self.engine = engine
        self._compiled = functools.lru_cache(maxsize=cache_size)(self._compile)

    def _compile(self, statement: Select[Any]) -> _Compiled:
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params:
            raise ValueError("SqliteReads cannot expand IN parameters")
        parameters = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                parameters.append((name, _PER_CALL, convert))
            else:
                parameters.append((name, bind.value if convert is None else convert(bind.value), None))
        columns = compiled._result_columns  # what SQLAlchemy's own result uses to key and convert
        keys = tuple(column.keyname for column in columns)
        if len(set(keys)) != len(keys):
            raise ValueError("SqliteReads needs the columns of a SELECT to have distinct names")
        processors = tuple(
            (column.keyname, process)
            for column in columns
            if (process := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        )
        return _Compiled(compiled.string, tuple(parameters), keys, processors)

    def bound(self, statement: Select[Any], params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL sent for ``statement`` and its positional arguments for ``params``.

        Raises:
            KeyError: a parameter is missing.
        """
        sql, parameters, _, _ = self._compiled(statement)
        return sql, [
            value if value is not _PER_CALL else params[name] if convert is None else convert(params[name])
            for name, value, convert in parameters
        ]

    async def rows(self, statement: Select[Any], params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of ``statement`` for ``params`` (by bound parameter name), as dicts keyed and
        converted as SQLAlchemy's row mappings would be.

        Raises:
            KeyError: a parameter is missing (the user's, say): nothing was sent.
            sqlalchemy.exc.DBAPIError: the statement failed (the connection is invalidated when
                it is gone).
        """
        sql, args = self.bound(statement, params)
        _, _, keys, processors = self._compiled(statement)
        pooled = await self.engine.raw_connection()
        try:
            records = await pooled.driver_connection.execute_fetchall(sql, args)
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, ValueError) and str(exc).lower() in _CLOSED:
                error = sqlite3.OperationalError(str(exc))
            # As SQLAlchemy decides: a lost connection, or a call cut short (cancelled), is not
            # handed out again.
            broken = not isinstance(exc, Exception) or (
                isinstance(error, sqlite3.Error) and self.engine.dialect.is_disconnect(error, None, None)
            )
            if broken:
                pooled.invalidate(exc)
            else:
                await greenlet_spawn(pooled.close)
            if isinstance(error, sqlite3.Error):
                raise DBAPIError.instance(
                    sql, args, error, sqlite3.Error, connection_invalidated=broken
                ) from exc
            raise
        # Check-in rolls the connection back, on its thread: SQLAlchemy's own reset.
        await greenlet_spawn(pooled.close)
        rows = [dict(zip(keys, record, strict=True)) for record in records]
        for key, process in processors:
            for row in rows:
                row[key] = process(row[key])
        return rows
