"""What `memory_tiers.direct_sql` sends: a statement compiled once by the engine's dialect, and its
arguments bound by name with SQLAlchemy's conversions."""

from __future__ import annotations

import asyncio
import functools
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_, greenlet_spawn

_PER_CALL = object()
# Per engine, the closes of cancelled calls' connections still waiting for the server
# (`AsyncpgDirect`): `settle` awaits them before the engine is disposed of.
_SETTLING: weakref.WeakKeyDictionary[Any, set[asyncio.Future[None]]] = weakref.WeakKeyDictionary()
_T = TypeVar("_T")
Convert = Callable[[Any], Any]


class Compiled(NamedTuple):
    """A statement's SQL for the driver, with how to bind it and read its rows."""

    sql: str
    # The driver's positional parameters: (name, _PER_CALL, SQLAlchemy's conversion of the value
    # or None) when the call binds it, else (name, the converted value the statement carries,
    # None), such as a filter path's labels.
    parameters: tuple[tuple[str, Any, Convert | None], ...]
    keys: tuple[str, ...]  # the result's column names
    # (key, SQLAlchemy's result processor) of the columns whose values it converts.
    processors: tuple[tuple[str, Convert], ...]


def compile_statement(
    engine: AsyncEngine, statement: Any, column_keys: tuple[str, ...] | None, *, results: bool
) -> Compiled:
    """``statement`` compiled by ``engine``'s dialect; an INSERT without ``VALUES`` takes the
    columns ``column_keys``, bound by those names. With ``results``, the columns' result
    processors are kept (for a driver whose values SQLAlchemy's types convert).

    Raises:
        ValueError: the statement has an IN list SQLAlchemy would expand per call.
    """
    dialect = engine.dialect
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    if compiled.post_compile_params:
        raise ValueError("direct_sql cannot expand IN parameters: bind an array instead")
    parameters = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required or (column_keys is not None and name in column_keys):
            parameters.append((name, _PER_CALL, convert))
        else:
            value = bind.effective_value
            parameters.append((name, value if convert is None else convert(value), None))
    columns = compiled._result_columns  # what SQLAlchemy's own result uses to key and convert
    processors = tuple(
        (column.keyname, process)
        for column in (columns if results else ())
        if (process := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
    )
    return Compiled(
        compiled.string, tuple(parameters), tuple(column.keyname for column in columns), processors
    )


async def settle(engine: AsyncEngine) -> None:
    """Wait for the cancelled direct calls on ``engine`` to be cancelled on the server (each
    bounded by its timeout): call it before ``engine.dispose()``, which would cut them short."""
    pending = _SETTLING.get(engine.sync_engine)
    while pending:
        await asyncio.gather(*pending, return_exceptions=True)


def settling(engine: AsyncEngine, future: asyncio.Future[None]) -> None:
    """Count ``future`` (a cancelled call's close) among what `settle` waits for."""
    pending = _SETTLING.setdefault(engine.sync_engine, set())
    pending.add(future)
    future.add_done_callback(pending.discard)


class DirectSQL(ABC):
    """The engine, its statements' compiled forms, and a pooled connection to send them on.

    Args:
        engine: the `AsyncEngine` whose pool and dialect are used.
        cache_size: how many statements' compiled forms are kept.
    """

    def __init__(self, engine: AsyncEngine, *, cache_size: int) -> None:
        self.engine = engine
        self.compiled = functools.lru_cache(maxsize=cache_size)(self._compile)

    def _compile(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Compiled:
        return compile_statement(self.engine, statement, column_keys, results=False)

    def bound(
        self, statement: Any, params: Mapping[str, Any], column_keys: tuple[str, ...] | None = None
    ) -> tuple[str, list[Any]]:
        """The SQL sent for ``statement`` and its positional arguments for ``params``.

        Raises:
            KeyError: a parameter is missing.
        """
        sql, parameters, _, _ = self.compiled(statement, column_keys)
        return sql, [
            value if value is not _PER_CALL else params[name] if convert is None else convert(params[name])
            for name, value, convert in parameters
        ]

    @abstractmethod
    def _driver_error(self, exc: BaseException) -> BaseException | None:
        """What the driver raised, as the DB-API error SQLAlchemy would wrap (None: not one)."""

    @abstractmethod
    def _broken(self, driver: Any, exc: BaseException, error: BaseException | None) -> bool:
        """Whether a connection that raised ``exc`` (``error`` as a DB-API error) is lost."""

    async def _abandon(self, pooled: Any, exc: BaseException) -> None:
        """Take a broken or interrupted connection out of the pool (``exc``: what it raised)."""
        pooled.invalidate(exc)  # outside a greenlet, it closes without waiting; frees the slot

    _error_base: type[BaseException] = Exception

    async def call(self, operation: Callable[[Any], Awaitable[_T]]) -> _T:
        """``operation(driver connection)`` awaited on a connection of the engine's pool, checked
        out, used and checked in inside one greenlet (SQLAlchemy's own ``raw_connection`` and
        check-in would take one each, at about 8 us of Python apiece). A connection that broke
        is invalidated instead; the driver's errors are raised as SQLAlchemy's `DBAPIError`s."""
        held: list[Any] = []  # the checked-out connection, while the operation holds it
        try:
            return await greenlet_spawn(self._call_in_greenlet, operation, held)
        except BaseException as exc:
            if not held:  # the check-out or the check-in failed
                raise self._unconnected_error(exc) from exc
            pooled = held[0]
            error = self._driver_error(exc)
            # As SQLAlchemy decides: a lost connection, or a call cut short (cancelled), is not
            # handed out again; one the server refused an input on is fine.
            broken = not isinstance(exc, Exception) or self._broken(pooled.driver_connection, exc, error)
            if broken:
                await self._abandon(pooled, exc)
            else:
                await greenlet_spawn(pooled.close)
            if error is not None:
                raise DBAPIError.instance(
                    None, None, error, self._error_base, connection_invalidated=broken
                ) from exc
            raise  # OSError, TimeoutError, CancelledError: `translate_errors` knows them

    def _unconnected_error(self, exc: BaseException) -> BaseException:
        """What a failed check-out or check-in raises: a driver error (a server starting up
        refuses to connect with one) wrapped as ``engine.connect()`` wraps it, else ``exc``."""
        dialect = self.engine.dialect
        if not isinstance(exc, dialect.loaded_dbapi.Error):
            return exc
        return DBAPIError.instance(
            None,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=dialect.is_disconnect(exc, None, None),  # type: ignore[arg-type]
        )

    def _call_in_greenlet(self, operation: Callable[[Any], Awaitable[_T]], held: list[Any]) -> _T:
        pooled = self.engine.sync_engine.raw_connection()
        held.append(pooled)
        result = await_(operation(pooled.driver_connection))
        held.clear()
        # Check-in resets the connection as the engine's pool does (on the long-term engine's
        # SQLite a rollback only if a transaction is open; asyncpg's transactions here end by
        # asyncpg's own commit or rollback) and may close it.
        pooled.close()
        return result
