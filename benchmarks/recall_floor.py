"""The raw floor of recall: the same user-scoped top-k with the drivers alone, on a held connection.

Both queries score a user's current, unflagged facts as the library does (relevance m / (m + 1)
for m of the message's words found in ``search_text``, recency, confidence, with the default
weights; in double precision on PostgreSQL, as the library scores) and keep the top k; ``m`` is
counted once per row (OFFSET 0 / LIMIT -1 keep the planner from inlining the subquery, which
would count it at each use). They only ever read the user's rows through the user index; the
search floor keeps the facts with at least one word found (what ``search_facts`` returns
without semantic recall), the load floor adds the profile, as ``load_context`` does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

from benchmarks.servers import libpq_url
from memory_tiers.config import RecallConfig
from memory_tiers.long_term.recall import search_terms

_RECALL = RecallConfig()
_W = _RECALL.weights
_HALF_LIFE = _RECALL.recency_half_life.total_seconds()

PG_SCORED = f"""
SELECT id, subject, attribute, value, confidence, updated_at,
       m::float8 / (m + 1) * {_W.relevance}
       + {_W.recency} / (1 + greatest(date_part('epoch', $3::timestamptz - updated_at), 0) / {_HALF_LIFE})
       + confidence * {_W.confidence} AS score
FROM (
    SELECT f.*,
           (SELECT count(*) FROM unnest($2::text[]) AS t(term) WHERE strpos(f.search_text, t.term) > 0) AS m
    FROM mt_facts AS f
    WHERE f.user_id = $1 AND f.superseded_by IS NULL AND NOT f.flagged
    OFFSET 0
) AS counted
"""
PG_SEARCH = f"{PG_SCORED} WHERE m > 0 ORDER BY score DESC, updated_at DESC, id LIMIT $4"
PG_LOAD = f"""
SELECT p.document, top.* FROM (SELECT 1) AS anchor
LEFT JOIN mt_profiles AS p ON p.user_id = $1
LEFT JOIN LATERAL ({PG_SCORED} ORDER BY score DESC, updated_at DESC, id LIMIT $4) AS top ON true
"""

SQLITE_SCORED = f"""
SELECT id, subject, attribute, value, confidence, updated_at,
       m / (m + 1.0) * {_W.relevance}
       + {_W.recency} / (1.0 + max((julianday(?3) - julianday(updated_at)) * 86400.0, 0) / {_HALF_LIFE})
       + confidence * {_W.confidence} AS score
FROM (
    SELECT f.*, (SELECT count(*) FROM json_each(?2) AS t WHERE instr(f.search_text, t.value) > 0) AS m
    FROM mt_facts AS f
    WHERE f.user_id = ?1 AND f.superseded_by IS NULL AND NOT f.flagged
    LIMIT -1
) AS counted
"""
SQLITE_SEARCH = f"{SQLITE_SCORED} WHERE m > 0 ORDER BY score DESC, updated_at DESC, id LIMIT ?4"
SQLITE_LOAD = f"""
SELECT p.document, top.* FROM (SELECT 1) AS anchor
LEFT JOIN mt_profiles AS p ON p.user_id = ?1
LEFT JOIN ({SQLITE_SCORED} ORDER BY score DESC, updated_at DESC, id LIMIT ?4) AS top ON 1
"""


def padded_terms(query: str) -> list[str]:
    """The message's search terms as the library matches them in ``search_text``."""
    return [f" {term} " for term in search_terms(query)]


class RecallFloor(Protocol):
    """Raw user-scoped top-k queries on one database."""

    async def load(self, user_id: str, query: str, k: int) -> list[Any]:
        """The profile and the user's top-k facts for ``query``."""

    async def search(self, user_id: str, query: str, k: int) -> list[str]:
        """The ids of the user's top-k facts matching ``query``."""

    async def explain(self, search: bool) -> list[str]:
        """The query plan of the search (or load) floor, one line per node."""


class PostgresRecallFloor:
    """asyncpg on a held connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def load(self, user_id: str, query: str, k: int) -> list[Any]:
        return await self.conn.fetch(PG_LOAD, user_id, padded_terms(query), datetime.now(UTC), k)

    async def search(self, user_id: str, query: str, k: int) -> list[str]:
        rows = await self.conn.fetch(PG_SEARCH, user_id, padded_terms(query), datetime.now(UTC), k)
        return [row["id"] for row in rows]

    async def explain(self, search: bool) -> list[str]:
        sql = PG_SEARCH if search else PG_LOAD
        rows = await self.conn.fetch(f"EXPLAIN {sql}", "u00000", [" a "], datetime.now(UTC), 8)
        return [row[0] for row in rows]


class SqliteRecallFloor:
    """aiosqlite on a held connection, with the library's pragmas."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _params(user_id: str, query: str, k: int) -> tuple[Any, ...]:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return (user_id, json.dumps(padded_terms(query)), now, k)

    async def load(self, user_id: str, query: str, k: int) -> list[Any]:
        async with self.conn.execute(SQLITE_LOAD, self._params(user_id, query, k)) as cursor:
            return list(await cursor.fetchall())

    async def search(self, user_id: str, query: str, k: int) -> list[str]:
        async with self.conn.execute(SQLITE_SEARCH, self._params(user_id, query, k)) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def explain(self, search: bool) -> list[str]:
        sql = SQLITE_SEARCH if search else SQLITE_LOAD
        async with self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", self._params("u00000", "a", 8)) as cur:
            return [detail for _id, _parent, _unused, detail in await cur.fetchall()]


@asynccontextmanager
async def postgres_recall_floor(url: str) -> AsyncIterator[PostgresRecallFloor]:
    """The floor on the database at ``url``."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        yield PostgresRecallFloor(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def sqlite_recall_floor(path: Path) -> AsyncIterator[SqliteRecallFloor]:
    """The floor on the SQLite file at ``path``."""
    conn = await aiosqlite.connect(path, timeout=5.0)
    try:
        for pragma in ("journal_mode=WAL", "busy_timeout=5000", "synchronous=NORMAL"):
            await conn.execute(f"PRAGMA {pragma}")
        yield SqliteRecallFloor(conn)
    finally:
        await conn.close()
