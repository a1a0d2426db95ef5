"""The working tier: a LangGraph checkpointer per configured backend.

Each backend is LangGraph's own saver; this module only opens its connections the way
production needs them (SQLite in WAL with a busy timeout, a PostgreSQL pool that checks the
connections which sat idle), gives the saver the strict serializer of
memory_tiers/working/serde.py (no pickle, an explicit allowlist) and closes them again.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.base import SerializerProtocol

from memory_tiers.config import WorkingConfig
from memory_tiers.config_values import mask_url
from memory_tiers.errors import BackendError, BackendUnavailableError, MissingDependencyError
from memory_tiers.translate import translate_errors
from memory_tiers.working.serde import StrictSerializer, allowlist, strict_redis_serde, strict_serde

TIER = "working"

_EXTRAS = {
    "postgres": ("langgraph.checkpoint.postgres.aio", "postgres"),
    "redis": ("langgraph.checkpoint.redis.aio", "redis-checkpoint"),
}


def _import_backend(backend: str) -> Any:
    module, extra = _EXTRAS[backend]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"working.backend {backend!r}", extra, exc.name or module) from None


def sqlite_path(config: WorkingConfig, data_dir: Path) -> Path:
    """The SQLite file of the working tier."""
    if config.url is None:
        return data_dir / "working.db"
    return Path(config.url.get_secret_value().removeprefix("sqlite:///"))


def postgres_conninfo(url: str) -> str:
    """A libpq URL for psycopg, accepting SQLAlchemy-style ``postgresql+driver://`` too."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


@asynccontextmanager
async def open_checkpointer(
    config: WorkingConfig, data_dir: Path, *, setup: bool
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """Open the configured checkpointer; with ``setup`` also create or migrate its tables."""
    types = allowlist(config.serde.allowed_modules)
    async with AsyncExitStack() as stack:
        if config.backend == "memory":
            yield InMemorySaver(serde=strict_serde(types))
            return
        if config.backend == "sqlite":
            saver = await stack.enter_async_context(_open_sqlite(config, data_dir, strict_serde(types)))
        elif config.backend == "postgres":
            saver = await stack.enter_async_context(_open_postgres(config, strict_serde(types)))
        else:
            saver = await stack.enter_async_context(_open_redis(config, strict_redis_serde(types)))
        if setup:
            await setup_checkpointer(saver, config)
        yield saver


async def setup_checkpointer(saver: BaseCheckpointSaver[Any], config: WorkingConfig) -> None:
    """Run the saver's own idempotent schema setup."""
    url = mask_url(config.url.get_secret_value()) if config.url else config.backend
    with translate_errors(TIER, url):
        try:
            async with _setup_lock(config):
                if hasattr(saver, "asetup"):
                    await saver.asetup()
                elif hasattr(saver, "setup"):
                    await saver.setup()
        except Exception as exc:
            if not _is_missing_redis_modules(exc):
                raise
            raise BackendError(
                f"working tier ({url}): the redis backend needs Redis 8 or Redis Stack "
                f"(RediSearch and RedisJSON): {exc}"
            ) from exc


# pg_advisory_lock(class, key) held while the PostgreSQL saver sets up (the class is "mt").
_SETUP_LOCK = (0x6D74, 0x777374)
_SETUP_LOCK_POLLS = 1200  # 0.1 s apart: a setup waits at most about two minutes for another


@asynccontextmanager
async def _setup_lock(config: WorkingConfig) -> AsyncIterator[None]:
    """On PostgreSQL, make workers starting together on a new database set up one at a time:
    LangGraph's setup creates its tables and records its migrations without a lock, so two at
    once fail on duplicate keys. The lock is held on a connection of its own (not the pool's).

    The waiters poll with ``pg_try_advisory_lock`` instead of blocking in ``pg_advisory_lock``:
    the setup runs ``CREATE INDEX CONCURRENTLY``, which waits for every open transaction, a
    blocked lock call included (an undetected deadlock).
    """
    if config.backend != "postgres" or config.url is None:
        yield
        return
    import psycopg

    conninfo = postgres_conninfo(config.url.get_secret_value())
    timeout = max(1, int(config.connect_timeout.total_seconds()))
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, connect_timeout=timeout
    ) as conn:
        for _ in range(_SETUP_LOCK_POLLS):
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", _SETUP_LOCK)).fetchone()
            if row and row[0]:
                break
            await asyncio.sleep(0.1)
        else:
            raise BackendUnavailableError(TIER, mask_url(conninfo), "another worker's setup did not finish")
        yield  # closing the connection releases the lock


def _is_missing_redis_modules(exc: Exception) -> bool:
    # redisvl raises its own exception type when FT.* commands are unknown.
    return "FT." in str(exc) or type(exc).__module__.startswith("redisvl")


@asynccontextmanager
async def _open_sqlite(
    config: WorkingConfig, data_dir: Path, serde: StrictSerializer
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = sqlite_path(config, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with translate_errors(TIER, str(path)):
        conn = await aiosqlite.connect(path, timeout=config.busy_timeout.total_seconds())
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA busy_timeout={int(config.busy_timeout.total_seconds() * 1000):d}")
        saver = AsyncSqliteSaver(conn, serde=serde)
        saver.jsonplus_serde = serde  # unused upstream today; never a permissive one
        yield saver
    finally:
        await conn.close()


CHECK_IDLE_AFTER = 1.0
"""Seconds a pooled PostgreSQL connection may sit idle and still be handed out unchecked."""


class IdleCheck:
    """psycopg_pool's ``check`` and ``reset`` callbacks: check a connection (one round trip,
    `AsyncConnectionPool.check_connection`) only when it was idle longer than ``idle_after``
    seconds, or was never handed out.

    Checking on every checkout costs a round trip per saver call, several per turn. A connection
    returned a moment ago is as good as the check would prove; one that broke anyway (a server
    restarted within that moment) fails its call with `BackendUnavailableError`, is discarded by
    the pool on return, and the caller's retry gets a fresh or checked one.
    """

    def __init__(self, idle_after: float) -> None:
        self.idle_after = idle_after
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    async def returned(self, conn: Any) -> None:
        """The pool's ``reset``: note when ``conn`` came back."""
        self._returned[conn] = time.monotonic()

    async def check(self, conn: Any) -> None:
        """The pool's ``check``: raise if ``conn`` was idle too long and no longer works."""
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > self.idle_after:
            from psycopg_pool import AsyncConnectionPool

            await AsyncConnectionPool.check_connection(conn)


@asynccontextmanager
async def _open_postgres(
    config: WorkingConfig, serde: SerializerProtocol
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    aio = _import_backend("postgres")
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool, PoolTimeout

    assert config.url is not None
    url = config.url.get_secret_value()
    timeout = config.connect_timeout.total_seconds()
    idle_check = IdleCheck(CHECK_IDLE_AFTER)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        postgres_conninfo(url),
        min_size=config.pool_min_size,
        max_size=config.pool_max_size,
        timeout=timeout,
        open=False,
        # A connection idle for a while is checked before it is handed out, so a restarted
        # server costs one failed check instead of a failed turn (see IdleCheck).
        check=idle_check.check,
        reset=idle_check.returned,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0,
            "row_factory": dict_row,
            "connect_timeout": max(1, int(timeout)),
        },
    )
    try:
        await pool.open(wait=True, timeout=timeout)
    except PoolTimeout as exc:
        await pool.close()
        raise BackendUnavailableError(TIER, mask_url(url), f"no connection within {timeout:g}s") from exc
    saver = aio.AsyncPostgresSaver(pool, serde=serde)
    # AsyncPostgresSaver holds one asyncio.Lock around every call, even on a pool, so all of a
    # worker's checkpoint reads and writes went one at a time over one connection
    # (langchain-ai/langgraph#7259). On a pool each call checks out a connection of its own: as
    # many calls run at once as the pool holds, and the rest wait their turn as before.
    saver.lock = asyncio.Semaphore(config.pool_max_size)  # type: ignore[assignment]
    try:
        yield saver
    finally:
        await pool.close()


@asynccontextmanager
async def _open_redis(
    config: WorkingConfig, serde: SerializerProtocol
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    aio = _import_backend("redis")
    import redis.asyncio as aioredis

    assert config.url is not None
    url = config.url.get_secret_value()
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=config.connect_timeout.total_seconds(), health_check_interval=30
    )
    try:
        with translate_errors(TIER, mask_url(url)):
            await client.ping()
        saver = aio.AsyncRedisSaver(redis_client=client)
        saver.serde = serde  # AsyncRedisSaver takes no serde argument
        yield saver
    finally:
        await client.aclose()
