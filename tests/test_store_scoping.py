"""Tenant scoping of `SqlStore`: one user's items are invisible and untouchable for another.

The scope is a fixed user (``store.for_user``) or the user of the LangGraph run making the
call; a call with neither is refused. Hostile input in namespaces, keys, filters and ids gives
typed errors or no rows, and the table survives it. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
from helpers import unique
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_tiers.bridge import LoopBridge
from memory_tiers.config import IdKeysConfig, StoreConfig
from memory_tiers.errors import InvalidIdentifierError, UsageError
from memory_tiers.long_term.schema import store_items
from memory_tiers.store import (
    InvalidFilterError,
    InvalidStoreNamespaceError,
    SqlStore,
    UnsupportedFilterOperatorError,
)


@pytest.fixture
async def engine(migrated_sql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_sql_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def bridge() -> LoopBridge:
    """A bridge bound to the test's loop, as the manager binds it when it opens."""
    bridge = LoopBridge()
    bridge.bind()
    return bridge


@pytest.fixture
def store(engine: AsyncEngine, bridge: LoopBridge) -> SqlStore:
    """The store as the manager hands it out: no fixed user."""
    return SqlStore(engine, StoreConfig(), ids=IdKeysConfig(), bridge=bridge)


async def count_rows(engine: AsyncEngine, user_id: str) -> int:
    async with engine.connect() as conn:
        stmt = select(func.count()).select_from(store_items).where(store_items.c.user_id == user_id)
        return (await conn.execute(stmt)).scalar_one()


# -- two users, same namespaces and keys ----------------------------------------------------


async def test_users_never_see_or_touch_each_others_items(store, engine):
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = store.for_user(alice_id), store.for_user(bob_id)
    await alice.aput(("memories",), "home", {"city": "Paris", "secret": "canary-alice"})
    await alice.aput(("memories", "work"), "desk", {"floor": 3})

    assert await bob.aget(("memories",), "home") is None
    assert await bob.asearch(()) == []
    assert await bob.asearch(("memories",), filter={"secret": "canary-alice"}) == []
    assert await bob.alist_namespaces() == []
    assert await bob.alist_namespaces(prefix=("memories",), max_depth=1) == []
    results = await bob.abatch(
        [
            GetOp(("memories",), "home"),
            SearchOp(("memories",)),
            ListNamespacesOp(),
            PutOp(("memories",), "home", None),
        ]
    )
    assert results == [None, [], [], None]  # the delete matched nothing of Alice's

    await bob.adelete(("memories", "work"), "desk")
    await bob.aput(("memories",), "home", {"city": "Rome"})  # Bob's own item, same address
    assert (await alice.aget(("memories",), "home")).value == {"city": "Paris", "secret": "canary-alice"}
    assert (await alice.aget(("memories", "work"), "desk")).value == {"floor": 3}
    assert (await bob.aget(("memories",), "home")).value == {"city": "Rome"}
    assert [i.value["city"] for i in await alice.asearch(("memories",), filter={"city": {"$gte": ""}})] == [
        "Paris"
    ]
    assert await alice.alist_namespaces() == [("memories",), ("memories", "work")]
    assert await bob.alist_namespaces() == [("memories",)]
    # Namespaces never carry the user: what a graph wrote is what it reads back.
    assert all(alice_id not in label for ns in await alice.alist_namespaces() for label in ns)

    await bob.adelete(("memories",), "home")
    assert await alice.aget(("memories",), "home") is not None
    assert await count_rows(engine, alice_id) == 2
    assert await count_rows(engine, bob_id) == 0


async def test_sweeping_is_the_only_cross_user_operation_and_only_deletes_expired_rows(store, engine):
    alice = store.for_user(unique("alice"))
    await alice.aput(("m",), "k", {"v": 1}, ttl=60)
    await store.sweep_expired()  # the unscoped store may sweep: it returns nothing to anyone
    assert (await alice.aget(("m",), "k")).value == {"v": 1}


# -- the scope of a graph run ---------------------------------------------------------------


class State(TypedDict, total=False):
    note: str
    seen: list[str]


class Context(TypedDict, total=False):
    user_id: str


async def remember(state: State, runtime: Runtime[Context]) -> State:
    """Remembers the note under a fixed namespace and key, and reports every note it can see."""
    await runtime.store.aput(("notes",), "latest", {"note": state["note"]})
    return {"seen": [item.value["note"] for item in await runtime.store.asearch(("notes",))]}


def remember_sync(state: State) -> State:
    store = get_store()
    store.put(("notes",), "latest", {"note": state["note"]})
    return {"seen": [item.value["note"] for item in store.search(("notes",))]}


def build(node: Any, store: SqlStore) -> Any:
    builder = StateGraph(State, context_schema=Context)
    builder.add_node("remember", node)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    return builder.compile(store=store)


def as_user(user_id: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user_id}}


async def test_the_runs_user_id_decides_the_scope(store):
    alice, bob = unique("alice"), unique("bob")
    graph = build(remember, store)
    assert (await graph.ainvoke({"note": "alice's plan"}, as_user(alice)))["seen"] == ["alice's plan"]
    assert (await graph.ainvoke({"note": "bob's plan"}, as_user(bob)))["seen"] == ["bob's plan"]
    assert (await store.for_user(alice).aget(("notes",), "latest")).value == {"note": "alice's plan"}
    assert (await store.for_user(bob).aget(("notes",), "latest")).value == {"note": "bob's plan"}


async def test_the_runtime_context_can_name_the_user(store):
    carol = unique("carol")
    graph = build(remember, store)
    out = await graph.ainvoke({"note": "from context"}, context={"user_id": carol})
    assert out["seen"] == ["from context"]
    assert (await store.for_user(carol).aget(("notes",), "latest")).value == {"note": "from context"}


async def test_custom_id_keys_are_honoured(engine, bridge):
    store = SqlStore(engine, StoreConfig(), ids=IdKeysConfig(user="tenant"), bridge=bridge)
    dave = unique("dave")
    graph = build(remember, store)
    await graph.ainvoke({"note": "tenant"}, {"configurable": {"tenant": dave, "user_id": "ignored"}})
    assert (await store.for_user(dave).aget(("notes",), "latest")).value == {"note": "tenant"}


async def test_sync_nodes_and_sync_graphs_go_through_the_bridge(store):
    erin, frank = unique("erin"), unique("frank")
    graph = build(remember_sync, store)
    # graph.invoke from a worker thread, as a sync application does while the manager's loop runs.
    out = await asyncio.to_thread(graph.invoke, {"note": "erin sync"}, as_user(erin))
    assert out["seen"] == ["erin sync"]
    # A sync node inside an async run runs in an executor thread; it reaches the loop the same way.
    out = await graph.ainvoke({"note": "frank async"}, as_user(frank))
    assert out["seen"] == ["frank async"]
    assert (await store.for_user(erin).aget(("notes",), "latest")).value == {"note": "erin sync"}


async def test_a_run_without_a_user_is_refused(store):
    graph = build(remember, store)
    with pytest.raises(UsageError, match="user_id"):
        await graph.ainvoke({"note": "nobody"}, {"configurable": {"thread_id": "t"}})
    with pytest.raises(UsageError, match="for_user"):
        await asyncio.to_thread(build(remember_sync, store).invoke, {"note": "nobody"})


async def test_a_call_outside_a_run_without_a_user_is_refused(store):
    with pytest.raises(UsageError, match=r"for_user\(user_id\)"):
        await store.aget(("notes",), "latest")
    with pytest.raises(UsageError, match=r"for_user\(user_id\)"):
        await store.alist_namespaces()
    with pytest.raises(UsageError, match=r"for_user\(user_id\)"):
        await asyncio.to_thread(store.put, ("notes",), "latest", {"note": "x"})


async def test_a_malformed_user_id_in_the_run_is_refused(store):
    graph = build(remember, store)
    for bad in ("alice' OR '1'='1", "a b", "x" * 129, "{alice}"):
        with pytest.raises(InvalidIdentifierError):
            await graph.ainvoke({"note": "x"}, as_user(bad))


async def test_a_fixed_user_wins_over_the_run(store):
    grace, mallory = unique("grace"), unique("mallory")
    graph = build(remember, store.for_user(grace))
    await graph.ainvoke({"note": "grace's"}, as_user(mallory))
    assert await store.for_user(mallory).aget(("notes",), "latest") is None
    assert (await store.for_user(grace).aget(("notes",), "latest")).value == {"note": "grace's"}


# -- hostile input --------------------------------------------------------------------------

HOSTILE_LABELS = [
    "x'); DROP TABLE mt_store_items; --",
    '"; DELETE FROM mt_store_items; --',
    "%",
    "_",
    "\\",
    "*",
    "[",
    "' OR '1'='1",
]


async def test_hostile_labels_and_keys_are_data_not_sql(store, engine):
    alice_id, bob_id = unique("alice"), unique("bob")
    alice, bob = store.for_user(alice_id), store.for_user(bob_id)
    for label in HOSTILE_LABELS:
        await alice.aput((label,), label, {"label": label})
        await alice.aput((label, "child"), "k", {"label": label})
    await alice.aput(("plain",), "k", {"label": "plain"})
    for label in HOSTILE_LABELS:
        assert (await alice.aget((label,), label)).value == {"label": label}
        assert await bob.aget((label,), label) is None
        # LIKE/GLOB metacharacters match only themselves.
        assert {i.namespace for i in await alice.asearch((label,), limit=50)} == {(label,), (label, "child")}
        if label != "*":  # in list_namespaces conditions "*" is LangGraph's one-label wildcard
            assert await alice.alist_namespaces(prefix=(label,)) == [(label,), (label, "child")]
            assert await alice.alist_namespaces(suffix=(label,)) == [(label,)]
        assert await bob.asearch((label,)) == []
    assert len(await alice.alist_namespaces(limit=100)) == 2 * len(HOSTILE_LABELS) + 1
    assert await count_rows(engine, alice_id) == 2 * len(HOSTILE_LABELS) + 1


async def test_hostile_filters_give_typed_errors_or_no_rows(store, engine):
    alice_id = unique("alice")
    alice, bob = store.for_user(alice_id), store.for_user(unique("bob"))
    await alice.aput(("m",), "k", {"a": 1, "s": "text"})
    for key in ("a' OR 1=1 --", "a) OR (1=1", "a;drop", "$.a", "a[0]", '"a"', "a\x00"):
        with pytest.raises(InvalidFilterError):
            await alice.asearch(("m",), filter={key: 1})
    with pytest.raises(InvalidFilterError):  # not an operator: a dict to compare, with a bad key
        await alice.asearch(("m",), filter={"a": {"OR 1=1": 1}})
    for operator in ("$gt; DROP TABLE mt_store_items", "$or", "$where", "$ne'"):
        with pytest.raises(UnsupportedFilterOperatorError):
            await alice.asearch(("m",), filter={"a": {operator: 1}})
    for value in ("' OR '1'='1", "1; DROP TABLE mt_store_items", "%", "_"):
        assert await alice.asearch(("m",), filter={"s": value}) == []
        assert await alice.asearch(("m",), filter={"s": {"$gt": value}, "a": 2}) == []
    assert await bob.asearch(("m",), filter={"a": 1}) == []
    with pytest.raises(InvalidStoreNamespaceError):
        await alice.asearch(("m.n",))
    with pytest.raises(InvalidIdentifierError):
        store.for_user("alice' OR '1'='1")
    # Nothing was dropped or deleted.
    assert [i.key for i in await alice.asearch(("m",), filter={"a": 1})] == ["k"]
    assert await count_rows(engine, alice_id) == 1
