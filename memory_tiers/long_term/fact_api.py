"""The facts half of `LongTermStore`'s administrative API: search, list, history, provenance,
add, pin and forget, each scoped to one user."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from memory_tiers.errors import NotFoundError
from memory_tiers.extractors.base import FactCandidate
from memory_tiers.ids import validate_id
from memory_tiers.long_term.consolidate import Provenance, consolidate
from memory_tiers.long_term.models import Fact, Observation
from memory_tiers.long_term.recall import rank
from memory_tiers.long_term.schema import fact_observations, facts
from memory_tiers.long_term.statements import SqlAlchemyStatements
from memory_tiers.translate import translate_errors

if TYPE_CHECKING:
    from memory_tiers.long_term.store import LongTermStore, SaveOutcome

FACT_COLUMNS = [c for c in facts.c if c.name not in ("user_id", "embedding", "search_text")]
TIER = "long_term"


def _now() -> datetime:
    return datetime.now(UTC)


class FactAPI:
    """Mixed into `LongTermStore`; uses its engine, config, recall query and profile writes."""

    async def list_facts(self: LongTermStore, user_id: str, *, include_history: bool = False) -> list[Fact]:
        """The user's facts, newest first; with ``include_history`` also superseded ones."""
        stmt = select(*FACT_COLUMNS).where(facts.c.user_id == user_id)
        if not include_history:
            stmt = stmt.where(facts.c.superseded_by.is_(None))
        return await self._facts(stmt.order_by(facts.c.valid_from.desc(), facts.c.id))

    async def search_facts(
        self: LongTermStore, user_id: str, query: str, *, k: int | None = None
    ) -> list[Fact]:
        """The user's current facts matching ``query`` (found by the full-text index, plus
        semantic similarity when embeddings are configured), best first, with their ``score``.

        Example:
            >>> import asyncio
            >>> from memory_tiers import FactCandidate, MemoryManager
            >>> async def main():
            ...     async with MemoryManager({"working": {"backend": "memory"},
            ...             "long_term": {"url": "sqlite+aiosqlite:///:memory:"}}) as m:
            ...         await m.long_term.add_facts("ann", [FactCandidate(attribute="likes", value="jazz"),
            ...                                             FactCandidate(attribute="likes", value="tea")])
            ...         return [f.value for f in await m.long_term.search_facts("ann", "Any jazz tonight?")]
            >>> asyncio.run(main())
            ['jazz']
        """
        k = k or self.config.recall.k
        query_embedding = await self._embed_query(query)
        n_terms, params = self._recall.params(user_id, query, _now(), limit=k)
        statement = self._recall.search(n_terms, matching_only=query_embedding is None)
        ranked = rank(
            await self._hot_rows(statement, params),
            k=k,
            query_embedding=query_embedding,
            weight=self.config.recall.semantic.weight,
            pinned_first=False,
        )
        return [Fact.from_row(row) for row in ranked]

    async def fact_history(
        self: LongTermStore, user_id: str, attribute: str, *, subject: str = "user"
    ) -> list[Fact]:
        """Every value ``subject.attribute`` has had, oldest first, with its validity window:
        where Alice lives now is the row without ``valid_to``, where she lived before the others."""
        stmt = (
            select(*FACT_COLUMNS)
            .where(facts.c.user_id == user_id, facts.c.subject == subject, facts.c.attribute == attribute)
            .order_by(facts.c.valid_from, facts.c.id)
        )
        return await self._facts(stmt)

    async def fact_observations(self: LongTermStore, user_id: str, fact_id: str) -> list[Observation]:
        """Each time the fact was observed: thread, checkpoint, message and confidence."""
        stmt = (
            select(fact_observations)
            .where(fact_observations.c.user_id == user_id, fact_observations.c.fact_id == fact_id)
            .order_by(fact_observations.c.observed_at, fact_observations.c.observation_key)
        )
        return [Observation.model_validate(dict(row)) for row in await self._rows(stmt)]

    async def add_facts(
        self: LongTermStore,
        user_id: str,
        candidates: Sequence[FactCandidate],
        *,
        source: str = "api",
        idempotency_key: str | None = None,
        pinned: bool = False,
    ) -> SaveOutcome:
        """Store facts outside a graph turn, through the same guard, consolidation and profile
        mappings as a turn's.

        Args:
            user_id: whose facts they are.
            candidates: the facts.
            source: recorded as the facts' provenance (in place of a thread id).
            idempotency_key: repeat a call with the same key and nothing new is observed; without
                one every call is a new observation (which corroborates known facts).
            pinned: pinned facts are recalled on every turn, besides the top k.
        """
        from memory_tiers.long_term.store import SaveOutcome

        validate_id("source", source)
        if idempotency_key is not None:
            validate_id("idempotency_key", idempotency_key)
        provenance = Provenance(
            thread_id=source,
            key=f"api:{source}:{idempotency_key or uuid.uuid4()}",
            replayable=idempotency_key is not None,
        )
        accepted, rejected = self.screen(candidates)
        embeddings = await self._embed_facts(accepted)
        now = _now()
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                ids = await consolidate(
                    SqlAlchemyStatements(conn),
                    self.dialect,
                    user_id,
                    provenance,
                    accepted,
                    now,
                    embeddings=embeddings,
                )
                if pinned and ids:
                    await conn.execute(update(facts).where(facts.c.id.in_(ids)).values(pinned=True))
                profile_patch = self._profile_patch(accepted)
                if profile_patch:
                    await self._patch_profile(SqlAlchemyStatements(conn), conn, user_id, profile_patch, now)
        return SaveOutcome(fact_ids=ids, rejected=rejected)

    async def pin_fact(self: LongTermStore, user_id: str, fact_id: str, pinned: bool = True) -> None:
        """Pin a fact (recalled on every turn) or unpin it."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await _one_fact(conn, update(facts).values(pinned=pinned), user_id, fact_id)

    async def forget_fact(self: LongTermStore, user_id: str, fact_id: str) -> None:
        """Delete one of the user's facts and its observations, and take its value out of the
        profile if the fact put it there. Older values it superseded stay in history; forget them
        one by one (see `fact_history`)."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await conn.execute(
                    delete(fact_observations).where(
                        fact_observations.c.user_id == user_id, fact_observations.c.fact_id == fact_id
                    )
                )
                gone = await _one_fact(
                    conn,
                    delete(facts).returning(
                        facts.c.subject, facts.c.attribute, facts.c.value, facts.c.cardinality
                    ),
                    user_id,
                    fact_id,
                )
                key = self._profile_key(gone.subject, gone.attribute, gone.cardinality)
                if key is not None:
                    await self._unset_profile_key(conn, user_id, key, gone.value, _now())

    async def _facts(self: LongTermStore, stmt: Any) -> list[Fact]:
        return [Fact.from_row(row) for row in await self._rows(stmt)]

    async def observed_message_ids(self: LongTermStore, user_id: str, thread_id: str) -> set[str]:
        """The ids of the thread's messages that facts were already learned from."""
        stmt = (
            select(fact_observations.c.message_id)
            .where(
                fact_observations.c.user_id == user_id,
                fact_observations.c.thread_id == thread_id,
                fact_observations.c.message_id.is_not(None),
            )
            .distinct()
        )
        return {row["message_id"] for row in await self._rows(stmt)}


async def _one_fact(conn: AsyncConnection, stmt: Any, user_id: str, fact_id: str) -> Any:
    """Run an UPDATE or DELETE on one of the user's facts; NotFoundError if it is not theirs."""
    result = await conn.execute(stmt.where(facts.c.user_id == user_id, facts.c.id == fact_id))
    if result.returns_rows:
        row = result.first()
        missing = row is None
    else:
        row, missing = None, result.rowcount == 0
    if missing:
        raise NotFoundError(f"user {user_id!r} has no fact {fact_id!r}")
    return row
