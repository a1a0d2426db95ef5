"""Fact consolidation: a turn's candidate facts merged into the user's facts, inside the caller's
transaction (its `Statements`: a SQLAlchemy connection, or the driver's own on the save's hot
path). On PostgreSQL the steps run on the server, in the function ``mt_consolidate`` (migration
0009): one statement, so one round trip, which commits by itself outside a transaction. SQLite
runs them here, one statement each.

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
    Boolean,
    DateTime,
    Float,
    String,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from memory_tiers.extractors.base import FactCandidate
from memory_tiers.long_term.recall import search_text
from memory_tiers.long_term.schema import fact_observations, facts
from memory_tiers.long_term.statements import Statements


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


# SQLite's upserts are built once and run with a list of rows: SQLAlchemy sends them as one
# multi-row statement ("insertmanyvalues") and caches its compiled form, which a ``.values(rows)``
# statement, different for every turn, would not be.
@functools.cache
def _fact_upsert() -> Any:
    insert = sqlite.insert(facts)
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
def _observation_insert() -> Any:
    return (
        sqlite.insert(fact_observations)
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
    row. On PostgreSQL it is a CTE of the consolidation's one statement, so it costs no round
    trip of its own; elsewhere it is a statement of its own, first."""

    statement: Any
    params: Mapping[str, Any]
    refusal: Exception


async def touch_once(statements: Statements, touch: Touch | None) -> None:
    """Make ``touch`` by itself (raising its refusal if refused); nothing when None."""
    if touch is not None and not await statements.rows(touch.statement, touch.params):
        raise touch.refusal


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
    is made first, and raises its refusal if it is refused (nothing is written then). On
    PostgreSQL it all is one statement: the touch, then the function ``mt_consolidate``
    (migration 0009), which takes the user's write lock and runs the steps below on the server.
    """
    items = _latest_per_key(accepted)
    if not items:
        await touch_once(statements, touch)
        return []
    rows = _candidate_rows(provenance, items, embeddings or {})
    if dialect == "postgresql":
        return await _consolidate_on_server(statements, user_id, provenance, rows, now, touch)
    await touch_once(statements, touch)
    if provenance.replayable:
        # A replayed turn (a crash after the commit, then a resume) observes nothing again, and
        # must not bring back a value a later turn has replaced. SQLite has one writer at a
        # time, so no lock is taken.
        keys = sorted({row["observation_key"] for row in rows})
        seen = {
            (row["observation_key"], *_fact_key(row))
            for row in await statements.rows(_replay_check(), {"seen_user": user_id, "seen_keys": keys})
        }
        rows = [row for row in rows if (row["observation_key"], *_fact_key(row)) not in seen]
        if not rows:
            return []
    new_ids = {_fact_key(row): row["id"] for row in rows}
    stamped = {"user_id": user_id, "created_at": now, "updated_at": now, "valid_from": now}
    landed = await statements.many(_fact_upsert(), [{**_without_key(row), **stamped} for row in rows])
    fact_of = {_fact_key(row): row["id"] for row in landed}  # RETURNING's order is not the rows'
    observed = await statements.many(
        _observation_insert(),
        [_observation(row, user_id, now, fact_of[_fact_key(row)]) for row in rows],
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


def _candidate_rows(
    provenance: Provenance, items: Sequence[Accepted], embeddings: Mapping[str, list[float]]
) -> list[dict[str, Any]]:
    """Each candidate as the fact it would be stored as (a new id), with its observation's key."""
    return [
        {
            "id": str(uuid.uuid4()),
            "subject": c.subject,
            "attribute": c.attribute,
            "value": c.value,
            "value_norm": c.value_norm,
            "cardinality": c.cardinality,
            "confidence": c.confidence,
            "thread_id": provenance.thread_id,
            "checkpoint_id": provenance.checkpoint_id,
            "message_id": c.message_id,
            "flagged": item.flagged,
            "embedding": embeddings.get(c.value_norm),
            "search_text": search_text(c.subject, c.attribute, c.value),
            "observation_key": provenance.observation_key(c.message_id),
        }
        for item in items
        for c in [item.candidate]
    ]


async def _consolidate_on_server(
    statements: Statements,
    user_id: str,
    provenance: Provenance,
    rows: list[dict[str, Any]],
    now: datetime,
    touch: Touch | None,
) -> list[str]:
    params = {"c_user": user_id, "c_now": now, "c_replayable": provenance.replayable, "c_facts": rows}
    if touch is None:
        [outcome] = await statements.rows(_server_consolidation(None), params)
    else:
        [outcome] = await statements.rows(_server_consolidation(touch.statement), {**params, **touch.params})
        if not outcome["touched"]:
            raise touch.refusal
    return list(outcome["fact_ids"])


@functools.cache
def _server_consolidation(touch: Any | None) -> Any:
    """``mt_consolidate`` of the candidates, after ``touch`` (a CTE) when there is one: the
    function runs only when the touch returned a row (``touched`` counts them), so a refused
    touch writes nothing."""
    call = func.mt_consolidate(
        bindparam("c_user", type_=String),
        bindparam("c_now", type_=DateTime(timezone=True)),
        bindparam("c_replayable", type_=Boolean),
        bindparam("c_facts", type_=postgresql.JSONB),
        type_=postgresql.ARRAY(String),
    )
    if touch is None:
        return select(call.label("fact_ids"))
    touched = touch.cte("touched")
    count = select(func.count().label("rows")).select_from(touched).subquery("touch_count")
    return select(count.c.rows.label("touched"), case((count.c.rows > 0, call)).label("fact_ids"))


@functools.cache
def _replay_check() -> Any:
    """SQLite: this turn's observations stored already, by the (user_id, observation_key) index;
    the keys as one JSON array."""
    listed = func.json_each(bindparam("seen_keys", type_=JSON)).table_valued("value")
    return (
        select(fact_observations.c.observation_key, facts.c.subject, facts.c.attribute, facts.c.value_norm)
        .join(facts, facts.c.id == fact_observations.c.fact_id)
        .where(
            fact_observations.c.user_id == bindparam("seen_user", type_=String),
            fact_observations.c.observation_key.in_(select(listed.c.value)),
        )
    )


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


def _without_key(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != "observation_key"}


def _observation(fact: Mapping[str, Any], user_id: str, now: datetime, fact_id: str) -> dict[str, Any]:
    """The observation row of a candidate's row (its provenance, confidence and time)."""
    return {
        "fact_id": fact_id,
        "observation_key": fact["observation_key"],
        "user_id": user_id,
        "thread_id": fact["thread_id"],
        "checkpoint_id": fact["checkpoint_id"],
        "message_id": fact["message_id"],
        "confidence": fact["confidence"],
        "observed_at": now,
    }
