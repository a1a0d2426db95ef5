"""`memory_tiers.direct_sql` on asyncpg: lone statements outside any transaction, and transactions.

Rows come back as asyncpg's records, decoded by asyncpg's codecs (SQLAlchemy registers its JSON
codecs on every connection it opens), so only statements whose columns need no SQLAlchemy
conversion belong here: columns are the caller's to know.

Imported only for engines on the asyncpg driver (the ``postgres`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import ColumnElement, Select
from sqlalchemy.ext.asyncio import AsyncEngine

from memory_tiers.direct_sql.compiled import DirectSQL, settling

_T = TypeVar("_T")
# How long a cancelled statement's connection waits for the server to confirm the cancellation
# before it is closed regardless.
CANCEL_TIMEOUT = 5.0
# Raised as SQLAlchemy's DBAPIError subclass of the same name (InterfaceError, DataError...).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class AsyncpgDirect(DirectSQL):
    """Statements on the asyncpg connection itself.

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
        super().__init__(engine, cache_size=cache_size)
        self.columns = None if columns is None else tuple(columns)
        # Statements are built once by their owners: each is checked once.
        self._checked = functools.lru_cache(maxsize=cache_size)(self._selecting)

    def _driver_error(self, exc: BaseException) -> BaseException | None:
        return exc if isinstance(exc, _DRIVER_ERRORS) else None

    def _broken(self, driver: Any, exc: BaseException, error: BaseException | None) -> bool:
        # A connection that closed, is in a confused state, or is still inside a transaction
        # (its ROLLBACK failed: SQLAlchemy's check-in would not roll back a transaction it did
        # not begin) is not handed out again.
        return (
            bool(driver.is_closed())
            or isinstance(exc, asyncpg.InternalClientError)
            or bool(driver.is_in_transaction())
        )

    async def _abandon(self, pooled: Any, exc: BaseException) -> None:
        driver = pooled.driver_connection
        if driver.is_closed():
            # Lost: the server or the network went away, taking the pool's other connections of
            # its time with it. As SQLAlchemy does on a disconnect, every connection made before
            # now is replaced at its next check-out, so a retry does not meet the next dead one.
            self.engine.sync_engine.pool._invalidate(pooled, exc)
            return
        if isinstance(exc, Exception):
            pooled.invalidate(exc)
            return
        # Cut short (cancelled) mid-statement: asyncpg has sent the server a cancel request, and
        # a graceful close waits until the server has acknowledged it, so the statement stops
        # there. Dropped at once instead, a backend waiting for a lock would run the statement
        # when it got the lock, and a lone write (a PostgreSQL save) would commit after its
        # caller gave up, even after that caller's later saves. The pool slot is freed when the
        # close is done (or has timed out). Cancelled again meanwhile (anyio's cancel scopes do
        # so on every loop pass), this still waits, bounded by CANCEL_TIMEOUT: the caller
        # re-raises its cancellation after. The engine's owner awaits what is left before
        # disposing of the engine (`settle`).
        closing = asyncio.ensure_future(driver.close(timeout=CANCEL_TIMEOUT))
        closing.add_done_callback(lambda done: _invalidated(pooled, exc, done))
        settling(self.engine, closing)
        while not closing.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(closing)

    def _selecting(self, statement: Select[Any]) -> Select[Any]:
        if self.columns is not None:
            selected, expected = tuple(statement.selected_columns), self.columns
            if len(selected) != len(expected) or any(
                a is not b for a, b in zip(selected, expected, strict=True)
            ):
                raise ValueError("AsyncpgDirect runs SELECTs of its own columns only")
        return statement

    async def rows(self, statement: Select[Any], params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """The rows of ``statement`` for ``params`` (by bound parameter name), outside any
        transaction.

        Raises:
            KeyError: a parameter is missing (the user's, say): nothing was sent.
            sqlalchemy.exc.DBAPIError: the server refused the statement.
            sqlalchemy.exc.InterfaceError: the connection failed (it is invalidated).
        """
        sql, args = self.bound(self._checked(statement), params)
        records: list[asyncpg.Record] = await self.call(lambda driver: driver.fetch(sql, *args))
        return records

    async def execute(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> None:
        """Run one write ``statement`` for ``params`` outside any transaction, so PostgreSQL
        commits it by itself; an INSERT without ``VALUES`` binds ``column_keys``. Errors are
        raised as by `rows`."""
        sql, args = self.bound(statement, params, column_keys)
        await self.call(lambda driver: driver.execute(sql, *args))

    async def in_transaction(self, work: Callable[[AsyncpgStatements], Awaitable[_T]]) -> _T:
        """``work`` in one transaction on a pooled connection: committed when it returns, rolled
        back if it raises. Errors are raised as by `rows`."""

        async def transaction(driver: Any) -> _T:
            async with driver.transaction():
                return await work(AsyncpgStatements(self, driver))

        return await self.call(transaction)


def _invalidated(pooled: Any, exc: BaseException, closing: asyncio.Future[None]) -> None:
    if not closing.cancelled():
        closing.exception()  # retrieved: a close that timed out has aborted the connection
    pooled.invalidate(exc)


class AsyncpgStatements:
    """`memory_tiers.long_term.statements.Statements` on an asyncpg connection in a transaction
    (`AsyncpgDirect.in_transaction`): each statement compiled once, rows as asyncpg records.
    PostgreSQL's consolidation is one statement (`mt_consolidate`), so only `rows` is offered."""

    def __init__(self, direct: AsyncpgDirect, connection: Any) -> None:
        self.direct = direct
        self._connection = connection

    async def rows(self, statement: Any, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        """See `Statements.rows`."""
        sql, args = self.direct.bound(statement, params)
        records: list[asyncpg.Record] = await self._connection.fetch(sql, *args)
        return records
