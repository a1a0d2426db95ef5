"""The one boundary where driver exceptions become memory_tiers errors (cause kept)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions
import sqlalchemy.exc

from memory_tiers.errors import BackendError, BackendUnavailableError, MemoryTiersError

_UNREACHABLE: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The DB-API errors of the drivers LangGraph's savers use directly (sqlite3, and psycopg
    when the ``postgres`` extra is installed)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


_DRIVER_ERRORS = _driver_errors()


def _lost_connection_errors() -> tuple[type[BaseException], ...]:
    """psycopg's OperationalError: a refused or dropped connection, a server shutting down or
    starting up, a pool timeout (PoolTimeout derives from it). A retry may succeed."""
    try:
        import psycopg
    except ImportError:
        return ()
    return (psycopg.OperationalError,)


_UNREACHABLE += _lost_connection_errors()

# SQLSTATEs of a server that cannot serve right now: connection exceptions (class 08), and
# admin shutdown, crash shutdown, "the database system is starting up" (a restart in progress).
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


def _server_unavailable(error: BaseException | None) -> bool:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES)


@contextmanager
def translate_errors(tier: str, masked_url: str) -> Iterator[None]:
    """Re-raise driver errors from the block as `BackendError` naming the tier and URL."""
    try:
        yield
    except MemoryTiersError:
        raise
    except sqlalchemy.exc.DBAPIError as exc:
        if (
            exc.connection_invalidated
            or isinstance(exc, sqlalchemy.exc.InterfaceError)
            or _server_unavailable(exc.orig)
        ):
            raise BackendUnavailableError(tier, masked_url, str(exc.orig)) from exc
        raise BackendError(f"{tier} tier ({masked_url}): {exc.orig}") from exc
    except _UNREACHABLE as exc:
        raise BackendUnavailableError(tier, masked_url, str(exc) or type(exc).__name__) from exc
    except (redis.exceptions.RedisError, *_DRIVER_ERRORS) as exc:
        raise BackendError(f"{tier} tier ({masked_url}): {exc}") from exc
