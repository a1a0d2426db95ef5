"""Seeding many users' facts fast, straight into the library's tables (schema.py's columns).

PostgreSQL gets them by COPY (asyncpg ``copy_records_to_table``), then the table is ANALYZEd
(as autovacuum would after a bulk load). SQLite gets them by one ``executemany`` of the Core
insert compiled from ``schema.facts``. Both fill ``search_text`` with the library's own
function.

The data: user ``u00042`` has ``facts_per_user`` current facts, each an attribute from a
small list and two words from a synthetic vocabulary of ``VOCABULARY`` words, so a word
is in about 0.1% of the table and an attribute in 5%; every user has a profile.
"""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import sqlite

from benchmarks.servers import libpq_url
from memory_tiers.long_term.recall import search_text
from memory_tiers.long_term.schema import fact_observations, facts, profiles

ATTRIBUTES = (
    "likes", "dislikes", "lives_in", "works_at", "speaks", "owns", "visited", "plays", "reads",
    "drinks", "eats", "studies", "prefers", "collects", "follows", "wants", "knows", "uses",
    "watches", "grows",
)  # fmt: skip
VOCABULARY = 2000
_SYLLABLES = ("ka", "lo", "mi", "ten", "ru", "sa", "vor", "pel", "di", "nam", "ko", "zu", "bre", "ta")
FACT_COLUMNS = (
    "id", "user_id", "subject", "attribute", "value", "value_norm", "cardinality", "confidence",
    "thread_id", "checkpoint_id", "message_id", "created_at", "updated_at", "valid_from", "pinned",
    "flagged", "search_text",
)  # fmt: skip
PROFILE_COLUMNS = ("user_id", "document", "version", "created_at", "updated_at", "schema_version")
OBSERVATION_COLUMNS = ("fact_id", "observation_key", "user_id", "thread_id", "confidence", "observed_at")
BATCH = 20_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def words(count: int = VOCABULARY, seed: int = 7) -> list[str]:
    """``count`` distinct pronounceable words of 3 syllables (no English word among them)."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < count:
        found.setdefault("".join(rng.choice(_SYLLABLES) for _ in range(3)), None)
    return list(found)


def user_id(index: int) -> str:
    """The id of benchmark user ``index``."""
    return f"u{index:05d}"


@dataclass(frozen=True)
class Corpus:
    """Which users, and how many facts each, a stage of seeding writes."""

    first_user: int
    users: int
    facts_per_user: int

    def fact_rows(self) -> Iterator[tuple[Any, ...]]:
        """The facts, one tuple of `FACT_COLUMNS` each (datetimes aware, in UTC)."""
        vocabulary = words()
        for u in range(self.first_user, self.first_user + self.users):
            rng = random.Random(u)
            owner = user_id(u)
            seen: set[tuple[str, str]] = set()  # one current fact per (attribute, value)
            for n in range(self.facts_per_user):
                attribute = ATTRIBUTES[(u + n) % len(ATTRIBUTES)]
                value = f"{rng.choice(vocabulary)} {rng.choice(vocabulary)}"
                while (attribute, value) in seen:
                    value = f"{rng.choice(vocabulary)} {rng.choice(vocabulary)}"
                seen.add((attribute, value))
                at = EPOCH - timedelta(minutes=rng.randrange(90 * 24 * 60))
                fact_id = str(uuid.UUID(int=u * 1_000_000 + n + 1))
                yield (
                    fact_id, owner, "user", attribute, value, value, "many", rng.uniform(0.5, 1.0),
                    f"{owner}-t", None, None, at, at, at, False, False, search_text("user", attribute, value),
                )  # fmt: skip

    def profile_rows(self) -> Iterator[tuple[Any, ...]]:
        """One profile per user, as `PROFILE_COLUMNS` (the document as JSON text)."""
        for u in range(self.first_user, self.first_user + self.users):
            document = json.dumps({"name": f"User {u}", "location": "Paris"})
            yield (user_id(u), document, 1, EPOCH, EPOCH, 1)


def observation_rows(fact_rows: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    """One observation per fact (its provenance), as `OBSERVATION_COLUMNS`."""
    for row in fact_rows:
        fact_id, owner, thread, confidence, at = row[0], row[1], row[8], row[7], row[11]
        yield (fact_id, f"seed:{fact_id}", owner, thread, confidence, at)


def _batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def seed_postgres(url: str, corpus: Corpus, *, observations: bool = False) -> None:
    """COPY the corpus into ``mt_facts`` and ``mt_profiles`` (and one observation per fact
    into ``mt_fact_observations``), then ANALYZE."""
    conn = await asyncpg.connect(libpq_url(url))
    try:
        for batch in _batches(corpus.fact_rows()):
            await conn.copy_records_to_table(facts.name, records=batch, columns=FACT_COLUMNS)
            if observations:
                await conn.copy_records_to_table(
                    fact_observations.name,
                    records=list(observation_rows(iter(batch))),
                    columns=OBSERVATION_COLUMNS,
                )
        await conn.copy_records_to_table(
            profiles.name, records=list(corpus.profile_rows()), columns=PROFILE_COLUMNS
        )
        await conn.execute(f"ANALYZE {facts.name}; ANALYZE {profiles.name}")
    finally:
        await conn.close()


def _sqlite_value(value: Any) -> Any:
    # The text layout SQLAlchemy's SQLite DateTime writes and the recall query reads.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


def _sqlite_insert(table: Any, columns: tuple[str, ...]) -> str:
    return str(table.insert().compile(dialect=sqlite.dialect(), column_keys=list(columns)))


def seed_sqlite(path: Path, corpus: Corpus) -> None:
    """Insert the corpus with the Core inserts of ``schema.facts`` / ``schema.profiles``, in one
    transaction per batch."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        # Seeding only: a crash would lose benchmark data, never a user's.
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        fact_sql, profile_sql = _sqlite_insert(facts, FACT_COLUMNS), _sqlite_insert(profiles, PROFILE_COLUMNS)
        for batch in _batches(corpus.fact_rows()):
            with conn:
                conn.executemany(fact_sql, [tuple(map(_sqlite_value, row)) for row in batch])
        with conn:
            conn.executemany(profile_sql, [tuple(map(_sqlite_value, r)) for r in corpus.profile_rows()])
    finally:
        conn.close()
