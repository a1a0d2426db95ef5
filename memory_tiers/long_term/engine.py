"""Creating the long-term tier's SQLAlchemy async engine from the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from memory_tiers.config import LongTermConfig
from memory_tiers.errors import ConfigError, MissingDependencyError

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def normalize_sql_url(url: str) -> str:
    """Give a plain ``sqlite://`` or ``postgresql://`` URL its async driver.

    Example:
        >>> normalize_sql_url("postgresql://app@db/agents")
        'postgresql+asyncpg://app@db/agents'
        >>> normalize_sql_url("sqlite:///data/memory.db")
        'sqlite+aiosqlite:///data/memory.db'
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "long_term.url is not a database URL: use sqlite+aiosqlite:///path or "
            "postgresql+asyncpg://user@host/db"
        ) from None
    backend = (
        "postgresql"
        if parsed.get_backend_name() in ("postgres", "postgresql")
        else (parsed.get_backend_name())
    )
    if parsed.get_driver_name() in ("", "pysqlite", "psycopg2", "psycopg") and backend in (_ASYNC_DRIVERS):
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    return parsed.render_as_string(hide_password=False)


def long_term_url(config: LongTermConfig, data_dir: Path) -> str:
    """The effective URL: the configured one, or a SQLite file under ``data_dir``."""
    if config.url is None:
        return f"sqlite+aiosqlite:///{data_dir / 'long_term.db'}"
    return normalize_sql_url(config.url.get_secret_value())


def _enable_sqlite_pragmas(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the single writer; busy_timeout makes writers queue
        # instead of failing with "database is locked".
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _roll_back_open_transactions(engine: AsyncEngine) -> None:
    """Roll back a connection checked in with a transaction open, and only then. The pool's own
    reset rolls back every time, and on aiosqlite each ROLLBACK is a hop to the driver's thread
    that costs as much as a lone read itself. This is SQLAlchemy's recipe for a custom reset
    (a ``reset`` listener with ``pool_reset_on_return=None``); SQLite itself says whether a
    transaction is open."""

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, reset_state: Any) -> None:
        # Not asyncio-safe: garbage collected outside the event loop, where the pool would not
        # roll back either (the connection is discarded).
        if reset_state.asyncio_safe and _in_transaction(dbapi_connection.driver_connection):
            dbapi_connection.rollback()


def _in_transaction(driver: Any) -> bool:
    try:
        return bool(driver.in_transaction)
    except ValueError:  # closed (aiosqlite): nothing to roll back, as SQLAlchemy's adapter skips it
        return False


def create_engine(config: LongTermConfig, data_dir: Path) -> AsyncEngine:
    """Build (not connect) the async engine for the long-term tier."""
    url = make_url(long_term_url(config, data_dir))
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            # An in-memory database lives in one connection. SQLAlchemy's default StaticPool
            # hands that connection to every caller at once, so concurrent transactions would
            # interleave; a pool of exactly one makes callers take turns.
            kwargs.update(poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0)
        kwargs["connect_args"] = {"timeout": config.connect_timeout.total_seconds()}
        kwargs["pool_reset_on_return"] = None  # `_roll_back_open_transactions` does it
    else:
        kwargs.update(
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            pool_timeout=config.pool_timeout.total_seconds(),
            pool_recycle=1800,
        )
        if url.get_driver_name() == "asyncpg":
            kwargs["connect_args"] = {"timeout": config.connect_timeout.total_seconds()}
            if config.statement_timeout is not None:
                # Client side, so it also bounds a server that stopped answering.
                kwargs["connect_args"]["command_timeout"] = config.statement_timeout.total_seconds()
    try:
        engine = create_async_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("long_term on PostgreSQL", "postgres", exc.name or "") from None
    except ArgumentError as exc:
        raise ConfigError(f"long_term.url: {exc}") from None
    if backend == "sqlite":
        _enable_sqlite_pragmas(engine, int(config.connect_timeout.total_seconds() * 1000))
        _roll_back_open_transactions(engine)
    elif config.generic_plans:
        _force_generic_plans(engine)
    return engine


def _force_generic_plans(engine: AsyncEngine) -> None:
    """Plan each prepared statement once per connection: PostgreSQL's `auto` mode can keep
    re-planning a statement on every call (docs/configuration.md, long_term.generic_plans).

    A ``SET`` once connected, not a startup parameter (which PgBouncer refuses), in autocommit so
    that the pool's rollback on check-in cannot undo it (SQLAlchemy's recipe for session
    settings)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute("SET plan_cache_mode = force_generic_plan")
        cursor.close()
        dbapi_connection.autocommit = autocommit


async def plan_for_values(conn: AsyncConnection) -> None:
    """PostgreSQL: plan the statements of ``conn``'s transaction for the values they are given.

    For a range whose width decides the plan (the store's TTL sweep, ``expires_at <= now``;
    retention's ``last_active_at < cutoff``): a generic plan (``long_term.generic_plans``, or a
    role's ``plan_cache_mode``) is made for a third of the table and may scan all of it where the
    index finds the few rows due. ``SET LOCAL`` ends with the transaction; one round trip, for
    statements that run in the background. SQLite plans every statement for its values.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
