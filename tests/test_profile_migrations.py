"""Versioned profile documents: old profiles are brought to the current schema version once,
on load, read, patch, save and in bulk; a failing migration writes nothing. SQLite and PostgreSQL.

The profiles here start at schema version 1 (``{"name": "Ann Lee"}``) and the store writes 3:
step 1 -> 2 renames ``name`` to ``full_name``, step 2 -> 3 splits it and adds a default locale.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from helpers import counting_sql
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_tiers import FactCandidate
from memory_tiers.config import LongTermConfig
from memory_tiers.errors import ConfigError
from memory_tiers.long_term import migrate
from memory_tiers.long_term.consolidate import Provenance
from memory_tiers.long_term.schema import profiles
from memory_tiers.long_term.store import LongTermStore
from memory_tiers.state.migrators import StateMigrationError, StateMigrator

THEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ANN_V3 = {"full_name": "Ann Lee", "first_name": "Ann", "last_name": "Lee", "locale": "en"}


def rename_name(doc: dict[str, Any]) -> dict[str, Any]:
    doc["full_name"] = doc.pop("name")
    return doc


def split_full_name(doc: dict[str, Any]) -> dict[str, Any]:
    if "!" in doc["full_name"]:
        raise ValueError("names do not shout")
    first, _, last = doc["full_name"].partition(" ")
    return {**doc, "first_name": first, "last_name": last, "locale": doc.get("locale", "en")}


# Named by the config test as "test_profile_migrations:STEPS" / ":ProfileV3".
STEPS = {1: rename_name, 2: split_full_name}


class ProfileV3(BaseModel):
    model_config = ConfigDict(extra="allow")

    full_name: str
    first_name: str
    last_name: str
    locale: Literal["en", "fr"]


def v3_config(**profile: Any) -> LongTermConfig:
    return LongTermConfig.model_validate({"profile": {"version": 3, **profile}})


def v3_store(engine: AsyncEngine, migrator: StateMigrator | None = None) -> LongTermStore:
    return LongTermStore(engine, v3_config(), profile_migrator=migrator or StateMigrator.from_steps(STEPS))


@pytest.fixture
async def engine(empty_sql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(empty_sql_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


async def write_profile(
    engine: AsyncEngine,
    user: str,
    document: dict[str, Any],
    *,
    version: int = 4,
    schema_version: int | None = None,
) -> None:
    """A profile row as older code left it; without ``schema_version`` the column's default."""
    values: dict[str, Any] = {
        "user_id": user,
        "document": document,
        "version": version,
        "created_at": THEN,
        "updated_at": THEN,
    }
    if schema_version is not None:
        values["schema_version"] = schema_version
    async with engine.begin() as conn:
        await conn.execute(profiles.insert().values(**values))


async def row_of(engine: AsyncEngine, user: str) -> dict[str, Any] | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(profiles).where(profiles.c.user_id == user))).mappings().first()
    return None if row is None else dict(row)


async def all_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(profiles).order_by(profiles.c.user_id))).mappings().all()
    return [dict(row) for row in rows]


# -- one profile at a time ----------------------------------------------------------------


async def test_load_migrates_an_old_profile_once(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee"})  # schema_version by the column default
    store = v3_store(engine)

    with counting_sql(engine) as first:
        context = await store.load_context("ann", None, "hello")
    with counting_sql(engine) as second:
        again = await store.load_context("ann", None, "hello")

    assert (context.profile.document, context.profile.version, context.profile.schema_version) == (
        ANN_V3,
        5,
        3,
    )
    assert first == ["SELECT", "UPDATE"]  # one extra statement, only when migrating
    assert second == ["SELECT"]  # the work happened once
    assert again.profile == context.profile
    row = await row_of(engine, "ann")
    assert (row["document"], row["version"], row["schema_version"]) == (ANN_V3, 5, 3)
    assert row["created_at"].replace(tzinfo=UTC) == THEN


async def test_get_profile_migrates_an_old_profile_and_writes_it_back(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee"}, schema_version=1)
    store = v3_store(engine)

    profile = await store.get_profile("ann")
    with counting_sql(engine) as statements:
        assert await store.get_profile("ann") == profile

    assert (profile.document, profile.version, profile.schema_version) == (ANN_V3, 5, 3)
    assert statements == ["SELECT"]


async def test_patch_profile_merges_into_the_migrated_document_never_the_old_one(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee"}, schema_version=1)
    store = v3_store(engine)

    profile = await store.patch_profile("ann", {"locale": "fr"})

    assert profile.document == {**ANN_V3, "locale": "fr"}
    assert (profile.version, profile.schema_version) == (6, 3)  # one for the migration, one for the patch
    updated_at = (await row_of(engine, "ann"))["updated_at"]
    # Re-stating what the profile says is still not a new version.
    assert (await store.patch_profile("ann", {"locale": "fr"})).version == 6
    assert (await row_of(engine, "ann"))["updated_at"] == updated_at


async def test_a_saved_turn_patches_the_migrated_profile(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee"}, schema_version=1)
    store = v3_store(engine)

    await store.save_turn(
        "ann",
        Provenance(thread_id="t1", checkpoint_id="c1"),
        [FactCandidate(attribute="locale", value="fr", cardinality="one")],
    )

    profile = await store.get_profile("ann")
    assert (profile.document, profile.version, profile.schema_version) == ({**ANN_V3, "locale": "fr"}, 6, 3)


async def test_new_profiles_are_written_at_the_current_version(engine):
    store = v3_store(engine)

    empty = await store.get_profile("bob")
    await store.patch_profile("bob", {"first_name": "Bob"})

    assert (empty.document, empty.version, empty.schema_version) == ({}, 0, 3)
    row = await row_of(engine, "bob")
    assert (row["document"], row["version"], row["schema_version"]) == ({"first_name": "Bob"}, 1, 3)


async def test_a_newer_profile_is_read_and_patched_as_it_is(engine):
    # Written by a newer deployment: never migrated backwards, never refused.
    await write_profile(engine, "ann", {"v4": True}, schema_version=4)
    store = v3_store(engine)

    with counting_sql(engine) as statements:
        context = await store.load_context("ann", None)
    patched = await store.patch_profile("ann", {"locale": "fr"})

    assert statements == ["SELECT"]
    assert (context.profile.document, context.profile.schema_version) == ({"v4": True}, 4)
    assert (patched.document, patched.version, patched.schema_version) == ({"v4": True, "locale": "fr"}, 5, 4)


async def call(store: LongTermStore, entry: str, user: str) -> Any:
    if entry == "load_context":
        return await store.load_context(user, None, "hello")
    if entry == "get_profile":
        return await store.get_profile(user)
    if entry == "patch_profile":
        return await store.patch_profile(user, {"locale": "fr"})
    return await store.save_turn(
        user,
        Provenance(thread_id=f"{user}-thread", checkpoint_id="c1"),
        [FactCandidate(attribute="locale", value="fr", cardinality="one")],
    )


ENTRIES = ["load_context", "get_profile", "patch_profile", "save_turn"]


@pytest.mark.parametrize("entry", ENTRIES)
async def test_a_failing_step_raises_naming_the_user_and_versions_and_writes_nothing(engine, entry):
    await write_profile(engine, "ann", {"name": "Ann Lee!"}, schema_version=1)
    before = await row_of(engine, "ann")
    store = v3_store(engine)

    with pytest.raises(StateMigrationError) as caught:
        await call(store, entry, "ann")

    error = caught.value
    assert (error.subject, error.from_version, error.to_version) == ("profile of 'ann'", 1, 3)
    assert "profile of 'ann'" in str(error) and "from version 1 to 3" in str(error)
    assert "step 2 -> 3" in str(error) and "names do not shout" in str(error)
    assert await row_of(engine, "ann") == before
    # A failing save writes none of the turn (its facts, the thread) either.
    assert await store.list_facts("ann") == [] and await store.list_threads("ann") == []


@pytest.mark.parametrize("entry", ENTRIES)
async def test_a_migrated_profile_failing_the_model_names_the_field(engine, entry):
    await write_profile(engine, "ann", {"name": "Ann Lee", "locale": "de"}, schema_version=1)
    before = await row_of(engine, "ann")
    store = v3_store(engine, StateMigrator.from_steps(STEPS, model=ProfileV3))

    with pytest.raises(StateMigrationError, match=r"profile of 'ann'.*ProfileV3.*field locale"):
        await call(store, entry, "ann")

    assert await row_of(engine, "ann") == before


async def test_two_concurrent_loads_migrate_an_old_profile_once(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee"}, schema_version=1)
    both_read = asyncio.Barrier(2)

    async def rename_when_both_have_read(doc: dict[str, Any]) -> dict[str, Any]:
        await asyncio.wait_for(both_read.wait(), 10)
        return rename_name(doc)

    migrator = StateMigrator.from_steps({1: rename_when_both_have_read, 2: split_full_name})
    first, second = v3_store(engine, migrator), v3_store(engine, migrator)

    with counting_sql(engine) as statements:
        a, b = await asyncio.gather(first.load_context("ann", None), second.load_context("ann", None))

    assert a.profile == b.profile
    assert (a.profile.document, a.profile.version, a.profile.schema_version) == (ANN_V3, 5, 3)
    row = await row_of(engine, "ann")
    assert (row["document"], row["version"], row["schema_version"]) == (ANN_V3, 5, 3)  # bumped once
    # Both tried their compare-and-set; the loser read the winner's profile.
    assert Counter(statements) == Counter({"SELECT": 3, "UPDATE": 2})


async def test_the_configuration_names_the_migrators_and_the_model(engine):
    await write_profile(engine, "ann", {"name": "Ann Lee", "locale": "de"}, schema_version=1)
    await write_profile(engine, "bea", {"name": "Bea Ray"}, schema_version=1)
    config = v3_config(migrators="test_profile_migrations:STEPS", model="test_profile_migrations:ProfileV3")
    store = LongTermStore(engine, config)

    assert (await store.get_profile("bea")).document["first_name"] == "Bea"
    with pytest.raises(StateMigrationError, match="field locale"):
        await store.get_profile("ann")


def test_a_missing_step_is_a_config_error_when_the_store_is_built():
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(ConfigError, match=r"long_term\.profile: no step for 1 -> 2, 2 -> 3"):
        LongTermStore(engine, v3_config())
    with pytest.raises(ConfigError, match=r"long_term\.profile: no step for 2 -> 3"):
        LongTermStore(engine, v3_config(), profile_migrator=StateMigrator.from_steps({1: rename_name}))


# -- in bulk ------------------------------------------------------------------------------


async def seed_bulk(engine: AsyncEngine) -> None:
    for user, name in [("u1", "Ann Lee"), ("u2", "Bea Ray"), ("u3", "Bad Name!"), ("u4", "Cy Moe")]:
        await write_profile(engine, user, {"name": name}, schema_version=1)
    await write_profile(engine, "u5", ANN_V3, schema_version=3)


async def test_bulk_migration_migrates_old_profiles_reports_failures_and_reruns_as_a_no_op(engine):
    await seed_bulk(engine)
    store = v3_store(engine)
    steps: list[int] = []

    report = await store.migrate_profiles(batch_size=2, progress=steps.append)

    assert (report.version, report.dry_run, report.migrated) == (3, False, 3)
    assert report.before == Counter({1: 4, 3: 1})
    assert report.after == Counter({3: 4, 1: 1})
    assert list(report.failed) == ["u3"]
    assert "profile of 'u3'" in report.failed["u3"] and "names do not shout" in report.failed["u3"]
    assert sum(steps) == 5
    rows = {row["user_id"]: row for row in await all_rows(engine)}
    assert rows["u1"]["document"] == ANN_V3
    assert rows["u4"]["document"]["first_name"] == "Cy"
    assert {user: (row["schema_version"], row["version"]) for user, row in rows.items()} == {
        "u1": (3, 5),
        "u2": (3, 5),
        "u3": (1, 4),  # left exactly as it was
        "u4": (3, 5),
        "u5": (3, 4),  # already current: untouched
    }
    assert rows["u3"]["document"] == {"name": "Bad Name!"}

    rerun = await store.migrate_profiles(batch_size=2)

    assert (rerun.migrated, rerun.before, rerun.after) == (0, report.after, report.after)
    assert list(rerun.failed) == ["u3"]
    assert {row["user_id"]: row for row in await all_rows(engine)} == rows


async def test_a_dry_run_writes_nothing_and_reports_what_would_change(engine):
    await seed_bulk(engine)
    store = v3_store(engine)
    before = await all_rows(engine)

    with counting_sql(engine) as statements:
        report = await store.migrate_profiles(dry_run=True, batch_size=2)

    assert (report.dry_run, report.migrated) == (True, 3)
    assert report.before == Counter({1: 4, 3: 1})
    assert report.after == Counter({3: 4, 1: 1})
    assert list(report.failed) == ["u3"]
    assert set(statements) == {"SELECT"}
    assert await all_rows(engine) == before
    # What the dry run predicted is what the real run does.
    real = await store.migrate_profiles()
    assert (real.migrated, real.after, real.failed) == (report.migrated, report.after, report.failed)


async def test_forgetting_a_fact_clears_its_key_in_an_old_shaped_profile_too(engine):
    # The v3 code maps the location fact to "home_city"; the v1 profile still calls it "city".
    migrator = StateMigrator.from_steps(
        {1: lambda doc: {"home_city": doc.pop("city", None), **doc}, 2: lambda doc: doc}
    )
    config = LongTermConfig.model_validate({"profile": {"version": 3, "mappings": {"location": "home_city"}}})
    store = LongTermStore(engine, config, profile_migrator=migrator)
    outcome = await store.add_facts(
        "ann", [FactCandidate(attribute="location", value="Paris", cardinality="one")]
    )
    async with engine.begin() as conn:  # as if the profile had been written by the v1 code
        await conn.execute(
            profiles.update()
            .where(profiles.c.user_id == "ann")
            .values(document={"city": "Paris", "name": "Ann"}, schema_version=1)
        )

    await store.forget_fact("ann", outcome.fact_ids[0])

    profile = await store.get_profile("ann")
    assert profile.document == {"name": "Ann"}
    assert profile.schema_version == 3
