"""`memory_tiers.direct_sql` on aiosqlite: each statement in one hop to the driver's thread.

SQLAlchemy's execute path on aiosqlite hops to the driver's thread four or five times per
statement (cursor, execute, fetchall, cursor close, then the ROLLBACK of the check-in), and each
hop costs tens of microseconds of event-loop and thread hand-over; aiosqlite's
``execute_fetchall`` is one. Columns get the conversions SQLAlchemy's types would apply (SQLite
keeps datetimes and JSON as text, booleans as integers), taken from those same types, so rows
are what SQLAlchemy's row mappings would be.

It is the SQLite counterpart of `memory_tiers.direct_sql.on_asyncpg`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from memory_tiers.direct_sql.compiled import Compiled, DirectSQL, compile_statement

# What aiosqlite raises (as ValueError) on a connection whose thread is gone; SQLAlchemy's adapter
# raises it as an OperationalError and counts it as a disconnect.
_CLOSED = ("no active connection", "connection closed")

Row = dict[str, Any]
_T = TypeVar("_T")


class SqliteDirect(DirectSQL):
    """Statements on the aiosqlite connection itself.

    Args:
        engine: an `AsyncEngine` on the aiosqlite driver.
        cache_size: how many statements' compiled forms are kept.
    """

    _error_base = sqlite3.Error

    def _compile(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Compiled:
        compiled = compile_statement(self.engine, statement, column_keys, results=True)
        if len(set(compiled.keys)) != len(compiled.keys):
            raise ValueError("SqliteDirect needs the columns of a statement to have distinct names")
        return compiled

    def _driver_error(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, ValueError) and str(exc).lower() in _CLOSED:
            return sqlite3.OperationalError(str(exc))
        return exc if isinstance(exc, sqlite3.Error) else None

    def _broken(self, driver: Any, exc: BaseException, error: BaseException | None) -> bool:
        return error is not None and bool(self.engine.dialect.is_disconnect(error, None, None))

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        """The rows of ``statement`` for ``params`` (by bound parameter name), as dicts keyed and
        converted as SQLAlchemy's row mappings would be; outside any transaction.

        Raises:
            KeyError: a parameter is missing (the user's, say): nothing was sent.
            sqlalchemy.exc.DBAPIError: the statement failed (the connection is invalidated when
                it is gone).
        """
        return await self.call(lambda driver: fetch(self, driver, statement, params))

    async def execute(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> None:
        """Run one write ``statement`` for ``params`` and commit it (SQLite's driver begins the
        transaction at the write); an INSERT without ``VALUES`` binds ``column_keys``. Errors
        are raised as by `rows`."""

        async def write(driver: Any) -> None:
            await fetch(self, driver, statement, params, column_keys)
            await driver.commit()

        await self.call(write)

    async def in_transaction(self, work: Callable[[SqliteStatements], Awaitable[_T]]) -> _T:
        """``work`` in one transaction on a pooled connection (begun by SQLite's driver at the
        first write, as on SQLAlchemy's path): committed when it returns; if it raises, the
        check-in rolls it back. Errors are raised as by `rows`."""

        async def transaction(driver: Any) -> _T:
            result = await work(SqliteStatements(self, driver))
            await driver.commit()
            return result

        return await self.call(transaction)


async def fetch(
    direct: SqliteDirect,
    driver: Any,
    statement: Any,
    params: Mapping[str, Any],
    column_keys: tuple[str, ...] | None = None,
) -> list[Row]:
    """One statement's rows on ``driver``, in one hop, converted as SQLAlchemy would."""
    sql, args = direct.bound(statement, params, column_keys)
    records = await driver.execute_fetchall(sql, args)
    _, _, keys, processors = direct.compiled(statement, column_keys)
    rows = [dict(zip(keys, record, strict=True)) for record in records]
    for key, process in processors:
        for row in rows:
            row[key] = process(row[key])
    return rows


class SqliteStatements:
    """`memory_tiers.long_term.statements.Statements` on an aiosqlite connection in a
    transaction (`SqliteDirect.in_transaction`): one hop per statement execution."""

    def __init__(self, direct: SqliteDirect, connection: Any) -> None:
        self.direct = direct
        self._connection = connection

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        """See `Statements.rows`."""
        return await fetch(self.direct, self._connection, statement, params)

    async def many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """See `Statements.many`: one execution per row (a turn stores a few facts)."""
        keys = tuple(rows[0])
        found: list[Row] = []
        for row in rows:
            found += await fetch(self.direct, self._connection, statement, row, keys)
        return found
