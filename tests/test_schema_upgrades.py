"""Our SQL schema moves forward through Alembic without losing data, from every revision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from helpers import unique
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_tiers import FactCandidate
from memory_tiers.config import IdKeysConfig, StoreConfig
from memory_tiers.long_term import migrate
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.store import SqlStore

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def revisions() -> list[str]:
    """Every revision but head, oldest first."""
    script = ScriptDirectory.from_config(migrate._alembic_config())
    ordered = [r.revision for r in script.walk_revisions()][::-1]
    return ordered[:-1]


async def seed_0001(engine: AsyncEngine, user: str) -> None:
    """Rows as a database at revision 0001 held them."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO mt_facts (id, user_id, subject, attribute, value, value_norm, cardinality, "
                "confidence, thread_id, checkpoint_id, message_id, created_at, updated_at, valid_from) "
                "VALUES (:id, :user, 'user', 'likes', 'Jazz music', 'jazz music', 'many', 0.7, 't1', "
                "'c1', 'm1', :now, :now, :now)"
            ),
            {"id": f"{user}-fact", "user": user, "now": NOW},
        )
        await conn.execute(
            text(
                "INSERT INTO mt_profiles (user_id, document, version, created_at, updated_at) "
                "VALUES (:user, :doc, 3, :now, :now)"
            ),
            {"user": user, "doc": '{"name": "Alice"}', "now": NOW},
        )
        await conn.execute(
            text(
                "INSERT INTO mt_threads (thread_id, user_id, session_id, status, metadata, created_at, "
                "last_active_at) VALUES (:thread, :user, NULL, 'active', '{}', :now, :now)"
            ),
            {"thread": f"{user}-thread", "user": user, "now": NOW},
        )


async def seed_0002(engine: AsyncEngine, user: str) -> None:
    """Rows as a database at revision 0002 held them: the 0001 rows, the fact's observation
    (0002 keeps one per sighting) and an item of the LangGraph store."""
    await seed_0001(engine, user)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO mt_fact_observations (fact_id, observation_key, user_id, thread_id, "
                "checkpoint_id, message_id, confidence, observed_at) "
                "VALUES (:fact, 't1:c1:m1', :user, 't1', 'c1', 'm1', 0.7, :now)"
            ),
            {"fact": f"{user}-fact", "user": user, "now": NOW},
        )
        await conn.execute(
            text(
                "INSERT INTO mt_store_items (user_id, namespace, key, value, created_at, updated_at, "
                "expires_at, ttl_minutes) VALUES (:user, 'notes.music', 'k1', :value, :now, :now, NULL, NULL)"
            ),
            {"user": user, "value": '{"text": "Jazz on Fridays"}', "now": NOW},
        )


async def seed_0003(engine: AsyncEngine, user: str) -> None:
    """Rows as a database at revision 0003 held them: 0002's, the profile at schema version 1."""
    await seed_0002(engine, user)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE mt_profiles SET schema_version = 1 WHERE user_id = :user"), {"user": user}
        )


async def seed_0004(engine: AsyncEngine, user: str) -> None:
    """Rows as a database at revision 0004 held them: 0003's, the fact with its search text."""
    await seed_0003(engine, user)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE mt_facts SET search_text = ' user likes jazz music ' WHERE user_id = :user"),
            {"user": user},
        )


async def seed_0005(engine: AsyncEngine, user: str) -> None:
    """Rows as a database at revision 0005 held them: 0004's, and another user's fact with
    accented words, in a search text that did not fold them."""
    await seed_0004(engine, user)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO mt_facts (id, user_id, subject, attribute, value, value_norm, cardinality, "
                "confidence, created_at, updated_at, valid_from, search_text) "
                "VALUES (:id, :user, 'user', 'location', 'São Paulo', 'são paulo', 'one', 0.9, :now, :now, "
                ":now, ' user location são paulo ')"
            ),
            {"id": f"{user}-accented", "user": f"{user}-b", "now": NOW},
        )


SEEDS = {
    "0001": seed_0001,
    "0002": seed_0002,
    "0003": seed_0003,
    "0004": seed_0004,
    "0005": seed_0005,
    "0006": seed_0005,  # 0006 only rewrote search texts and added an index: the same rows
    "0007": seed_0005,  # 0007 only dropped the full-text indexes
    "0008": seed_0005,  # 0008 only dropped an index
    "0009": seed_0005,  # 0009 only added a function
}


@pytest.fixture
async def empty_engine(empty_sql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_sql_url)
    yield engine
    await engine.dispose()


def test_every_revision_has_a_seed():
    assert set(revisions()) == set(SEEDS)


@pytest.mark.parametrize("revision", revisions())
async def test_a_database_at_every_revision_upgrades_to_head_with_its_data(empty_engine, revision):
    user = unique("alice")
    await migrate.upgrade(empty_engine, revision)
    await SEEDS[revision](empty_engine, user)

    await migrate.upgrade(empty_engine)

    store = LongTermStore(empty_engine)
    assert await store.schema_revision() == migrate.head_revision()
    [fact] = await store.list_facts(user)
    assert (fact.id, fact.value, fact.confidence, fact.thread_id) == (f"{user}-fact", "Jazz music", 0.7, "t1")
    assert fact.valid_from == NOW
    profile = await store.get_profile(user)
    assert (profile.document, profile.version) == ({"name": "Alice"}, 3)
    assert profile.schema_version == 1  # stored before profile documents were versioned
    [thread] = await store.list_threads(user)
    assert thread.thread_id == f"{user}-thread"
    assert (thread.namespace, thread.status, thread.archived_at) == ("default", "active", None)
    # Old facts are searchable and keep their provenance as their first observation.
    [found] = await store.search_facts(user, "jazz")
    assert found.id == fact.id
    assert found.score > 0.5  # relevance counts: the fact's search text was filled in
    [observation] = await store.fact_observations(user, fact.id)
    assert (observation.thread_id, observation.message_id, observation.confidence) == ("t1", "m1", 0.7)
    if revision >= "0002":  # the LangGraph store's items arrived in 0002
        items = SqlStore(empty_engine, StoreConfig(), ids=IdKeysConfig()).for_user(user)
        item = await items.aget(("notes", "music"), "k1")
        assert item is not None and item.value == {"text": "Jazz on Fridays"}
    # And the upgraded schema takes new writes the way a fresh one does.
    outcome = await store.add_facts(user, [FactCandidate(attribute="likes", value="jazz music")])
    assert outcome.fact_ids == [fact.id]
    assert (await store.list_facts(user))[0].confidence == pytest.approx(1 - 0.3 * 0.2)


async def test_facts_stored_before_0006_are_found_without_their_accents(empty_engine):
    user = unique("alice")
    await migrate.upgrade(empty_engine, "0005")
    await seed_0005(empty_engine, user)

    await migrate.upgrade(empty_engine)

    store = LongTermStore(empty_engine)
    for query in ("sao paulo", "São Paulo"):
        [found] = await store.search_facts(f"{user}-b", query)
        assert (found.id, found.value) == (f"{user}-accented", "São Paulo")
        assert found.score > 2 / 3  # both words count: the search text was folded


async def full_text_objects(engine: AsyncEngine) -> set[str]:
    """The facts' full-text index objects present in the database (revisions 0002 to 0006)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            found = await conn.execute(text("SELECT name FROM sqlite_master WHERE name LIKE 'mt_facts_fts%'"))
        else:
            found = await conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = 'mt_facts' "
                    "AND column_name = 'search_vector' UNION ALL "
                    "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_mt_facts_search'"
                )
            )
        return {name for (name,) in found}


async def test_0007_drops_the_unused_full_text_index_and_a_downgrade_rebuilds_it(empty_engine):
    user = unique("alice")
    await migrate.upgrade(empty_engine, "0006")
    await seed_0005(empty_engine, user)
    before = await full_text_objects(empty_engine)
    assert before  # the FTS5 table and its triggers, or the tsvector column and its GIN index

    await migrate.upgrade(empty_engine)
    assert await full_text_objects(empty_engine) == set()
    [found] = await LongTermStore(empty_engine).search_facts(user, "jazz")  # search needs none of it
    assert found.id == f"{user}-fact"

    async with empty_engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(migrate._alembic_config(sync), "0006"))
    assert await full_text_objects(empty_engine) == before
    if empty_engine.dialect.name == "sqlite":  # rebuilt from the facts, not left empty
        async with empty_engine.connect() as conn:
            hits = await conn.execute(text("SELECT rowid FROM mt_facts_fts WHERE mt_facts_fts MATCH 'jazz'"))
            assert len(hits.all()) == 1


async def observation_indexes(engine: AsyncEngine) -> set[str]:
    """The names of mt_fact_observations' indexes (SQLAlchemy's inspector, either database)."""
    async with engine.connect() as conn:
        indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("mt_fact_observations"))
    return {index["name"] for index in indexes}


async def test_0008_drops_the_user_index_the_composite_one_covers_and_a_downgrade_restores_it(
    empty_engine,
):
    user = unique("alice")
    await migrate.upgrade(empty_engine, "0007")
    await seed_0005(empty_engine, user)
    assert await observation_indexes(empty_engine) == {
        "ix_mt_fact_observations_user_id",
        "ix_mt_fact_observations_user_key",
    }

    await migrate.upgrade(empty_engine)
    assert await observation_indexes(empty_engine) == {"ix_mt_fact_observations_user_key"}
    store = LongTermStore(empty_engine)
    [fact] = await store.list_facts(user)
    [observation] = await store.fact_observations(user, fact.id)  # read by user, as before
    assert observation.message_id == "m1"

    async with empty_engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(migrate._alembic_config(sync), "0007"))
    assert "ix_mt_fact_observations_user_id" in await observation_indexes(empty_engine)


async def consolidate_functions(engine: AsyncEngine) -> int:
    """How many functions named mt_consolidate the database has (SQLite has no functions)."""
    if engine.dialect.name != "postgresql":
        return 0
    async with engine.connect() as conn:
        return (
            await conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname = 'mt_consolidate'"))
        ).scalar()


async def test_0009_adds_the_consolidation_function_to_postgres_and_a_downgrade_drops_it(empty_engine):
    user = unique("alice")
    postgres = empty_engine.dialect.name == "postgresql"
    await migrate.upgrade(empty_engine, "0008")
    await seed_0005(empty_engine, user)
    assert await consolidate_functions(empty_engine) == 0

    await migrate.upgrade(empty_engine)
    assert await consolidate_functions(empty_engine) == (1 if postgres else 0)
    store = LongTermStore(empty_engine)
    await store.add_facts(user, [FactCandidate(attribute="likes", value="jazz music")])  # corroborates
    [fact] = await store.list_facts(user)
    assert fact.confidence == pytest.approx(1 - (1 - 0.7) * (1 - 0.8))

    async with empty_engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(migrate._alembic_config(sync), "0008"))
    assert await consolidate_functions(empty_engine) == 0
    await migrate.upgrade(empty_engine)  # and up again
    assert await consolidate_functions(empty_engine) == (1 if postgres else 0)


async def store_namespace_collation(engine: AsyncEngine) -> str | None:
    """The collation of the store's namespace column; None: the database's (always on SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT collation_name FROM information_schema.columns "
                    "WHERE table_name = 'mt_store_items' AND column_name = 'namespace'"
                )
            )
        ).scalar()


async def test_0010_makes_store_namespaces_bytewise_on_postgres_and_a_downgrade_restores_them(empty_engine):
    user = unique("alice")
    postgres = empty_engine.dialect.name == "postgresql"
    await migrate.upgrade(empty_engine, "0009")
    await seed_0005(empty_engine, user)  # an item in ("notes", "music")
    assert await store_namespace_collation(empty_engine) is None

    await migrate.upgrade(empty_engine)
    assert await store_namespace_collation(empty_engine) == ("C" if postgres else None)
    items = SqlStore(empty_engine, StoreConfig(), ids=IdKeysConfig()).for_user(user)
    await items.aput(("notes-old",), "k2", {"text": "beside the prefix, not below it"})
    [found] = await items.asearch(("notes",))
    assert (found.namespace, found.key) == (("notes", "music"), "k1")

    async with empty_engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(migrate._alembic_config(sync), "0009"))
    assert await store_namespace_collation(empty_engine) is None
    assert [item.key for item in await items.asearch(("notes",))] == ["k1"]  # right either way
