"""Fact consolidation: a turn's candidate facts merged into the user's facts, inside the caller's
transaction.

- Exact duplicates merge through the partial unique index on current facts (INSERT ... ON
  CONFLICT), never check-then-insert, so concurrent saves of one fact leave one row.
- Every observation of a fact is a row keyed by where it was seen (thread, checkpoint, message).
  Replaying a turn inserts no observation, so it changes nothing; a new observation corroborates
  the fact and raises its confidence as 1 - (1 - old) * (1 - new), which never lowers it.
- A new value of a single-valued attribute supersedes the current one, which keeps its
  valid-from/valid-to window as history.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_tiers.extractors.base import FactCandidate
from memory_tiers.long_term.recall import search_text
from memory_tiers.long_term.schema import fact_observations, facts

# pg_advisory_xact_lock(class, key): the class keeps our locks apart from the application's.
_LOCK_CLASS = 0x6D74  # "mt"


@dataclass(frozen=True)
class Provenance:
    """Where a turn's facts were observed.

    ``key`` identifies the observation; by default the thread and checkpoint of the turn, so a
    replayed turn is recognised. API writes pass their own (an idempotency key); without one
    they are not ``replayable`` and the replay check is skipped.
    """

    thread_id: str | None
    checkpoint_id: str | None = None
    key: str | None = None
    replayable: bool = True

    def observation_key(self, message_id: str | None) -> str:
        """The key of one candidate's observation in this turn."""
        base = self.key or f"turn:{self.thread_id}:{self.checkpoint_id or '-'}"
        return f"{base}:{message_id or '-'}"


@dataclass(frozen=True)
class Accepted:
    """A candidate cleared for storage; ``flagged`` ones are stored but never recalled."""

    candidate: FactCandidate
    flagged: bool = False


def insert_for(dialect: str, target: Any) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(target)


# The upserts are built once per dialect and run with a list of rows: SQLAlchemy sends them as
# one multi-row statement ("insertmanyvalues") and caches its compiled form, which a
# ``.values(rows)`` statement, different for every turn, would not be.
@functools.cache
def _fact_upsert(dialect: str) -> Any:
    insert = insert_for(dialect, facts)
    return insert.on_conflict_do_update(
        index_elements=[facts.c.user_id, facts.c.subject, facts.c.attribute, facts.c.value_norm],
        index_where=facts.c.superseded_by.is_(None),
        # A fact stored before embeddings were configured gets its vector when seen again.
        set_={
            "updated_at": insert.excluded.updated_at,
            "embedding": func.coalesce(insert.excluded.embedding, facts.c.embedding),
        },
    ).returning(
        facts.c.id,
        facts.c.subject,
        facts.c.attribute,
        facts.c.value_norm,
        facts.c.cardinality,
        facts.c.flagged,
    )


@functools.cache
def _observation_insert(dialect: str) -> Any:
    return (
        insert_for(dialect, fact_observations)
        .on_conflict_do_nothing()
        .returning(fact_observations.c.fact_id, fact_observations.c.confidence)
    )


def _latest_per_key(accepted: Sequence[Accepted]) -> list[Accepted]:
    # Last word wins inside one turn: "I live in Rome. No, in Milan." keeps Milan.
    unique: dict[tuple[str, str, str], Accepted] = {}
    for item in accepted:
        c = item.candidate
        key = (c.subject, c.attribute, "" if c.cardinality == "one" else c.value_norm)
        unique.pop(key, None)
        unique[key] = item
    # Two extractors may disagree on a value's cardinality: one row per value, the later wins.
    values: dict[tuple[str, str, str], Accepted] = {}
    for item in unique.values():
        c = item.candidate
        values.pop((c.subject, c.attribute, c.value_norm), None)
        values[(c.subject, c.attribute, c.value_norm)] = item
    return list(values.values())


async def _lock_and_find_replayed(
    conn: AsyncConnection, dialect: str, user_id: str, provenance: Provenance, items: Sequence[Accepted]
) -> set[tuple[str, str, str, str]]:
    """Take the user's write lock (PostgreSQL) and find the (key, subject, attribute, value)
    observations of this turn that are stored already (the turn is being replayed: a crash
    after the commit, then a resume), in one statement.

    The lock is the left side of a LEFT JOIN, so it is taken even when nothing matches. The
    observations are read in the statement's snapshot, which may predate a writer this lock
    waited for; only that writer's own observations could be missed, and those are a
    concurrent run of this very turn, whose rows the upserts below then merge into.
    """
    if not provenance.replayable:
        if dialect == "postgresql":
            await conn.execute(select(_user_lock()), {"lock_user": user_id})
        return set()
    keys = [provenance.observation_key(item.candidate.message_id) for item in items]
    params = {"lock_user": user_id, "seen_user": user_id, "seen_keys": sorted(set(keys))}
    rows = (await conn.execute(_replay_check(dialect), params)).all()
    return {tuple(row) for row in rows if row[0] is not None}  # type: ignore[misc]


def _user_lock() -> Any:
    # Serialize one user's writers: two turns giving different values of a single-valued
    # attribute would each miss the other's uncommitted row and both stay current, and two
    # saves touching the same facts in different orders would deadlock.
    locked = func.pg_advisory_xact_lock(_LOCK_CLASS, func.hashtext(bindparam("lock_user", type_=String)))
    return select(locked.label("locked")).subquery("user_lock")


@functools.cache
def _replay_check(dialect: str) -> Any:
    """The replay check of `_lock_and_find_replayed`, with the user's lock on PostgreSQL."""
    seen: Any = (
        select(fact_observations.c.observation_key, facts.c.subject, facts.c.attribute, facts.c.value_norm)
        .join(facts, facts.c.id == fact_observations.c.fact_id)
        .where(
            fact_observations.c.user_id == bindparam("seen_user", type_=String),
            fact_observations.c.observation_key.in_(bindparam("seen_keys", expanding=True)),
        )
    )
    if dialect != "postgresql":
        return seen
    seen = seen.subquery("seen")
    return select(*seen.c).select_from(_user_lock().outerjoin(seen, true()))


async def consolidate(
    conn: AsyncConnection,
    dialect: str,
    user_id: str,
    provenance: Provenance,
    accepted: Sequence[Accepted],
    now: datetime,
    *,
    embeddings: Mapping[str, list[float]] | None = None,
) -> list[str]:
    """Merge ``accepted`` into the user's facts; returns the ids of the facts they landed in.

    ``embeddings`` maps a candidate's value_norm to its vector, stored with new facts.
    """
    items = _latest_per_key(accepted)
    if not items:
        return []
    seen = await _lock_and_find_replayed(conn, dialect, user_id, provenance, items)
    if provenance.replayable:
        # A replayed turn must not bring back a value a later turn has replaced.
        items = [
            item
            for item in items
            for c in [item.candidate]
            if (provenance.observation_key(c.message_id), c.subject, c.attribute, c.value_norm) not in seen
        ]
        if not items:
            return []
    new_ids = {
        (i.candidate.subject, i.candidate.attribute, i.candidate.value_norm): str(uuid.uuid4()) for i in items
    }
    rows = [
        {
            "id": new_ids[(c.subject, c.attribute, c.value_norm)],
            "user_id": user_id,
            "subject": c.subject,
            "attribute": c.attribute,
            "value": c.value,
            "value_norm": c.value_norm,
            "cardinality": c.cardinality,
            "confidence": c.confidence,
            "thread_id": provenance.thread_id,
            "checkpoint_id": provenance.checkpoint_id,
            "message_id": c.message_id,
            "created_at": now,
            "updated_at": now,
            "valid_from": now,
            "flagged": item.flagged,
            "embedding": (embeddings or {}).get(c.value_norm),
            "search_text": search_text(c.subject, c.attribute, c.value),
        }
        for item in items
        for c in [item.candidate]
    ]
    landed = (await conn.execute(_fact_upsert(dialect), rows)).all()
    created = {
        row.id for row in landed if new_ids.get((row.subject, row.attribute, row.value_norm)) == row.id
    }
    fact_of = {(row.subject, row.attribute, row.value_norm): row.id for row in landed}

    await _observe(conn, dialect, user_id, provenance, items, fact_of, created, now)

    # A flagged value is kept for review but never replaces the value it contradicts.
    singles = [row for row in landed if row.cardinality == "one" and row.id in created and not row.flagged]
    if singles:
        # A new value of a single-valued attribute closes the old one, which stays as history.
        await conn.execute(
            update(facts)
            .where(
                facts.c.user_id == user_id,
                facts.c.subject == bindparam("b_subject"),
                facts.c.attribute == bindparam("b_attribute"),
                facts.c.superseded_by.is_(None),
                facts.c.id != bindparam("b_keep_id"),
            )
            .values(superseded_by=bindparam("b_keep_id"), valid_to=now),
            [{"b_subject": r.subject, "b_attribute": r.attribute, "b_keep_id": r.id} for r in singles],
        )
    return [row.id for row in landed]


async def _observe(
    conn: AsyncConnection,
    dialect: str,
    user_id: str,
    provenance: Provenance,
    items: Sequence[Accepted],
    fact_of: Mapping[tuple[str, str, str], str],
    created: set[str],
    now: datetime,
) -> None:
    """Record each observation once; a new observation of a known fact corroborates it."""
    rows = [
        {
            "fact_id": fact_of[(c.subject, c.attribute, c.value_norm)],
            "observation_key": provenance.observation_key(c.message_id),
            "user_id": user_id,
            "thread_id": provenance.thread_id,
            "checkpoint_id": provenance.checkpoint_id,
            "message_id": c.message_id,
            "confidence": c.confidence,
            "observed_at": now,
        }
        for item in items
        for c in [item.candidate]
    ]
    observed = (await conn.execute(_observation_insert(dialect), rows)).all()
    corroborated = [row for row in observed if row.fact_id not in created]
    if corroborated:
        await conn.execute(
            update(facts)
            .where(facts.c.id == bindparam("b_fact_id"))
            .values(
                confidence=1.0 - (1.0 - facts.c.confidence) * (1.0 - bindparam("b_confidence")),
                # The last observation dates the fact for recency.
                updated_at=now,
            ),
            [{"b_fact_id": row.fact_id, "b_confidence": row.confidence} for row in corroborated],
        )
