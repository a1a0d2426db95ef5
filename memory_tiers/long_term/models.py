"""Records the long-term tier returns: plain pydantic models, safe to put in graph state as dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, field_validator


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything memory_tiers writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Fact(_Record):
    """A fact about a user, with where it came from and when it held."""

    id: str
    subject: str
    attribute: str
    value: str
    cardinality: Literal["one", "many"]
    confidence: float
    thread_id: str | None = None
    checkpoint_id: str | None = None
    message_id: str | None = None
    created_at: datetime
    updated_at: datetime
    valid_from: datetime
    valid_to: datetime | None = None
    superseded_by: str | None = None
    pinned: bool = False
    flagged: bool = False
    score: float | None = None

    _tz = field_validator("created_at", "updated_at", "valid_from", "valid_to")(_aware)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Fact:
        """A fact from a result row (its other columns are ignored). Copied into a dict first,
        which validates in half the time of SQLAlchemy's row mapping; validation itself is as
        fast as ``model_construct`` and also makes SQLite's naive datetimes UTC."""
        return cls.model_validate(dict(row))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> list[Fact]:
        """`from_row` of each row, validated in one call (the per-fact cost of a validation
        call from Python is a third of a fact's whole validation)."""
        return _FACTS.validate_python([dict(row) for row in rows])

    @staticmethod
    def dump_json(facts: Sequence[Fact]) -> list[dict[str, Any]]:
        """``[fact.model_dump(mode="json") for fact in facts]`` (what graph state holds), in
        one serializer call."""
        return _FACTS.dump_python(facts, mode="json")  # type: ignore[no-any-return]


_FACTS: TypeAdapter[list[Fact]] = TypeAdapter(list[Fact])


class Observation(_Record):
    """One time a fact was seen: the turn (or API call) it came from and how sure it was."""

    fact_id: str
    observation_key: str
    thread_id: str | None = None
    checkpoint_id: str | None = None
    message_id: str | None = None
    confidence: float
    observed_at: datetime

    _tz = field_validator("observed_at")(_aware)


class Profile(_Record):
    """A user's profile: a JSON document, the number of times it was patched (``version``) and
    the shape its document has (``schema_version``, ``long_term.profile.version`` when written)."""

    user_id: str
    document: dict[str, Any]
    version: int
    schema_version: int = 1


class ThreadRecord(_Record):
    """A row of the thread registry."""

    thread_id: str
    user_id: str
    session_id: str | None
    status: str
    metadata: dict[str, Any]
    created_at: datetime
    last_active_at: datetime
    namespace: str = "default"
    archived_at: datetime | None = None
    pruned_at: datetime | None = None

    _tz = field_validator("created_at", "last_active_at", "archived_at", "pruned_at")(_aware)


class LongTermContext(_Record):
    """What the load node reads in its single query."""

    profile: Profile
    facts: list[Fact]
    thread_owner: str | None
