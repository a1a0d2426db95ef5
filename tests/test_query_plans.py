"""With long_term.generic_plans, PostgreSQL plans the library's prepared statements once per
connection.

With PostgreSQL's default ``plan_cache_mode = auto``, a statement whose first calls were for a
user with few rows can keep a custom plan, planned again on every call (0.3 ms a load here).
PostgreSQL counts the plans of each prepared statement in ``pg_prepared_statements``, which is
what these tests read.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from helpers import unique

from memory_tiers import FactCandidate, MemoryManager
from memory_tiers.long_term.consolidate import _replay_check, _seen_keys

pytestmark = pytest.mark.postgres

LOADS = 12


def _config(postgres_url: str, tmp_path: Any, **long_term: Any) -> dict[str, Any]:
    # One pooled connection, so every load prepares and runs its statement on it.
    return {
        "data_dir": str(tmp_path / "data"),
        "long_term": {"url": postgres_url, "pool_size": 1, "max_overflow": 0, **long_term},
    }


async def _load_plans(manager: MemoryManager) -> tuple[int, int]:
    """The (generic, custom) plans PostgreSQL made for the load's SELECT, after LOADS loads of a
    user with no facts."""
    user = unique("newcomer")
    for turn in range(LOADS):
        await manager.long_term.load_context(user, f"{user}-thread", f"what do I like, turn {turn}?")
    async with manager.long_term_store.engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        if driver.get_server_version() < (14,):
            pytest.skip("pg_prepared_statements counts plans from PostgreSQL 14 on")
        rows = await driver.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE 'SELECT CAST(mt_profiles.document AS TEXT)%'"
        )
    assert rows, "the load's SELECT was not prepared on the pooled connection"
    return sum(r["generic_plans"] for r in rows), sum(r["custom_plans"] for r in rows)


async def test_with_generic_plans_the_load_is_planned_once_not_on_every_call(postgres_url, tmp_path):
    async with MemoryManager(_config(postgres_url, tmp_path, generic_plans=True)) as manager:
        generic, custom = await _load_plans(manager)
    assert custom == 0
    assert generic >= LOADS


async def test_by_default_postgres_plans_the_load_anew_at_least_five_times(postgres_url, tmp_path):
    async with MemoryManager(_config(postgres_url, tmp_path)) as manager:
        _, custom = await _load_plans(manager)
    # Under `auto` PostgreSQL plans at least the first five calls of a statement each anew
    # (then keeps doing so if the custom plans look cheaper, as they do for a user with few rows
    # in a table with many): the control that shows what the first test counts.
    assert custom >= 5


async def test_the_setting_outlives_the_pools_rollback_on_check_in(postgres_url, tmp_path):
    """It is a SET once connected (PgBouncer refuses it as a startup parameter), so a check-in's
    rollback must not undo it."""
    async with MemoryManager(_config(postgres_url, tmp_path, generic_plans=True)) as manager:
        engine = manager.long_term_store.engine
        for _ in range(3):  # the same pooled connection, checked in and out again
            async with engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"


def _literal(value: Any) -> str:
    """``value`` as SQL text, for EXECUTE's arguments (test data only)."""
    if value is None:
        return "NULL"
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


@pytest.mark.parametrize(("users", "observations"), [(1, 210), (20, 100)])
async def test_a_saves_replay_check_probes_its_keys_not_the_users_history(
    fresh_postgres_url, tmp_path, users, observations
):
    """The replay check finds a turn's observation keys by the (user_id, observation_key) index,
    custom plan or generic, even where PostgreSQL has no statistics yet (a new database's first
    minutes, before autovacuum's first ANALYZE): there `observation_key = ANY(:keys)` was a
    filter on all of the user's observations, a cost that grew with the user's history. And its
    generic plan costs what a custom one does, so PostgreSQL keeps one instead of planning every
    save anew. (How the matches are joined to their facts is the planner's: on a table of a few
    hundred facts, a hash of all of them; from several hundred on, a primary-key probe each.)"""
    async with MemoryManager(_config(fresh_postgres_url, tmp_path)) as manager:
        store = manager.long_term_store
        ids = [unique("user") for _ in range(users)]
        for user in ids:
            for start in range(0, observations, 100):
                candidates = [
                    FactCandidate(attribute="likes", value=f"t{i}", message_id=f"m{i}")
                    for i in range(start, min(start + 100, observations))
                ]
                await store.add_facts(user, candidates, idempotency_key=f"seeded{start}")
        user = ids[0]
        async with store.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            if driver.get_server_version() < (14,):
                pytest.skip("pg_prepared_statements counts plans from PostgreSQL 14 on")
            seen = await driver.fetchval(
                "SELECT observation_key FROM mt_fact_observations WHERE user_id = $1 AND message_id = 'm7'",
                user,
            )
            slots, keys = _seen_keys("postgresql", [seen, "turn:never-seen"])
            statement = _replay_check("postgresql", slots)
            sql, args = store._direct.bound(statement, {"lock_user": user, "seen_user": user, **keys})
            assert [r["value_norm"] for r in await driver.fetch(sql, *args)] == ["t7"]
            await driver.execute(f"PREPARE replay_check AS {sql}")
            plans = {}
            for mode in ("force_custom_plan", "force_generic_plan"):
                await driver.execute(f"SET plan_cache_mode = {mode}")
                explain = f"EXPLAIN (ANALYZE) EXECUTE replay_check({', '.join(map(_literal, args))})"
                plans[mode] = "\n".join(r[0] for r in await driver.fetch(explain))
            await driver.execute("RESET plan_cache_mode")
            await driver.execute("DEALLOCATE replay_check")
            for _ in range(LOADS):
                await driver.fetch(sql, *args)
            [generic] = await driver.fetch(
                "SELECT generic_plans FROM pg_prepared_statements WHERE statement = $1", sql
            )
    # As asked: the generic plan compares the user with a parameter, the custom one with its value.
    user_condition = r"\(user_id\)::text = \(\$\d+\)::text"
    assert re.search(user_condition, plans["force_generic_plan"])
    assert not re.search(user_condition, plans["force_custom_plan"])
    for plan in plans.values():
        assert re.search(r"Index Cond: .*user_id.* AND .*observation_key", plan), plan
        assert "Rows Removed by Filter" not in plan, plan
    assert generic["generic_plans"] > 0
