"""`memory_tiers.direct_sql` on aiosqlite: each call in one hop to the driver's thread.

aiosqlite runs every call on its sqlite3 connection in a thread of its own, and each hand-over
(queue the call, wake the thread, wake the event loop with the result) costs tens of
microseconds. SQLAlchemy's execute path makes four or five a statement (cursor, execute,
fetchall, cursor close, then the ROLLBACK of the check-in). Here a call is one: a lone
statement, a write and its COMMIT, or a whole transaction (its statements, run by the same code
as on the other drivers, and its COMMIT) is one function queued to that thread with
aiosqlite's ``_execute``, on its sqlite3 connection ``_conn``: private, as the queue and the
connection that SQLAlchemy's own aiosqlite adapter reaches into, so the dependency is pinned to
aiosqlite's minor release (pyproject.toml) and the suite runs every path through it. The
long-term engine also skips the check-in ROLLBACK when no transaction is open
(`memory_tiers.long_term.engine`).

Columns get the conversions SQLAlchemy's types would apply (SQLite keeps datetimes and JSON as
text, booleans as integers), taken from those same types, so rows are what SQLAlchemy's row
mappings would be.

It is the SQLite counterpart of `memory_tiers.direct_sql.on_asyncpg`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from memory_tiers.direct_sql.compiled import Compiled, DirectSQL, compile_statement

# What aiosqlite raises (as ValueError) on a connection whose thread is gone; SQLAlchemy's adapter
# raises it as an OperationalError and counts it as a disconnect.
_CLOSED = ("no active connection", "connection closed")

Row = dict[str, Any]
_T = TypeVar("_T")
InThread = Callable[[sqlite3.Connection, threading.Event], _T]


class Abandoned(Exception):
    """The caller of a transaction stopped waiting (cancelled) before it committed: rolled back."""


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
        sql, args = self.bound(statement, params)
        return await self._in_thread(
            lambda connection, _: self.converted(statement, None, connection, sql, args)
        )

    async def execute(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> None:
        """Run one write ``statement`` for ``params`` and commit it (SQLite's driver begins the
        transaction at the write); an INSERT without ``VALUES`` binds ``column_keys``. Errors
        are raised as by `rows`."""
        sql, args = self.bound(statement, params, column_keys)

        def write(connection: sqlite3.Connection, abandoned: threading.Event) -> None:
            _committed(connection, abandoned, lambda: connection.execute(sql, args))

        await self._in_thread(write)

    async def in_transaction(self, work: Callable[[SqliteStatements], Coroutine[Any, Any, _T]]) -> _T:
        """``work`` in one transaction (begun by SQLite's driver at the first write, as on
        SQLAlchemy's path) and its COMMIT, all in one hop to the driver's thread; rolled back if
        it raises, or if its caller stopped waiting before the COMMIT. ``work`` must await only
        its statements (which run on the spot there). Errors are raised as by `rows`.

        Raises:
            RuntimeError: ``work`` awaited something else (nothing was committed).
        """

        def transaction(connection: sqlite3.Connection, abandoned: threading.Event) -> _T:
            statements = SqliteStatements(self, connection, abandoned)
            return _committed(connection, abandoned, lambda: _completed(work(statements)))

        return await self._in_thread(transaction)

    async def _in_thread(self, function: InThread[_T]) -> _T:
        """``function(sqlite3 connection, abandoned)`` run in the driver's thread, on a pooled
        connection; ``abandoned`` is set once the caller stops waiting (cancelled)."""
        abandoned = threading.Event()

        async def hop(driver: Any) -> _T:
            try:
                result: _T = await driver._execute(function, driver._conn, abandoned)
            except BaseException:
                abandoned.set()  # what has not run yet never runs; nothing commits after this
                raise
            return result

        return await self.call(hop)

    def converted(
        self,
        statement: Any,
        column_keys: tuple[str, ...] | None,
        connection: sqlite3.Connection,
        sql: str,
        args: Sequence[Any],
    ) -> list[Row]:
        """The rows of ``sql`` (``statement`` bound) on ``connection``, keyed and converted as
        SQLAlchemy would; in the driver's thread."""
        records = connection.execute(sql, args).fetchall()
        _, _, keys, processors = self.compiled(statement, column_keys)
        rows = [dict(zip(keys, record, strict=True)) for record in records]
        for key, process in processors:
            for row in rows:
                row[key] = process(row[key])
        return rows


def _committed(connection: sqlite3.Connection, abandoned: threading.Event, body: Callable[[], _T]) -> _T:
    """``body()`` then COMMIT; not begun if the caller has gone already, rolled back if it raised
    or the caller went meanwhile."""
    if abandoned.is_set():
        raise Abandoned
    try:
        result = body()
        if abandoned.is_set():
            raise Abandoned
        connection.commit()
    except BaseException:
        connection.rollback()
        raise
    return result


def _completed(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` to its end in this thread: it must never suspend (its awaits are
    statements, which `SqliteStatements` runs on the spot)."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a direct SQLite transaction awaited something other than its statements")


class SqliteStatements:
    """`memory_tiers.long_term.statements.Statements` on the sqlite3 connection, in the driver's
    thread, inside one transaction (`SqliteDirect.in_transaction`): each statement runs where it
    is awaited. None runs once the caller has stopped waiting."""

    def __init__(
        self, direct: SqliteDirect, connection: sqlite3.Connection, abandoned: threading.Event
    ) -> None:
        self.direct = direct
        self._connection = connection
        self._abandoned = abandoned

    def _fetch(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> list[Row]:
        if self._abandoned.is_set():
            raise Abandoned
        sql, args = self.direct.bound(statement, params, column_keys)
        return self.direct.converted(statement, column_keys, self._connection, sql, args)

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> list[Row]:
        """See `Statements.rows`."""
        return self._fetch(statement, params)

    async def many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> list[Row]:
        """See `Statements.many`: one execution per row (a turn stores a few facts)."""
        keys = tuple(rows[0])
        found: list[Row] = []
        for row in rows:
            found += self._fetch(statement, row, keys)
        return found
