"""The long-term tier: profiles, facts, the thread registry and archives on SQL.

The hot path (the load and save nodes) uses Core statements on pooled connections: the load is
one SELECT in autocommit (no BEGIN/ROLLBACK round trips); the save is one statement on
PostgreSQL (one transaction when it changes the profile, and on SQLite), whatever the thread's
history length. Every method is scoped to one user.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    DateTime,
    String,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from memory_tiers.config import LongTermConfig
from memory_tiers.config_values import mask_url
from memory_tiers.direct_sql import direct_sql, settle
from memory_tiers.errors import ConfigError, OwnershipError
from memory_tiers.extractors.base import FactCandidate
from memory_tiers.ids import validates_ids
from memory_tiers.long_term import migrate
from memory_tiers.long_term.consolidate import (
    Accepted,
    Provenance,
    Touch,
    consolidate,
    insert_for,
    touch_once,
)
from memory_tiers.long_term.engine import create_engine, long_term_url
from memory_tiers.long_term.fact_api import FactAPI
from memory_tiers.long_term.hygiene import looks_like_instruction
from memory_tiers.long_term.models import Fact, LongTermContext, Profile, ThreadRecord
from memory_tiers.long_term.profile_migration import (
    PROFILE_COLUMNS,
    ProfileMigrationReport,
    StoredProfile,
    bring_forward,
    migrate_profiles,
    profile_migrator_for,
    read_profile,
)
from memory_tiers.long_term.profile_patch import OldProfileShape, merge_patch
from memory_tiers.long_term.recall import MAX_TERMS, RecallQuery, fact_text, rank
from memory_tiers.long_term.registry import ThreadRegistry
from memory_tiers.long_term.schema import archives, profiles, threads
from memory_tiers.long_term.statements import SqlAlchemyStatements, Statements
from memory_tiers.observability import Telemetry, instrumented
from memory_tiers.retries import retry_sql
from memory_tiers.state.migrators import StateMigrator
from memory_tiers.store.items import check_value
from memory_tiers.translate import translate_errors

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings


TIER = "long_term"
_T = TypeVar("_T")


def _now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _thread_upsert(dialect: str) -> Any:
    """Register a thread to its user or touch it, returning its owner only if that is the user:
    built once per dialect (building it per save cost more than running it)."""
    insert = insert_for(dialect, threads).values(
        thread_id=bindparam("t_thread", type_=String),
        user_id=bindparam("t_user", type_=String),
        session_id=bindparam("t_session", type_=String),
        status="active",
        metadata={},
        created_at=bindparam("t_now", type_=DateTime(timezone=True)),
        last_active_at=bindparam("t_now", type_=DateTime(timezone=True)),
    )
    return insert.on_conflict_do_update(
        index_elements=[threads.c.thread_id],
        set_={
            "last_active_at": insert.excluded.last_active_at,
            "session_id": func.coalesce(insert.excluded.session_id, threads.c.session_id),
            # A run on an archived thread starts it again (its checkpoints are gone).
            "status": case((threads.c.status == "archived", "active"), else_=threads.c.status),
        },
        where=threads.c.user_id == insert.excluded.user_id,
    ).returning(threads.c.user_id)


@dataclass(frozen=True)
class SaveOutcome:
    """What a save did: the facts the candidates landed in, and the ones the guard refused."""

    fact_ids: list[str]
    rejected: list[FactCandidate]


@instrumented(TIER)
@validates_ids
class LongTermStore(FactAPI):
    """Owner-scoped access to the long-term tables.

    Args:
        engine: an `AsyncEngine` on SQLite (aiosqlite) or PostgreSQL (asyncpg).
        config: recall, profile and guard settings (the defaults when None).
        embeddings: a LangChain ``Embeddings`` for semantic recall, or None.
        profile_migrator: the steps that bring profile documents to ``config.profile.version``;
            when None, the one ``long_term.profile.migrators`` / ``.model`` name.
        telemetry: where its spans and counters go (a manager passes its own; the global
            OpenTelemetry providers and counts of its own when None).

    Raises:
        ConfigError: the dialect is not supported, or a profile migration step is missing.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        config: LongTermConfig | None = None,
        *,
        embeddings: Embeddings | None = None,
        profile_migrator: StateMigrator | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.engine = engine
        self.telemetry = telemetry or Telemetry()
        self.config = config or LongTermConfig()
        self.embeddings = embeddings
        self.profile_migrator = profile_migrator_for(self.config.profile, profile_migrator)
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"long_term.url: dialect {self.dialect!r} is not supported; use sqlite or postgresql"
            )
        self.masked_url = mask_url(engine.url.render_as_string(hide_password=False))
        # Reads skip BEGIN/ROLLBACK round trips on PostgreSQL; the SQLite driver opens no
        # transaction for a SELECT anyway, and switching its isolation level costs more.
        self._autocommit = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self.dialect == "postgresql" else engine
        )
        # The hot path (the load's SELECT, the save's transaction: statements built once per
        # shape) skips SQLAlchemy's execute path on asyncpg and aiosqlite.
        self._direct = direct_sql(engine, cache_size=4 * (MAX_TERMS + 1) + 8)
        self.registry = ThreadRegistry(engine, self.masked_url)
        self._recall = RecallQuery(self.dialect, self.config.recall, semantic=embeddings is not None)
        self._load_statement = functools.cache(self._build_load_statement)

    @property
    def profile_version(self) -> int:
        """The profile document schema version this store writes (``long_term.profile.version``)."""
        return self.config.profile.version

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        config: LongTermConfig,
        data_dir: Path,
        *,
        embeddings: Embeddings | None = None,
        telemetry: Telemetry | None = None,
    ) -> AsyncIterator[LongTermStore]:
        """Create the engine, check the database answers, and dispose of it on exit."""
        engine = create_engine(config, data_dir)
        store = cls(engine, config, embeddings=embeddings, telemetry=telemetry)
        try:
            with translate_errors(TIER, mask_url(long_term_url(config, data_dir))):
                async with engine.connect():
                    pass
            yield store
        finally:
            await settle(engine)  # cancelled statements, cancelled on the server first
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

    async def load_context(
        self, user_id: str, thread_id: str | None, query: str | None = None
    ) -> LongTermContext:
        """Profile, pinned facts, the top-k facts for ``query`` and the thread's owner, in one
        SELECT (plus one embedding call for ``query`` when semantic recall is on, and one UPDATE
        when the profile was stored at an older schema version and is migrated).

        Raises:
            StateMigrationError: the profile could not be migrated; nothing was written.
        """
        query_embedding = await self._embed_query(query)
        n_terms, params = self._recall.params(user_id, query, _now())
        params |= {"load_user": user_id, "load_thread": thread_id}
        rows = await self._retrying(lambda: self._hot_rows(self._load_statement(n_terms), params))
        first = rows[0]
        stored = None
        if first["schema_version"] is not None:  # NOT NULL: None means there is no profile row
            # Every row carries the document, as text (see `_build_load_statement`): decoded once.
            decode = getattr(self.engine.dialect, "_json_deserializer", None) or json.loads
            document = decode(first["document"])
            stored = StoredProfile(document, first["version"], first["schema_version"])
        profile = await self._profile(user_id, stored)
        recalled = rank(
            [row for row in rows if row["id"] is not None],
            k=self.config.recall.k,
            query_embedding=query_embedding,
            weight=self.config.recall.semantic.weight,
        )
        return LongTermContext(
            profile=profile,
            facts=Fact.from_rows(recalled),
            thread_owner=first["thread_owner"],
        )

    def _build_load_statement(self, n_terms: int) -> Any:
        """The load's one SELECT for a message of ``n_terms`` search terms (built once per shape).

        The profile's columns repeat on every row (one per recalled fact): its document is
        selected as text, so the driver's JSON decoding (as SQLAlchemy's JSON type sets it up)
        runs once per load in `load_context`, not once per fact."""
        recall = self._recall.subquery(n_terms)
        anchor = select(literal_column("1").label("anchor")).subquery("anchor")
        document, *rest = PROFILE_COLUMNS
        profile = (cast(document, Text).label(document.key), *rest)
        return select(*profile, threads.c.user_id.label("thread_owner"), *recall.c).select_from(
            anchor.outerjoin(profiles, profiles.c.user_id == bindparam("load_user", type_=String))
            .outerjoin(threads, threads.c.thread_id == bindparam("load_thread", type_=String))
            .outerjoin(recall, true())
        )

    async def _embed_query(self, query: str | None) -> list[float] | None:
        if self.embeddings is None or not (query or "").strip():
            return None
        return list(await self.embeddings.aembed_query(query or ""))

    async def _embed_facts(self, accepted: Sequence[Accepted]) -> dict[str, list[float]] | None:
        if self.embeddings is None or not accepted:
            return None
        candidates = [a.candidate for a in accepted]
        vectors = await self.embeddings.aembed_documents(
            [fact_text(c.subject, c.attribute, c.value) for c in candidates]
        )
        return {c.value_norm: list(v) for c, v in zip(candidates, vectors, strict=True)}

    def screen(self, candidates: Sequence[FactCandidate]) -> tuple[list[Accepted], list[FactCandidate]]:
        """Apply the memory guard: instruction-shaped facts are flagged or rejected."""
        mode = self.config.guard.mode
        accepted: list[Accepted] = []
        rejected: list[FactCandidate] = []
        for c in candidates:
            suspicious = mode != "off" and (
                looks_like_instruction(c.value) or looks_like_instruction(c.subject)
            )
            if suspicious and mode == "reject":
                rejected.append(c)
            else:
                accepted.append(Accepted(c, flagged=suspicious))
        return accepted, rejected

    async def save_turn(
        self,
        user_id: str,
        provenance: Provenance,
        candidates: Sequence[FactCandidate],
        *,
        session_id: str | None = None,
    ) -> SaveOutcome:
        """Register the thread and consolidate the turn's facts in one transaction.

        Idempotent: saving the same turn again changes nothing but timestamps.

        Raises:
            OwnershipError: the thread belongs to another user (nothing is written).
        """
        accepted, rejected = self.screen(candidates)
        embeddings = await self._embed_facts(accepted)
        now = _now()

        profile_patch = self._profile_patch(accepted)

        touch = None
        if provenance.thread_id is not None:
            touch = self._thread_touch(user_id, provenance.thread_id, session_id, now)

        async def write(statements: Statements, conn: AsyncConnection | None) -> list[str]:
            ids = await consolidate(
                statements,
                self.dialect,
                user_id,
                provenance,
                accepted,
                now,
                embeddings=embeddings,
                touch=touch,
            )
            if profile_patch:
                await self._patch_profile(statements, conn, user_id, profile_patch, now)
            return ids

        async def transaction() -> list[str]:
            with translate_errors(TIER, self.masked_url):
                if self._direct is not None and touch is not None:
                    # The hot path: every statement straight to the driver. On PostgreSQL a
                    # turn without a profile change is one statement (the registry upsert and
                    # mt_consolidate), which commits by itself; otherwise one transaction (its
                    # first statement, the registry upsert, is a write: on SQLite that is what
                    # begins the transaction).
                    try:
                        if self.dialect == "postgresql" and not profile_patch:
                            return await write(self._direct, None)
                        return await self._direct.in_transaction(lambda direct: write(direct, None))
                    except OldProfileShape:
                        pass  # rolled back; migrating the profile takes SQLAlchemy's path
                async with self.engine.begin() as conn:
                    return await write(SqlAlchemyStatements(conn), conn)

        # One transaction, keyed by the turn's observations: a retry after a commit whose
        # acknowledgement was lost writes nothing twice.
        ids = await self._retrying(transaction)
        self.telemetry.metrics.add("facts_written", len(ids))
        return SaveOutcome(fact_ids=ids, rejected=rejected)

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``await call()``, retried ``long_term.retries`` times after a transient error."""
        return await retry_sql(
            call,
            retries=self.config.retries,
            on_retry=lambda: self.telemetry.metrics.add("retries", attributes={"memory_tiers.tier": TIER}),
        )

    def _profile_patch(self, accepted: Sequence[Accepted]) -> dict[str, Any]:
        """Profile keys set by this turn's facts about the user, through the configured mappings."""
        patch: dict[str, Any] = {}
        for item in accepted:
            c = item.candidate
            key = None if item.flagged else self._profile_key(c.subject, c.attribute, c.cardinality)
            if key is not None:
                patch[key] = c.value
        return patch

    def _profile_key(self, subject: str, attribute: str, cardinality: str) -> str | None:
        """The profile key a fact maps to (``profile.mappings``), or None."""
        if subject != "user" or cardinality != "one":
            return None
        mappings = self.config.profile.mappings
        return attribute if mappings is None else mappings.get(attribute)

    async def _unset_profile_key(
        self, conn: AsyncConnection, user_id: str, key: str, value: str, now: datetime
    ) -> None:
        """Remove ``key`` from the profile if it still holds ``value`` (a forgotten fact's).
        ``key`` is in the current shape, so an older-shaped profile is brought forward first."""
        await bring_forward(
            conn, self.profile_migrator, self.profile_version, user_id, await read_profile(conn, user_id)
        )
        if self.dialect == "postgresql":
            document: Any = profiles.c.document.op("-")(bindparam("unset_key", key))
            holds = profiles.c.document.op("->>")(bindparam("unset_key", key)) == value
        else:
            path = bindparam("unset_path", f'$."{key}"')
            document = func.json_remove(profiles.c.document, path)
            holds = func.json_extract(profiles.c.document, path) == value
        await conn.execute(
            update(profiles)
            .where(profiles.c.user_id == user_id, holds)
            .values(document=document, version=profiles.c.version + 1, updated_at=now)
        )

    def _thread_touch(self, user_id: str, thread_id: str, session_id: str | None, now: datetime) -> Touch:
        """Register the thread to the user or touch it; refused when another user holds it."""
        return Touch(
            _thread_upsert(self.dialect),
            {"t_thread": thread_id, "t_user": user_id, "t_session": session_id, "t_now": now},
            OwnershipError(f"thread {thread_id!r} belongs to another user"),
        )

    async def _patch_profile(
        self,
        statements: Statements,
        conn: AsyncConnection | None,
        user_id: str,
        patch: dict[str, Any],
        now: datetime,
    ) -> None:
        """Merge ``patch`` into the profile, in the caller's transaction (`profile_patch`)."""
        await merge_patch(
            statements,
            conn,
            dialect=self.dialect,
            migrator=self.profile_migrator,
            schema_version=self.profile_version,
            user_id=user_id,
            patch=patch,
            now=now,
        )

    # -- administrative API -------------------------------------------------------------

    async def get_profile(self, user_id: str) -> Profile:
        """The user's profile (an empty version-0 document if none was written yet), brought to
        the current schema version first if it is older.

        Raises:
            StateMigrationError: the profile could not be migrated; nothing was written.
        """
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                stored = await read_profile(conn, user_id)
        return await self._profile(user_id, stored)

    async def _profile(self, user_id: str, stored: StoredProfile | None) -> Profile:
        """``stored`` as a `Profile`, migrated (and written back) if its schema is older."""
        if stored is not None and stored.schema_version < self.profile_version:
            with translate_errors(TIER, self.masked_url):
                async with self.engine.begin() as conn:
                    stored = await bring_forward(
                        conn, self.profile_migrator, self.profile_version, user_id, stored
                    )
        if stored is None:
            return Profile(user_id=user_id, document={}, version=0, schema_version=self.profile_version)
        return Profile(
            user_id=user_id,
            document=stored.document,
            version=stored.version,
            schema_version=stored.schema_version,
        )

    async def migrate_profiles(
        self,
        *,
        dry_run: bool = False,
        batch_size: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> ProfileMigrationReport:
        """Bring every stored profile to the current schema version (``long_term.profile.version``).

        Profiles are walked in user id order, ``batch_size`` per query; each old one is migrated
        and written all-or-nothing (a compare-and-set, as when a load migrates it). A profile that
        fails is reported and left as it was, and the walk goes on. Running it again skips the
        profiles already current, so an interrupted run is resumed by rerunning it.

        Args:
            dry_run: write nothing; still run every migration in memory, so the report shows
                what would be migrated and what would fail.
            batch_size: profiles read per query.
            progress: called with 1 after each profile is handled.
        """
        return await migrate_profiles(self, dry_run=dry_run, batch_size=batch_size, progress=progress)

    async def patch_profile(self, user_id: str, patch: dict[str, Any]) -> Profile:
        """Merge ``patch`` into the top level of the user's profile; bumps its version. A profile
        at an older schema version is migrated first, so the patch lands in the current shape.

        Raises:
            StateMigrationError: the profile could not be migrated; nothing was written.
            InvalidStoreValueError: ``patch`` is not JSON that every backend stores (NaN, NUL, a
                lone surrogate, too deep); nothing was written.
        """
        patch = check_value(patch)
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await self._patch_profile(SqlAlchemyStatements(conn), conn, user_id, patch, _now())
        return await self.get_profile(user_id)

    async def _hot_rows(self, stmt: Any, params: dict[str, Any]) -> Sequence[Any]:
        """The rows of a statement built once (a recall shape), as mappings: straight from
        asyncpg or aiosqlite when the engine is on one (`memory_tiers.direct_sql`), else as
        `_rows`."""
        if self._direct is None:
            return await self._rows(stmt, params)
        with translate_errors(TIER, self.masked_url):
            return await self._direct.rows(stmt, params)

    async def _rows(self, stmt: Any, params: dict[str, Any] | None = None) -> Sequence[Any]:
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                return (await conn.execute(stmt, params or {})).mappings().all()

    async def thread_owner(self, thread_id: str) -> str | None:
        """The user a thread is registered to, or None."""
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                return await conn.scalar(select(threads.c.user_id).where(threads.c.thread_id == thread_id))

    async def claim_thread(self, user_id: str, thread_id: str, session_id: str | None = None) -> ThreadRecord:
        """Register a thread to ``user_id`` if it is new; refuse it if another user holds it."""
        now = _now()
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await touch_once(
                    SqlAlchemyStatements(conn), self._thread_touch(user_id, thread_id, session_id, now)
                )
                row = (
                    (await conn.execute(select(threads).where(threads.c.thread_id == thread_id)))
                    .mappings()
                    .one()
                )
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
        archive_id: str | None = None,
    ) -> str:
        """Keep a summary of an ended session or archived thread; returns the row's id.

        Args:
            archive_id: the row's id (a UUID string, derived from the user and what is archived)
                to make the call idempotent: when a row with this id exists, nothing is written.
                A fresh id when None.
        """
        row_id = archive_id or str(uuid.uuid4())
        insert = insert_for(self.dialect, archives).values(
            id=row_id,
            user_id=user_id,
            kind=kind,
            thread_id=thread_id,
            session_id=session_id,
            summary=summary,
            data=data,
            created_at=_now(),
        )
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                await conn.execute(insert.on_conflict_do_nothing(index_elements=[archives.c.id]))
        return row_id

    async def delete_archive(self, user_id: str, archive_id: str) -> bool:
        """Delete one of the user's archives. Returns whether it existed."""
        with translate_errors(TIER, self.masked_url):
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    delete(archives).where(archives.c.id == archive_id, archives.c.user_id == user_id)
                )
        return bool(result.rowcount)

    async def list_archives(self, user_id: str) -> list[dict[str, Any]]:
        """The user's archived summaries, newest first."""
        stmt = select(archives).where(archives.c.user_id == user_id).order_by(archives.c.created_at.desc())
        with translate_errors(TIER, self.masked_url):
            async with self._autocommit.connect() as conn:
                return [dict(row) for row in (await conn.execute(stmt)).mappings().all()]
