"""The servers a run uses: its own PostgreSQL database and its own Redis key prefix.

A run creates ``mt_bench_<hex>`` through the admin URL and drops it at the end, even on error;
a benchmark that needs databases of its own (a million facts, an identical copy of 100k
checkpoints) gets ``mt_bench_<hex>_<name>`` from `Servers.database`, dropped when its block
exits. Its Redis keys all start with ``mt-bench-<hex>`` and are deleted by SCAN + DEL of that prefix
only (never FLUSHDB/FLUSHALL: the server is shared).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_ENV = "MEMORY_TIERS_BENCH_REDIS_URL"
POSTGRES_ENV = "MEMORY_TIERS_BENCH_POSTGRES_URL"
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Servers:
    """Where this run's data lives on the shared servers."""

    redis_url: str
    postgres_url: str
    """The run's own database (not the admin URL)."""
    key_prefix: str
    admin_url: str = ""
    """The admin URL the run's databases are created through."""

    @asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[str]:
        """A database ``<run database>_<name>`` of the benchmark's own, dropped on exit."""
        if not re.fullmatch(r"[a-z0-9_]{1,20}", name):
            raise ValueError(f"database suffix {name!r}: use 1-20 of a-z, 0-9 and _")
        run_database = urlsplit(self.postgres_url).path.lstrip("/")
        async with temporary_database(self.admin_url, f"{run_database}_{name}") as url:
            yield url


def resolve_urls(redis_url: str | None, postgres_url: str | None) -> tuple[str, str]:
    """Flags first, then ``MEMORY_TIERS_BENCH_*_URL``, then the local defaults."""
    return (
        redis_url or os.environ.get(REDIS_ENV) or DEFAULT_REDIS_URL,
        postgres_url or os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL,
    )


def libpq_url(url: str) -> str:
    """``postgresql+asyncpg://...`` (SQLAlchemy style) as a plain ``postgresql://`` URL."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@asynccontextmanager
async def temporary_database(admin_url: str, name: str | None = None) -> AsyncIterator[str]:
    """Create ``name`` (default ``mt_bench_<hex>``), yield its URL, and drop it
    (``WITH (FORCE)``) afterwards."""
    admin = libpq_url(admin_url)
    name = name or f"mt_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin, name)
    finally:
        conn = await asyncpg.connect(admin, timeout=CONNECT_TIMEOUT)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def delete_prefixed_keys(url: str, prefix: str) -> int:
    """Delete the keys under ``prefix:`` with SCAN + DEL; return how many were deleted."""
    if not prefix:
        raise ValueError("refusing to delete keys for an empty prefix")
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*"
    client = aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.delete(*batch)
                batch.clear()
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


@asynccontextmanager
async def open_servers(redis_url: str, postgres_admin_url: str) -> AsyncIterator[Servers]:
    """This run's database and key prefix; both are removed when the block exits."""
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=CONNECT_TIMEOUT)
    try:
        await client.ping()
    finally:
        await client.aclose()
    prefix = f"mt-bench-{uuid.uuid4().hex[:12]}"
    async with temporary_database(postgres_admin_url) as database_url:
        try:
            yield Servers(redis_url, database_url, prefix, libpq_url(postgres_admin_url))
        finally:
            await delete_prefixed_keys(redis_url, prefix)
