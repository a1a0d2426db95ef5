"""Fact consolidation: a turn's candidate facts merged into the user's facts, inside the caller's
transaction (its `Statements`: a SQLAlchemy connection, or asyncpg's on the PostgreSQL save).

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

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    bindparam,
    column,
    func,
    literal_column,
    select,
    true,
    update,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite

from memory_tiers.extractors.base import FactCandidate
from memory_tiers.long_term.recall import search_text
from memory_tiers.long_term.schema import fact_observations, facts
from memory_tiers.long_term.statements import Statements

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


@dataclass(frozen=True)
class Touch:
    """A write that goes with a consolidation (the thread registry's upsert of a turn's thread):
    an upsert with RETURNING, refused (``refusal`` raised, nothing written) when it returns no
    row. On PostgreSQL it is a CTE of the consolidation's first statement, so it costs no round
    trip of its own; elsewhere it is a statement of its own, first."""

    statement: Any
    params: Mapping[str, Any]
    refusal: Exception


async def touch_once(statements: Statements, touch: Touch | None) -> None:
    """Make ``touch`` by itself (raising its refusal if refused); nothing when None."""
    if touch is not None and not await statements.rows(touch.statement, touch.params):
        raise touch.refusal


async def _lock_and_find_replayed(
    statements: Statements,
    dialect: str,
    user_id: str,
    provenance: Provenance,
    items: Sequence[Accepted],
    touch: Touch | None,
) -> set[tuple[str, str, str, str]]:
    """Make the ``touch``, take the user's write lock (PostgreSQL) and find the (key, subject,
    attribute, value) observations of this turn that are stored already (the turn is being
    replayed: a crash after the commit, then a resume), in one statement on PostgreSQL.

    The lock is the left side of a LEFT JOIN, so it is taken even when nothing matches. The
    observations are read in the statement's snapshot, which may predate a writer this lock
    waited for; only that writer's own observations could be missed, and those are a
    concurrent run of this very turn, whose rows the upserts below then merge into.
    """
    params: dict[str, Any] = {"lock_user": user_id}
    slots = 0
    if provenance.replayable:
        keys = sorted({provenance.observation_key(item.candidate.message_id) for item in items})
        slots, seen = _seen_keys(dialect, keys)
        params |= {"seen_user": user_id, **seen}
    elif dialect != "postgresql":
        await touch_once(statements, touch)
        return set()  # no lock to take, nothing to check
    if dialect == "postgresql" and touch is not None:
        rows = await statements.rows(
            _touching(provenance.replayable, touch.statement, slots), {**params, **touch.params}
        )
        if not rows[0]["touched"]:
            raise touch.refusal
    else:
        await touch_once(statements, touch)
        rows = await statements.rows(
            _replay_check(dialect, slots) if provenance.replayable else _lock_alone(), params
        )
    return {
        (row["observation_key"], row["subject"], row["attribute"], row["value_norm"])
        for row in rows
        if provenance.replayable and row["observation_key"] is not None
    }


def _seen_keys(dialect: str, keys: list[str]) -> tuple[int, dict[str, Any]]:
    """The replay check's shape (`_replay_check`'s ``slots``) and parameters for ``keys``: on
    SQLite one JSON array; on PostgreSQL one parameter a key, in the statement for the next
    power of two of them, the others NULL (which matches nothing), so that a few statements
    serve every turn."""
    if dialect != "postgresql":
        return 0, {"seen_keys": keys}
    slots = 1 << (len(keys) - 1).bit_length()
    padded = [*keys, *[None] * (slots - len(keys))]
    return slots, {f"seen_key_{i}": key for i, key in enumerate(padded)}


@functools.cache
def _touching(replayable: bool, touch: Any, slots: int) -> Any:
    """PostgreSQL: the lock (and replay check) with ``touch`` as a CTE; ``touched`` counts the
    rows it returned (a data-modifying CTE runs exactly once, whatever refers to it)."""
    touched = touch.cte("touched")
    first = (_replay_check("postgresql", slots) if replayable else _lock_alone()).subquery("first")
    count = select(func.count()).select_from(touched).scalar_subquery()
    return select(count.label("touched"), *first.c).select_from(first)


def _user_lock() -> Any:
    # Serialize one user's writers: two turns giving different values of a single-valued
    # attribute would each miss the other's uncommitted row and both stay current, and two
    # saves touching the same facts in different orders would deadlock.
    locked = func.pg_advisory_xact_lock(_LOCK_CLASS, func.hashtext(bindparam("lock_user", type_=String)))
    return select(locked.label("locked")).subquery("user_lock")


@functools.cache
def _lock_alone() -> Any:
    return select(_user_lock())


@functools.cache
def _replay_check(dialect: str, slots: int) -> Any:
    """The replay check of `_lock_and_find_replayed`, with the user's lock on PostgreSQL, for
    the parameters `_seen_keys` gives. Its text depends only on ``slots``, so it is prepared
    once a shape and can be sent straight to the driver."""
    observations = fact_observations
    if dialect != "postgresql":  # the keys as one JSON array
        listed = func.json_each(bindparam("seen_keys", type_=JSON)).table_valued("value")
        return (
            select(observations.c.observation_key, facts.c.subject, facts.c.attribute, facts.c.value_norm)
            .join(facts, facts.c.id == observations.c.fact_id)
            .where(
                observations.c.user_id == bindparam("seen_user", type_=String),
                observations.c.observation_key.in_(select(listed.c.value)),
            )
        )
    # One probe of the (user_id, observation_key) index a key. As `observation_key = ANY(:keys)`
    # beside the user, the planner of a table it had no statistics for yet read all of the
    # user's observations and filtered them, a cost that grew with the user's history. The keys
    # are a VALUES list (the planner knows how many rows it has, so a generic plan costs what a
    # custom one does and is kept); OFFSET 0 keeps the lateral subquery from being flattened
    # into a join that could be planned as that filter again.
    listed = values(column("key", String), name="listed").data(
        [(bindparam(f"seen_key_{i}", type_=String),) for i in range(slots)]
    )
    probe = (
        select(observations.c.fact_id, observations.c.observation_key)
        .where(
            observations.c.user_id == bindparam("seen_user", type_=String),
            observations.c.observation_key == listed.c.key,
        )
        .offset(literal_column("0", Integer))
        .lateral("probe")
    )
    seen = (
        select(probe.c.observation_key, facts.c.subject, facts.c.attribute, facts.c.value_norm)
        .select_from(listed)
        .join(probe, true())
        .join(facts, facts.c.id == probe.c.fact_id)
        .subquery("seen")
    )
    return select(*seen.c).select_from(_user_lock().outerjoin(seen, true()))


async def consolidate(
    statements: Statements,
    dialect: str,
    user_id: str,
    provenance: Provenance,
    accepted: Sequence[Accepted],
    now: datetime,
    *,
    embeddings: Mapping[str, list[float]] | None = None,
    touch: Touch | None = None,
) -> list[str]:
    """Merge ``accepted`` into the user's facts; returns the ids of the facts they landed in.

    ``embeddings`` maps a candidate's value_norm to its vector, stored with new facts; ``touch``
    is made first (with the lock, on PostgreSQL), and raises its refusal if it is refused.
    """
    items = _latest_per_key(accepted)
    if not items:
        await touch_once(statements, touch)
        return []
    seen = await _lock_and_find_replayed(statements, dialect, user_id, provenance, items, touch)
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
    keys = [provenance.observation_key(item.candidate.message_id) for item in items]
    if statements.pipelined:
        # One statement a fact, all sent at once: upsert and observation in one round trip.
        landed = await statements.many(
            _upsert_and_observe(),
            [{**_prefixed(row), "f_observation_key": key} for row, key in zip(rows, keys, strict=True)],
        )
        observed = [
            {"fact_id": row["id"], "confidence": row["observed"]}
            for row in landed
            if row["observed"] is not None
        ]
    else:
        landed = await statements.many(_fact_upsert(dialect), rows)
        fact_of = {_fact_key(row): row["id"] for row in landed}  # RETURNING's order is not the rows'
        observed = await statements.many(
            _observation_insert(dialect),
            [_observation(row, key, fact_of[_fact_key(row)]) for row, key in zip(rows, keys, strict=True)],
        )
    created = {row["id"] for row in landed if new_ids.get(_fact_key(row)) == row["id"]}
    # A new observation of a known fact corroborates it (a stored one, a replay, does not).
    corroborated = [row for row in observed if row["fact_id"] not in created]
    if corroborated:
        await statements.many(
            _corroborate(),
            [
                {"b_fact_id": r["fact_id"], "b_confidence": r["confidence"], "b_now": now}
                for r in corroborated
            ],
        )

    # A flagged value is kept for review but never replaces the value it contradicts.
    singles = [
        row for row in landed if row["cardinality"] == "one" and row["id"] in created and not row["flagged"]
    ]
    if singles:
        # A new value of a single-valued attribute closes the old one, which stays as history.
        await statements.many(
            _supersede(),
            [
                {
                    "b_user": user_id,
                    "b_subject": r["subject"],
                    "b_attribute": r["attribute"],
                    "b_keep_id": r["id"],
                    "b_now": now,
                }
                for r in singles
            ],
        )
    return [row["id"] for row in landed]


@functools.cache
def _supersede() -> Any:
    """Close the current values of (user, subject, attribute) other than ``b_keep_id``."""
    return (
        update(facts)
        .where(
            facts.c.user_id == bindparam("b_user", type_=String),
            facts.c.subject == bindparam("b_subject", type_=String),
            facts.c.attribute == bindparam("b_attribute", type_=String),
            facts.c.superseded_by.is_(None),
            facts.c.id != bindparam("b_keep_id", type_=String),
        )
        .values(
            superseded_by=bindparam("b_keep_id"), valid_to=bindparam("b_now", type_=DateTime(timezone=True))
        )
    )


@functools.cache
def _corroborate() -> Any:
    """Raise a fact's confidence by a new observation's, and date it by that observation."""
    return (
        update(facts)
        .where(facts.c.id == bindparam("b_fact_id", type_=String))
        .values(
            confidence=1.0 - (1.0 - facts.c.confidence) * (1.0 - bindparam("b_confidence", type_=Float)),
            # The last observation dates the fact for recency.
            updated_at=bindparam("b_now", type_=DateTime(timezone=True)),
        )
    )


def _fact_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return row["subject"], row["attribute"], row["value_norm"]


def _observation(fact: Mapping[str, Any], key: str, fact_id: str) -> dict[str, Any]:
    """The observation row of a fact row (its provenance, confidence and time), keyed ``key``."""
    return {
        "fact_id": fact_id,
        "observation_key": key,
        "user_id": fact["user_id"],
        "thread_id": fact["thread_id"],
        "checkpoint_id": fact["checkpoint_id"],
        "message_id": fact["message_id"],
        "confidence": fact["confidence"],
        "observed_at": fact["updated_at"],
    }


# The columns of a fact row as `consolidate` builds it (the others keep their defaults).
_FACT_ROW = (
    "id",
    "user_id",
    "subject",
    "attribute",
    "value",
    "value_norm",
    "cardinality",
    "confidence",
    "thread_id",
    "checkpoint_id",
    "message_id",
    "created_at",
    "updated_at",
    "valid_from",
    "flagged",
    "embedding",
    "search_text",
)


def _prefixed(row: Mapping[str, Any]) -> dict[str, Any]:
    return {f"f_{name}": value for name, value in row.items()}


@functools.cache
def _upsert_and_observe() -> Any:
    """PostgreSQL, one fact per execution (parameters ``f_<column>`` and ``f_observation_key``):
    the fact upsert, then its observation of the fact it landed in, in one statement. Returns
    the upsert's columns and ``observed``, the new observation's confidence (NULL when that
    observation was stored already)."""
    params = {name: bindparam(f"f_{name}", type_=facts.c[name].type) for name in _FACT_ROW}
    landed = _fact_upsert("postgresql").values(params).cte("landed")
    observation = _observation(params, bindparam("f_observation_key", type_=String), landed.c.id)
    observed = (
        insert_for("postgresql", fact_observations)
        .from_select(list(observation), select(*observation.values()))
        .on_conflict_do_nothing()
        .returning(fact_observations.c.confidence)
        .cte("observed")
    )
    return select(*landed.c, observed.c.confidence.label("observed")).select_from(
        landed.outerjoin(observed, true())
    )
