"""PostgreSQL plans the library's prepared statements once per connection (long_term.generic_plans,
on by default), and the statements whose plan depends on their values are planned for them.

With PostgreSQL's default ``plan_cache_mode = auto``, a statement whose first calls were for a
user with few rows can keep a custom plan, planned again on every call (0.3 ms a load here).
PostgreSQL counts the plans of each prepared statement in ``pg_prepared_statements``, which is
what these tests read; the plans themselves are read with auto_explain (which a superuser may load
into a session).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers import unique
from langgraph.store.base import PutOp

from memory_tiers import FactCandidate, MemoryManager

pytestmark = pytest.mark.postgres

LOADS = 12


def _config(postgres_url: str, tmp_path: Any, **long_term: Any) -> dict[str, Any]:
    # One pooled connection, so every load prepares and runs its statement on it.
    return {
        "data_dir": str(tmp_path / "data"),
        "long_term": {"url": postgres_url, "pool_size": 1, "max_overflow": 0, **long_term},
    }


async def _prepared_plans(engine: Any, statement_start: str) -> tuple[int, int]:
    """The (generic, custom) plans of the prepared statements starting with ``statement_start``
    on the engine's one pooled connection."""
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        if driver.get_server_version() < (14,):
            pytest.skip("pg_prepared_statements counts plans from PostgreSQL 14 on")
        rows = await driver.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE $1",
            statement_start.replace("_", "\\_") + "%",
        )
    assert rows, f"no statement {statement_start!r} was prepared on the pooled connection"
    return sum(r["generic_plans"] for r in rows), sum(r["custom_plans"] for r in rows)


async def _load_plans(manager: MemoryManager) -> tuple[int, int]:
    """The (generic, custom) plans PostgreSQL made for the load's SELECT, after LOADS loads of a
    user with no facts."""
    user = unique("newcomer")
    for turn in range(LOADS):
        await manager.long_term.load_context(user, f"{user}-thread", f"what do I like, turn {turn}?")
    return await _prepared_plans(manager.long_term_store.engine, "SELECT CAST(mt_profiles.document AS TEXT)")


async def test_by_default_the_load_is_planned_once_not_on_every_call(postgres_url, tmp_path):
    async with MemoryManager(_config(postgres_url, tmp_path)) as manager:
        generic, custom = await _load_plans(manager)
    assert custom == 0
    assert generic >= LOADS


async def test_without_generic_plans_postgres_plans_the_load_anew_at_least_five_times(postgres_url, tmp_path):
    async with MemoryManager(_config(postgres_url, tmp_path, generic_plans=False)) as manager:
        _, custom = await _load_plans(manager)
    # Under `auto` PostgreSQL plans at least the first five calls of a statement each anew
    # (then keeps doing so if the custom plans look cheaper, as they do for a user with few rows
    # in a table with many): the control that shows what the first test counts.
    assert custom >= 5


async def test_the_setting_outlives_the_pools_rollback_on_check_in(postgres_url, tmp_path):
    """It is a SET once connected (PgBouncer refuses it as a startup parameter), so a check-in's
    rollback must not undo it."""
    async with MemoryManager(_config(postgres_url, tmp_path)) as manager:
        engine = manager.long_term_store.engine
        for _ in range(3):  # the same pooled connection, checked in and out again
            async with engine.connect() as conn:
                driver = (await conn.get_raw_connection()).driver_connection
                assert await driver.fetchval("SHOW plan_cache_mode") == "force_generic_plan"


async def test_the_sweep_and_retentions_idle_scan_are_planned_for_their_cutoff(postgres_url, tmp_path):
    """Under generic plans a cutoff's range is planned for a third of the table, which may scan
    all of it: these run in the background, one round trip more buys a plan for the value."""
    async with MemoryManager(_config(postgres_url, tmp_path)) as manager:
        engine = manager.long_term_store.engine
        for _ in range(2):
            await manager.store.sweep_expired()
            await manager.long_term.registry.idle(
                namespaces=None, exclude=[], before=datetime.now(UTC), limit=10
            )
        assert await _prepared_plans(engine, "DELETE FROM mt_store_items") == (0, 2)
        assert await _prepared_plans(engine, "SELECT mt_threads.") == (0, 2)
        # The statements after them on the connection are planned once again.
        assert (await _load_plans(manager))[1] == 0


async def test_a_generic_plan_bounds_a_prefix_search_by_the_prefix_and_filters_on_bound_values(
    postgres_url, tmp_path
):
    """The prefix is an equality and a bytewise range, which a plan made before the values are
    known can use, once PostgreSQL has statistics that say a user holds many items; a LIKE
    pattern it cannot (it only filters the user's items: here, mostly todos). A filter's values
    are bound as jsonb: a cast of a bound text would be parsed again on every row it filters."""
    async with MemoryManager(_config(postgres_url, tmp_path)) as manager:
        store = manager.store.for_user(unique("user"))
        for namespace in [("notes",), ("notes", "music"), ("notes-old",)]:
            await store.aput(namespace, "k", {"n": 1})
        await store.abatch([PutOp(("todo",), f"k{i}", {"n": i}) for i in range(1000)])
        async with manager.long_term_store.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            logged: list[str] = []
            driver.add_log_listener(lambda _, message: logged.append(message.message))
            await driver.execute(
                "ANALYZE mt_store_items; LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                "SET client_min_messages = log; SET enable_seqscan = off"  # an index scan, then
            )
        try:
            found = await store.asearch(("notes",), filter={"n": 1})
            assert sorted(item.namespace for item in found) == [("notes",), ("notes", "music")]
        finally:
            async with manager.long_term_store.engine.connect() as conn:
                await (await conn.get_raw_connection()).driver_connection.execute("RESET ALL")
    [plan] = [message for message in logged if "FROM mt_store_items" in message]
    exact = r"Index Cond: .*user_id.* AND \(namespace = \(\$\d+\)"
    below = r"Index Cond: .*user_id.* AND \(namespace >= \(\$\d+\).* AND \(namespace < \(\$\d+\)"
    assert re.search(exact, plan) and re.search(below, plan), plan
    [filtered] = [line for line in plan.splitlines() if "Filter:" in line]
    assert re.search(r"\(value -> \(\$\d+\)::text\) = \$\d+\)", filtered), filtered


@pytest.mark.parametrize(("users", "observations"), [(1, 210), (20, 100)])
async def test_a_saves_replay_check_probes_its_keys_not_the_users_history(
    fresh_postgres_url, tmp_path, users, observations
):
    """In ``mt_consolidate`` the replay check finds a turn's observation keys by the
    (user_id, observation_key) index, one probe a candidate, custom plan or generic, even where
    PostgreSQL has no statistics yet (a new database's first minutes, before autovacuum's first
    ANALYZE): there a check of the user's observations could read all of them and filter the
    keys, a cost that grew with the user's history. (How a match is joined to its fact is the
    planner's: on a table of a few hundred facts, a scan of its few pages; from several hundred
    on, a primary-key probe.) The function's own plans are read with auto_explain (nested
    statements), which a superuser may load into a session."""
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
            seen = await driver.fetchval(
                "SELECT observation_key FROM mt_fact_observations WHERE user_id = $1 AND message_id = 'm7'",
                user,
            )
            new_id = str(uuid.uuid4())
            turn = json.dumps([_candidate(str(uuid.uuid4()), "t7", seen), _candidate(new_id, "new", "k:new")])
            logged: list[str] = []
            driver.add_log_listener(lambda _, message: logged.append(message.message))
            await driver.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                "SET auto_explain.log_nested_statements = on; SET auto_explain.log_analyze = on; "
                "SET client_min_messages = log"
            )
            plans = {}
            for mode in ("force_custom_plan", "force_generic_plan"):
                await driver.execute(f"SET plan_cache_mode = {mode}")
                logged.clear()
                transaction = driver.transaction()
                await transaction.start()
                landed = await driver.fetchval(
                    "SELECT mt_consolidate($1, now(), true, $2::jsonb)", user, turn
                )
                await transaction.rollback()  # the same data for both plans
                assert landed == [new_id]  # the replayed candidate is left out
                [consolidation] = [message for message in logged if "WITH incoming" in message]
                plans[mode] = consolidation.rpartition("FROM outcome")[2]
            await driver.execute("RESET ALL")
    # As asked: the generic plan compares the user with a parameter, the custom one with its value.
    user_condition = r"\(user_id\)::text = \$\d+"
    assert re.search(user_condition, plans["force_generic_plan"])
    assert not re.search(user_condition, plans["force_custom_plan"])
    for plan in plans.values():
        # The observations' scan and the lines that describe it (up to its plan's next node).
        scan = re.search(r"Index Scan using ix_mt_fact_observations_user_key.*\n((?: +(?! *->).*\n?)*)", plan)
        assert scan, plan
        assert re.search(
            r"Index Cond: .*user_id.* AND .*observation_key\)::text = c\w*\.observation_key", scan[1]
        )
        assert "Rows Removed by Filter" not in scan[1], plan


def _candidate(fact_id: str, value: str, observation_key: str) -> dict[str, Any]:
    """A candidate row as `consolidate` sends it to mt_consolidate."""
    return {
        "id": fact_id,
        "subject": "user",
        "attribute": "likes",
        "value": value,
        "value_norm": value,
        "cardinality": "many",
        "confidence": 0.8,
        "thread_id": "api",
        "checkpoint_id": None,
        "message_id": "m",
        "flagged": False,
        "embedding": None,
        "search_text": f" user likes {value} ",
        "observation_key": observation_key,
    }
