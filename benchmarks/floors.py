"""The raw floor: the same reads and writes done with the drivers alone, no library in between.

Load floor: one Redis pipeline (GETEX of a session key, refreshing its TTL) and one SELECT of the
user's profile and top-10 current facts, the two run concurrently as the load node runs them.
Save floor: one Redis pipeline (SET ... EX) and one committed transaction holding one INSERT,
one after the other as the save node does them. The SQL runs on a held connection against the
same tables and rows the library uses; the floor's own writes go to ``bench_floor_writes``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg
import fakeredis
import redis.asyncio as aioredis

from benchmarks.servers import libpq_url

SESSION_TTL = 3600

PG_LOAD = """
SELECT p.document, f.id, f.subject, f.attribute, f.value, f.confidence, f.updated_at
FROM (SELECT 1) AS anchor
LEFT JOIN mt_profiles AS p ON p.user_id = $1
LEFT JOIN LATERAL (
    SELECT id, subject, attribute, value, confidence, updated_at FROM mt_facts
    WHERE user_id = $1 AND superseded_by IS NULL
    ORDER BY updated_at DESC LIMIT 10
) AS f ON true
"""
PG_CREATE = """
CREATE TABLE IF NOT EXISTS bench_floor_writes (
    id bigserial PRIMARY KEY, user_id text NOT NULL, payload text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now())
"""
PG_INSERT = "INSERT INTO bench_floor_writes (user_id, payload) VALUES ($1, $2)"

SQLITE_LOAD = """
SELECT p.document, f.id, f.subject, f.attribute, f.value, f.confidence, f.updated_at
FROM (SELECT 1) AS anchor
LEFT JOIN mt_profiles AS p ON p.user_id = ?1
LEFT JOIN (
    SELECT id, subject, attribute, value, confidence, updated_at FROM mt_facts
    WHERE user_id = ?1 AND superseded_by IS NULL
    ORDER BY updated_at DESC LIMIT 10
) AS f ON 1
"""
SQLITE_CREATE = """
CREATE TABLE IF NOT EXISTS bench_floor_writes (
    id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, payload TEXT NOT NULL,
    written_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)
"""
SQLITE_INSERT = "INSERT INTO bench_floor_writes (user_id, payload) VALUES (?, ?)"


class Floor(Protocol):
    """The raw load and save of one backend stack."""

    async def load(self) -> None:
        """Session read (TTL refreshed) and profile + top-10 facts, concurrently."""

    async def save(self) -> None:
        """Session write with its TTL, then one committed INSERT."""


def _session_payload(user_id: str, data: dict[str, Any]) -> str:
    return json.dumps({"owner": user_id, "data": data, "updated_at": time.time()})


class _RedisSession:
    """The session half of a floor: one pipeline per call, on any redis-py compatible client."""

    def __init__(self, client: aioredis.Redis, key: str, user_id: str, data: dict[str, Any]) -> None:
        self.client, self.key, self.user_id, self.data = client, key, user_id, data

    async def read(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.getex(self.key, ex=SESSION_TTL)
            await pipe.execute()

    async def write(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.key, _session_payload(self.user_id, self.data), ex=SESSION_TTL)
            await pipe.execute()


class PostgresRedisFloor:
    """redis-py + asyncpg on a held connection."""

    def __init__(self, session: _RedisSession, conn: asyncpg.Connection, user_id: str) -> None:
        self.session, self.conn, self.user_id = session, conn, user_id

    async def load(self) -> None:
        await asyncio.gather(self.session.read(), self.conn.fetch(PG_LOAD, self.user_id))

    async def save(self) -> None:
        await self.session.write()
        async with self.conn.transaction():
            await self.conn.execute(PG_INSERT, self.user_id, _session_payload(self.user_id, {}))


class EmbeddedFloor:
    """fakeredis + aiosqlite on the long-term SQLite file, with the library's pragmas."""

    def __init__(self, session: _RedisSession, conn: aiosqlite.Connection, user_id: str) -> None:
        self.session, self.conn, self.user_id = session, conn, user_id

    async def _select(self) -> None:
        async with self.conn.execute(SQLITE_LOAD, (self.user_id,)) as cursor:
            await cursor.fetchall()

    async def load(self) -> None:
        await asyncio.gather(self.session.read(), self._select())

    async def save(self) -> None:
        await self.session.write()
        await self.conn.execute(SQLITE_INSERT, (self.user_id, _session_payload(self.user_id, {})))
        await self.conn.commit()


@asynccontextmanager
async def postgres_redis_floor(
    postgres_url: str, redis_url: str, key_prefix: str, user_id: str, data: dict[str, Any]
) -> AsyncIterator[PostgresRedisFloor]:
    """A floor on the run's database and Redis prefix, its session key written and its table made."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    conn = await asyncpg.connect(libpq_url(postgres_url))
    try:
        await conn.execute(PG_CREATE)
        session = _RedisSession(client, f"{key_prefix}:floor:{{{user_id}}}:session", user_id, data)
        await session.write()
        yield PostgresRedisFloor(session, conn, user_id)
    finally:
        await conn.close()
        await client.aclose()


@asynccontextmanager
async def embedded_floor(
    sqlite_path: Path, user_id: str, data: dict[str, Any]
) -> AsyncIterator[EmbeddedFloor]:
    """A floor on the long-term SQLite file and an in-process fakeredis."""
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    conn = await aiosqlite.connect(sqlite_path, timeout=5.0)
    try:
        for pragma in ("journal_mode=WAL", "busy_timeout=5000", "synchronous=NORMAL"):
            await conn.execute(f"PRAGMA {pragma}")
        await conn.execute(SQLITE_CREATE)
        await conn.commit()
        session = _RedisSession(client, f"floor:{{{user_id}}}:session", user_id, data)
        await session.write()
        yield EmbeddedFloor(session, conn, user_id)
    finally:
        await conn.close()
        await client.aclose()
