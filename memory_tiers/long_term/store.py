"""The long-term tier: profiles, facts, the thread registry and archives on SQL.

The hot path (the load and save nodes) uses Core statements on pooled connections: the load is
one SELECT in autocommit (no BEGIN/ROLLBACK round trips), the save is one transaction whatever
the thread's history length. Every method is scoped to one user.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_tiers.config import LongTermConfig, mask_url
from memory_tiers.errors import ConfigError, InvalidIdentifierError, NotFoundError, OwnershipError
from memory_tiers.extractors.base import FactCandidate
from memory_tiers.long_term import migrate
from memory_tiers.long_term.engine import create_engine, long_term_url
from memory_tiers.long_term.models import Fact, LongTermContext, Profile, ThreadRecord
from memory_tiers.long_term.schema import archives, facts, profiles, threads
from memory_tiers.translate import translate_errors

TIER = "long_term"
_PROFILE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FACT_COLUMNS = [c for c in facts.c if c.name != "user_id"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Provenance:
    """Where a turn's facts were observed."""

    thread_id: str
    checkpoint_id: str | None = None


class LongTermStore:
    """Owner-scoped access to the long-term tables.

    Args:
        engine: an `AsyncEngine` on SQLite (aiosqlite) or PostgreSQL (asyncpg).
        recall_k: how many facts `load_context` returns.
    """

    def __init__(self, engine: AsyncEngine, *, recall_k: int = 8) -> None:
        self.engine = engine
        self.recall_k = recall_k
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"long_term.url: dialect {self.dialect!r} is not supported; use sqlite or postgresql"
            )
        self.masked_url = mask_url(engine.url.render_as_string(hide_password=False))
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    @asynccontextmanager
    async def open(cls, config: LongTermConfig, data_dir: Path) -> AsyncIterator[LongTermStore]:
        """Create the engine, check the database answers, and dispose of it on exit."""
        engine = create_engine(config, data_dir)
        store = cls(engine, recall_k=config.recall.k)
        try:
            with translate_errors(TIER, mask_url(long_term_url(config, data_dir))):
                async with engine.connect():
                    pass
            yield store
        finally:
            await engine.dispose()

    # -- schema -------------------------------------------------------------------------

    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None when never set up)."""
        with translate_errors(TIER, self.masked_url):
            return await migrate.current_revision(self.engine)

    async def upgrade_schema(self) -> None:
        """Apply every pending migration."""
        with translate_errors(TIER, self.masked_url):
            await migrate.upgrade(self.engine)

    # -- the hot path -------------------------------------------------------------------

    async def load_context(self, user_id: str, thread_id: str | None) -> LongTermContext:
        """Profile, top-k current facts and the thread's owner, in one SELECT."""
        recall = (
            select(*_FACT_COLUMNS)
            .where(facts.c.user_id == user_id, facts.c.superseded_by.is_(None))
            .order_by(facts.c.confidence.desc(), facts.c.updated_at.desc(), facts.c.id)
            .limit(self.recall_k)
            .subquery("recall")
        )
        anchor = select(literal_column("1").label("anchor")).subquery("anchor")
        stmt = select(
            profiles.c.document,
            profiles.c.version,
            threads.c.user_id.label("thread_owner"),
            *recall.c,
        ).select_from(
            anchor.outerjoin(profiles, profiles.c.user_id == user_id)
            .outerjoin(threads, threads.c.thread_id == thread_id)
            .outerjoin(recall, true())
        )
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        first = rows[0]
        return LongTermContext(
            profile=Profile(
                user_id=user_id, document=first["document"] or {}, version=first["version"] or 0
            ),
            facts=[Fact.model_validate(dict(row)) for row in rows if row["id"] is not None],
            thread_owner=first["thread_owner"],
        )

    async def save_turn(
        self,
        user_id: str,
        provenance: Provenance,
        candidates: Sequence[FactCandidate],
        *,
        session_id: str | None = None,
    ) -> list[str]:
        """Register the thread and consolidate the turn's facts in one transaction.

        Idempotent: saving the same turn again changes nothing but timestamps.
        Returns the ids of the current facts the candidates landed in.

        Raises:
            OwnershipError: the thread belongs to another user (nothing is written).
        """
        now = _now()
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await self._touch_thread(conn, user_id, provenance.thread_id, session_id, now)
                ids = await self._upsert_facts(conn, user_id, provenance, candidates, now)
                profile_patch = {
                    c.attribute: c.value
                    for c in candidates
                    if c.cardinality == "one" and c.subject == "user"
                }
                if profile_patch:
                    await self._patch_profile(conn, user_id, profile_patch, now)
        return ids

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    async def _touch_thread(
        self,
        conn: AsyncConnection,
        user_id: str,
        thread_id: str,
        session_id: str | None,
        now: datetime,
    ) -> None:
        insert = self._insert(threads).values(
            thread_id=thread_id,
            user_id=user_id,
            session_id=session_id,
            status="active",
            metadata={},
            created_at=now,
            last_active_at=now,
        )
        stmt = insert.on_conflict_do_update(
            index_elements=[threads.c.thread_id],
            set_={
                "last_active_at": insert.excluded.last_active_at,
                "session_id": func.coalesce(insert.excluded.session_id, threads.c.session_id),
            },
            where=threads.c.user_id == insert.excluded.user_id,
        ).returning(threads.c.user_id)
        if (await conn.execute(stmt)).first() is None:
            raise OwnershipError(f"thread {thread_id!r} belongs to another user")

    async def _upsert_facts(
        self,
        conn: AsyncConnection,
        user_id: str,
        provenance: Provenance,
        candidates: Sequence[FactCandidate],
        now: datetime,
    ) -> list[str]:
        # Last word wins inside one turn: "I live in Rome. No, in Milan." keeps Milan.
        unique: dict[tuple[str, str, str], FactCandidate] = {}
        for c in candidates:
            key = (c.subject, c.attribute, "" if c.cardinality == "one" else c.value_norm)
            unique.pop(key, None)
            unique[key] = c
        if not unique:
            return []
        rows = [
            {
                "id": str(uuid.uuid4()),
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
            }
            for c in unique.values()
        ]
        insert: Insert = self._insert(facts).values(rows)
        excluded = insert.excluded  # type: ignore[attr-defined]
        stmt = insert.on_conflict_do_update(  # type: ignore[attr-defined]
            index_elements=[facts.c.user_id, facts.c.subject, facts.c.attribute, facts.c.value_norm],
            index_where=facts.c.superseded_by.is_(None),
            set_={
                "confidence": case(
                    (excluded.confidence > facts.c.confidence, excluded.confidence),
                    else_=facts.c.confidence,
                ),
                "updated_at": excluded.updated_at,
            },
        ).returning(facts.c.id, facts.c.subject, facts.c.attribute, facts.c.cardinality)
        landed = (await conn.execute(stmt)).all()
        singles = [row for row in landed if row.cardinality == "one"]
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

    async def _patch_profile(
        self, conn: AsyncConnection, user_id: str, patch: dict[str, Any], now: datetime
    ) -> None:
        insert = self._insert(profiles).values(
            user_id=user_id, document=patch, version=1, created_at=now, updated_at=now
        )
        merged = self._merge_document(patch)
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=[profiles.c.user_id],
                set_={"document": merged, "version": profiles.c.version + 1, "updated_at": now},
                # Re-stating what the profile already says is not a new version.
                where=self._differs(merged, profiles.c.document),
            )
        )

    def _differs(self, left: Any, right: Any) -> ColumnElement[bool]:
        if self.dialect == "postgresql":
            return left != right  # jsonb compares by value
        return func.json(left) != func.json(right)  # canonical text on both sides

    def _merge_document(self, patch: dict[str, Any]) -> ColumnElement[Any]:
        """Set the top-level keys of ``patch`` in the stored profile, inside the database so
        concurrent writers never lose each other's keys. Nested values are replaced whole."""
        for key in patch:
            if not _PROFILE_KEY.fullmatch(key):
                raise InvalidIdentifierError(
                    f"profile key {key!r} is invalid: use 1-128 letters, digits or _ . -"
                )
        if self.dialect == "postgresql":
            return profiles.c.document.op("||")(bindparam("patch", patch, type_=postgresql.JSONB))
        args: list[Any] = []
        for key, value in patch.items():
            args += [f'$."{key}"', func.json(json.dumps(value, allow_nan=False))]
        return func.json_set(profiles.c.document, *args)

    # -- administrative API -------------------------------------------------------------

    async def get_profile(self, user_id: str) -> Profile:
        """The user's profile (an empty version-0 document if none was written yet)."""
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                row = (
                    await conn.execute(
                        select(profiles.c.document, profiles.c.version).where(
                            profiles.c.user_id == user_id
                        )
                    )
                ).first()
        if row is None:
            return Profile(user_id=user_id, document={}, version=0)
        return Profile(user_id=user_id, document=row.document, version=row.version)

    async def patch_profile(self, user_id: str, patch: dict[str, Any]) -> Profile:
        """Merge ``patch`` into the top level of the user's profile; bumps its version."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await self._patch_profile(conn, user_id, patch, _now())
        return await self.get_profile(user_id)

    async def list_facts(self, user_id: str, *, include_history: bool = False) -> list[Fact]:
        """The user's facts, newest first; with ``include_history`` also superseded ones."""
        stmt = select(*_FACT_COLUMNS).where(facts.c.user_id == user_id)
        if not include_history:
            stmt = stmt.where(facts.c.superseded_by.is_(None))
        stmt = stmt.order_by(facts.c.valid_from.desc(), facts.c.id)
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        return [Fact.model_validate(dict(row)) for row in rows]

    async def add_facts(
        self, user_id: str, candidates: Sequence[FactCandidate], *, source: str = "api"
    ) -> list[str]:
        """Store facts outside a graph turn (provenance names ``source`` as the thread)."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                return await self._upsert_facts(
                    conn, user_id, Provenance(thread_id=source), candidates, _now()
                )

    async def forget_fact(self, user_id: str, fact_id: str) -> None:
        """Delete one of the user's facts (and its history links to it)."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    delete(facts).where(facts.c.user_id == user_id, facts.c.id == fact_id)
                )
        if result.rowcount == 0:
            raise NotFoundError(f"user {user_id!r} has no fact {fact_id!r}")

    async def thread_owner(self, thread_id: str) -> str | None:
        """The user a thread is registered to, or None."""
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                return await conn.scalar(
                    select(threads.c.user_id).where(threads.c.thread_id == thread_id)
                )

    async def claim_thread(
        self, user_id: str, thread_id: str, session_id: str | None = None
    ) -> ThreadRecord:
        """Register a thread to ``user_id`` if it is new; refuse it if another user holds it."""
        now = _now()
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await self._touch_thread(conn, user_id, thread_id, session_id, now)
                row = (
                    await conn.execute(select(threads).where(threads.c.thread_id == thread_id))
                ).mappings().one()
        return ThreadRecord.model_validate(dict(row))

    async def list_threads(self, user_id: str) -> list[ThreadRecord]:
        """The user's registered threads, most recently active first."""
        stmt = (
            select(threads)
            .where(threads.c.user_id == user_id)
            .order_by(threads.c.last_active_at.desc(), threads.c.thread_id)
        )
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(stmt)).mappings().all()
        return [ThreadRecord.model_validate(dict(row)) for row in rows]

    async def add_archive(
        self,
        user_id: str,
        *,
        kind: str,
        summary: str,
        data: dict[str, Any],
        thread_id: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Keep a summary of an ended session or archived thread."""
        archive_id = str(uuid.uuid4())
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await conn.execute(
                    archives.insert().values(
                        id=archive_id,
                        user_id=user_id,
                        kind=kind,
                        thread_id=thread_id,
                        session_id=session_id,
                        summary=summary,
                        data=data,
                        created_at=_now(),
                    )
                )
        return archive_id

    async def list_archives(self, user_id: str) -> list[dict[str, Any]]:
        """The user's archived summaries, newest first."""
        stmt = (
            select(archives)
            .where(archives.c.user_id == user_id)
            .order_by(archives.c.created_at.desc())
        )
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                return [dict(row) for row in (await conn.execute(stmt)).mappings().all()]
