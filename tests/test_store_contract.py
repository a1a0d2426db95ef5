"""The LangGraph store contract, run on LangGraph's `InMemoryStore` and on `SqlStore`.

`InMemoryStore` is the reference: every test parametrized over ``store`` passes on it, which
shows the tests describe LangGraph's semantics rather than ours. `SqlStore` runs on SQLite (a
file) and on PostgreSQL (this run's database), each test as a user of its own. TTL cases
(InMemoryStore has no TTLs), dotted filter keys (newer than the installed InMemoryStore) and
SqlStore's own guarantees (strict validation, ordering, TTL bookkeeping, sweeping, the sync
bridge) use ``sql_store``.
Time is a fake clock, never a sleep.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import migrated, unique
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)
from langgraph.store.memory import InMemoryStore
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from memory_tiers.bridge import LoopBridge
from memory_tiers.config import IdKeysConfig, StoreConfig
from memory_tiers.errors import ConfigError, InvalidIdentifierError, UsageError
from memory_tiers.long_term.engine import normalize_sql_url
from memory_tiers.long_term.schema import store_items
from memory_tiers.store import (
    InvalidFilterError,
    InvalidStoreKeyError,
    InvalidStoreNamespaceError,
    InvalidStoreValueError,
    SqlStore,
    StoreArgumentError,
    UnsupportedFilterOperatorError,
)

# -- backends -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return migrated(f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('store') / 'long_term.db'}")


@pytest.fixture(scope="session")
def postgres_store_url(postgres_url: str) -> str:
    return migrated(normalize_sql_url(postgres_url))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """None for InMemoryStore, else the migrated database URL."""
    if request.param == "memory":
        return None
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture(params=["sqlite", "postgres"])
def sql_backend(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of this test's own (for sweeps, which touch every user's rows)."""
    if request.param == "sqlite":
        return migrated(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    return migrated(normalize_sql_url(request.getfixturevalue("fresh_postgres_url")))


class FakeClock:
    """The store's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_store(engine: AsyncEngine, clock: FakeClock, **config: Any) -> SqlStore:
    store = SqlStore(engine, StoreConfig(**config), ids=IdKeysConfig()).for_user(unique("user"))
    store.clock = clock
    return store


@pytest.fixture
async def engine(sql_backend: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sql_backend)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(backend: str | None, clock: FakeClock) -> AsyncIterator[BaseStore]:
    if backend is None:
        yield InMemoryStore()
        return
    engine = create_async_engine(backend)
    try:
        yield make_store(engine, clock)
    finally:
        await engine.dispose()


@pytest.fixture
def sql_store(engine: AsyncEngine, clock: FakeClock) -> SqlStore:
    return make_store(engine, clock)


async def put_all(store: BaseStore, entries: list[tuple[tuple[str, ...], str, dict[str, Any]]]) -> None:
    for namespace, key, value in entries:
        await store.aput(namespace, key, value)


# -- batches ------------------------------------------------------------------------------


async def test_batch_returns_results_in_op_order(store):
    await store.aput(("test", "foo"), "key1", {"data": "value1"})
    await store.aput(("test", "bar"), "key2", {"data": "value2"})

    results = await store.abatch(
        [
            GetOp(("test", "foo"), "key1"),
            PutOp(("test", "bar"), "key2", {"data": "value2"}),
            SearchOp(("test",), filter={"data": "value1"}, limit=10, offset=0),
            ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
            GetOp(("test",), "key3"),
        ]
    )
    assert isinstance(results[0], Item)
    assert (results[0].namespace, results[0].key, results[0].value) == (
        ("test", "foo"),
        "key1",
        {"data": "value1"},
    )
    assert results[1] is None
    assert [item.key for item in results[2]] == ["key1"]
    assert sorted(results[3]) == [("test", "bar"), ("test", "foo")]
    assert results[4] is None

    results = await store.abatch(
        [
            SearchOp(("test",), limit=5),
            GetOp(("test", "bar"), "key2"),
            ListNamespacesOp(limit=5),
            PutOp(("test",), "key3", {"data": "value3"}),
            GetOp(("test", "foo"), "key1"),
        ]
    )
    assert sorted(item.key for item in results[0]) == ["key1", "key2"]
    assert results[1].value == {"data": "value2"}
    # Membership only: InMemoryStore also lists ("test",), which the earlier get created empty.
    assert {("test", "bar"), ("test", "foo")} <= set(results[2])
    assert results[3] is None
    assert results[4].value == {"data": "value1"}
    assert (await store.aget(("test",), "key3")).value == {"data": "value3"}


async def test_reads_in_a_batch_see_the_store_before_its_writes(store):
    await store.aput(("docs",), "old", {"v": 1})
    results = await store.abatch(
        [
            PutOp(("docs",), "new", {"v": 2}),
            PutOp(("docs",), "old", None),
            GetOp(("docs",), "new"),
            GetOp(("docs",), "old"),
            SearchOp(("docs",)),
        ]
    )
    assert results[2] is None
    assert results[3].value == {"v": 1}
    assert [item.key for item in results[4]] == ["old"]
    assert await store.aget(("docs",), "old") is None
    assert (await store.aget(("docs",), "new")).value == {"v": 2}


async def test_the_last_write_to_a_key_in_a_batch_wins(store):
    await store.abatch(
        [
            PutOp(("docs",), "a", {"v": 1}),
            PutOp(("docs",), "a", {"v": 2}),
            PutOp(("docs",), "b", {"v": 1}),
            PutOp(("docs",), "b", None),
            PutOp(("docs",), "c", None),
            PutOp(("docs",), "c", {"v": 3}),
        ]
    )
    assert (await store.aget(("docs",), "a")).value == {"v": 2}
    assert await store.aget(("docs",), "b") is None
    assert (await store.aget(("docs",), "c")).value == {"v": 3}


async def test_batch_of_gets_puts_and_deletes(store):
    results = await store.abatch(
        [
            PutOp(("test",), "key1", {"data": "value1"}),
            PutOp(("test",), "key2", {"data": "value2"}),
            PutOp(("test",), "key3", None),
        ]
    )
    assert results == [None, None, None]
    results = await store.abatch(
        [GetOp(("test",), "key1"), GetOp(("test",), "key2"), GetOp(("test",), "key3")]
    )
    assert [r and r.value for r in results] == [{"data": "value1"}, {"data": "value2"}, None]
    assert len(await store.asearch(("test",))) == 2
    assert await store.abatch([]) == []


# -- items ----------------------------------------------------------------------------------


async def test_put_get_update_delete(store):
    namespace = ("test", "documents")
    value = {"title": "Test Document", "content": "Hello, World!", "n": [1, 2.5, None, True, {"é": "ü"}]}
    await store.aput(namespace, "doc1", value)
    item = await store.aget(namespace, "doc1")
    assert (item.namespace, item.key, item.value) == (namespace, "doc1", value)
    for moment in (item.created_at, item.updated_at):
        assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)

    if isinstance(store, SqlStore):
        store.clock.advance(seconds=1)
    await store.aput(namespace, "doc1", {"title": "Updated"})
    updated = await store.aget(namespace, "doc1")
    assert updated.value == {"title": "Updated"}
    assert updated.updated_at >= item.updated_at

    assert await store.aget(("test", "other_documents"), "doc1") is None
    assert await store.aget(("test",), "doc1") is None
    await store.adelete(namespace, "doc1")
    assert await store.aget(namespace, "doc1") is None
    await store.adelete(namespace, "never-existed")  # deleting nothing is fine


async def test_index_arguments_are_accepted_and_ignored_without_an_index(store):
    await store.aput(("docs",), "a", {"text": "x"}, index=False)
    await store.aput(("docs",), "b", {"text": "y"}, index=["text"])
    assert sorted(item.key for item in await store.asearch(("docs",))) == ["a", "b"]


async def test_labels_and_keys_are_stored_verbatim(store):
    namespace = ("ünïcödé", "with space", "quote'\"", "per%cent", "under_score", "*")
    key = "key with 'quotes' and ; semicolons -- and 中文"
    await store.aput(namespace, key, {"ok": True})
    assert (await store.aget(namespace, key)).value == {"ok": True}
    assert [item.key for item in await store.asearch(namespace)] == [key]
    assert await store.alist_namespaces() == [namespace]


# -- namespaces -----------------------------------------------------------------------------

INVALID_LABELS = [("foo.bar",), ("foo", ""), ("foo", 123)]


@pytest.mark.parametrize("namespace", [(), ("the", "thing.about"), ("some", "fun", ""), ("langgraph", "foo")])
async def test_put_refuses_invalid_namespaces(store, namespace):
    with pytest.raises(InvalidNamespaceError):
        await store.aput(namespace, "foo", {"foo": "bar"})
    assert await store.asearch(()) == []


@pytest.mark.parametrize("namespace", INVALID_LABELS)
async def test_every_method_refuses_invalid_labels(store, namespace):
    await store.aput(("foo", "bar"), "key", {"original": True})
    calls = [
        lambda: store.aget(namespace, "key"),
        lambda: store.adelete(namespace, "key"),
        lambda: store.asearch(namespace),
        lambda: store.alist_namespaces(prefix=namespace),
        lambda: store.alist_namespaces(suffix=namespace),
        lambda: store.aput(namespace, "key", {"changed": True}),
    ]
    for call in calls:
        with pytest.raises(InvalidNamespaceError):
            await call()
    assert (await store.aget(("foo", "bar"), "key")).value == {"original": True}


async def test_langgraph_is_only_reserved_as_the_root_label(store):
    doc = {"foo": "bar"}
    namespace = ("foo", "langgraph", "foo")
    await store.aput(namespace, "bar", doc)
    assert (await store.aget(namespace, "bar")).value == doc
    assert (await store.asearch(namespace))[0].value == doc
    await store.adelete(namespace, "bar")
    assert await store.aget(namespace, "bar") is None


NAMESPACES = [
    ("a", "b", "c"),
    ("a", "b", "d", "e"),
    ("a", "b", "d", "i"),
    ("a", "b", "f"),
    ("a", "c", "f"),
    ("b", "a", "f"),
    ("users", "123"),
    ("users", "456", "settings"),
    ("admin", "users", "789"),
]


@pytest.fixture
async def populated(store):
    await put_all(store, [(ns, f"id_{i}", {"data": f"value_{i:02d}"}) for i, ns in enumerate(NAMESPACES)])
    return store


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, sorted(NAMESPACES)),
        (
            {"prefix": ("a", "b")},
            [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f")],
        ),
        ({"suffix": ("f",)}, [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]),
        ({"prefix": ("a",), "suffix": ("f",)}, [("a", "b", "f"), ("a", "c", "f")]),
        ({"prefix": ("a", "b"), "max_depth": 3}, [("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]),
        (
            {"max_depth": 2},
            [("a", "b"), ("a", "c"), ("admin", "users"), ("b", "a"), ("users", "123"), ("users", "456")],
        ),
        ({"max_depth": 1}, [("a",), ("admin",), ("b",), ("users",)]),
        ({"prefix": ("a", "b"), "limit": 2}, [("a", "b", "c"), ("a", "b", "d", "e")]),
        ({"prefix": ("a", "b"), "offset": 2}, [("a", "b", "d", "i"), ("a", "b", "f")]),
        ({"prefix": ("a", "b"), "max_depth": 3, "limit": 1, "offset": 1}, [("a", "b", "d")]),
        ({"prefix": ("a", "*", "f")}, [("a", "b", "f"), ("a", "c", "f")]),
        ({"suffix": ("*", "f")}, [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]),
        ({"prefix": ("users", "*")}, [("users", "123"), ("users", "456", "settings")]),
        ({"suffix": ("*", "settings")}, [("users", "456", "settings")]),
        ({"prefix": ("*", "users"), "suffix": ("*", "settings")}, []),
        ({"prefix": ("*", "*", "*", "*")}, [("a", "b", "d", "e"), ("a", "b", "d", "i")]),
        ({"prefix": ("nonexistent",)}, []),
        ({"prefix": ("users", "123")}, [("users", "123")]),
        ({"prefix": ("user",)}, []),  # whole labels only
        ({"suffix": ("ettings",)}, []),
    ],
)
async def test_list_namespaces(populated, kwargs, expected):
    assert await populated.alist_namespaces(**kwargs) == expected


async def test_list_namespaces_pages_in_sorted_order(store):
    await put_all(
        store, [(("namespace", f"sub_{i:02d}"), f"id_{i:02d}", {"i": i}) for i in reversed(range(20))]
    )
    pages = [await store.alist_namespaces(prefix=("namespace",), limit=5, offset=o) for o in (0, 5, 15, 20)]
    assert pages[0] == [("namespace", f"sub_{i:02d}") for i in range(5)]
    assert pages[1] == [("namespace", f"sub_{i:02d}") for i in range(5, 10)]
    assert pages[2] == [("namespace", f"sub_{i:02d}") for i in range(15, 20)]
    assert pages[3] == []


async def test_namespaces_sort_label_by_label(store):
    # Tuple order, not text order: ("a", "b") < ("a-b",) although "a.b" > "a-b" as text.
    await put_all(store, [(("a-b",), "k", {}), (("a", "b"), "k", {}), (("B",), "k", {}), (("a",), "k", {})])
    assert await store.alist_namespaces() == [("B",), ("a",), ("a", "b"), ("a-b",)]


async def test_list_namespaces_on_an_empty_store(store):
    assert await store.alist_namespaces() == []
    assert await store.alist_namespaces(prefix=("a",), max_depth=2) == []


async def test_like_wildcards_and_case_in_labels_match_literally(store):
    namespaces = [("user_%",), ("user_%", "child"), ("userX%",), ("USER_%",), ("user_%x",)]
    await put_all(store, [(ns, "key", {}) for ns in namespaces])
    assert {item.namespace for item in await store.asearch(())} == set(namespaces)
    assert {item.namespace for item in await store.asearch(("user_%",))} == {("user_%",), ("user_%", "child")}
    assert await store.alist_namespaces(prefix=("user_%", "*")) == [("user_%", "child")]
    assert await store.alist_namespaces(prefix=("user_%",)) == [("user_%",), ("user_%", "child")]
    assert await store.alist_namespaces(suffix=("user_%",)) == [("user_%",)]


async def test_a_prefix_holds_whole_labels_below_it_not_the_texts_that_sort_beside_it(store):
    # "a-b", "a!" and "a" + "\x01" lie between "a" and "a/" bytewise, the range a search is
    # bounded by; "aé" and "a/" just past it. Only the prefix and its descendants match.
    beside = [("a-b",), ("a!",), ("a\x01",), ("aé",), ("a/",), ("é-a",)]
    below = [("a",), ("a", "b"), ("a", "é"), ("a", "-", "c"), ("é",), ("é", "a")]
    await put_all(store, [(ns, "key", {}) for ns in beside + below])
    assert {item.namespace for item in await store.asearch(("a",))} == set(below[:4])
    assert {item.namespace for item in await store.asearch(("é",))} == set(below[4:])
    assert await store.alist_namespaces(prefix=("a",)) == sorted(below[:4])
    assert await store.alist_namespaces(prefix=("é",), max_depth=1) == [("é",)]


# -- search ---------------------------------------------------------------------------------

DOCS = [
    (("test", "docs"), "doc1", {"title": "First Doc", "author": "Alice", "tags": ["important"]}),
    (("test", "docs"), "doc2", {"title": "Second Doc", "author": "Bob", "tags": ["draft"]}),
    (("test", "images"), "img1", {"title": "Image 1", "author": "Alice", "tags": ["final"]}),
    (("testing",), "other", {"title": "Not under test", "author": "Alice", "tags": []}),
]


async def test_search_scopes_by_prefix_and_filters_by_value(store):
    await put_all(store, DOCS)
    keys = lambda items: sorted(item.key for item in items)  # noqa: E731
    assert keys(await store.asearch(("test",))) == ["doc1", "doc2", "img1"]
    assert keys(await store.asearch(())) == ["doc1", "doc2", "img1", "other"]
    docs = await store.asearch(("test", "docs"))
    assert keys(docs) == ["doc1", "doc2"] and {item.namespace for item in docs} == {("test", "docs")}
    alice = await store.asearch(("test",), filter={"author": "Alice"})
    assert keys(alice) == ["doc1", "img1"]
    assert keys(await store.asearch(("test",), filter={"author": "Alice", "title": "Image 1"})) == ["img1"]
    assert keys(await store.asearch(("test",), filter={"tags": ["draft"]})) == ["doc2"]
    assert await store.asearch(("test",), filter={"author": "Carol"}) == []
    assert all(isinstance(item, SearchItem) and item.score is None for item in alice)


async def test_search_pages_one_consistent_order(store):
    await put_all(store, [(("page",), f"k{i:02d}", {"i": i}) for i in range(7)])
    everything = [item.key for item in await store.asearch(("page",), limit=100)]
    assert sorted(everything) == [f"k{i:02d}" for i in range(7)]
    pages = [[item.key for item in await store.asearch(("page",), limit=3, offset=o)] for o in (0, 3, 6, 9)]
    assert [len(page) for page in pages] == [3, 3, 1, 0]
    assert pages[0] + pages[1] + pages[2] == everything
    assert len(await store.asearch(("page",))) == 7  # default limit 10
    assert await store.asearch(("page",), limit=0) == []


async def test_a_query_without_an_index_is_ignored(store):
    await put_all(store, DOCS)
    plain = await store.asearch(("test",), filter={"author": "Alice"})
    queried = await store.asearch(("test",), query="who wrote the first doc?", filter={"author": "Alice"})
    assert [item.key for item in queried] == [item.key for item in plain]
    assert all(item.score is None for item in queried)


SCORES = [("a", 2), ("b", 9), ("c", 10), ("d", 11), ("e", 9.5)]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"$gte": 10}, [10, 11]),  # numeric, not text: "9" >= "10" as text
        ({"$gt": 9}, [9.5, 10, 11]),
        ({"$lt": 10}, [2, 9, 9.5]),
        ({"$lte": 9}, [2, 9]),
        ({"$gt": 2, "$lt": 10}, [9, 9.5]),
        ({"$eq": 10}, [10]),
        ({"$eq": 10.0}, [10]),
        ({"$ne": 9}, [2, 9.5, 10, 11]),
        (11, [11]),
        (9.5, [9.5]),
    ],
)
async def test_numeric_filters_compare_numbers(store, condition, expected):
    await put_all(store, [(("scores",), key, {"score": score}) for key, score in SCORES])
    found = await store.asearch(("scores",), filter={"score": condition})
    assert sorted(item.value["score"] for item in found) == expected


async def test_equality_on_booleans_null_dicts_and_lists(store):
    await put_all(
        store,
        [
            (("kinds",), "t", {"flag": True, "meta": {"lang": "en", "tags": ["a", "b"]}, "gone": None}),
            (("kinds",), "f", {"flag": False, "meta": {"lang": "fr", "tags": ["a"]}}),
            (("kinds",), "s", {"flag": "true", "meta": {"tags": ["a", "b"], "lang": "en"}, "gone": "here"}),
        ],
    )

    async def keys(filter: dict[str, Any]) -> list[str]:
        return sorted(item.key for item in await store.asearch(("kinds",), filter=filter))

    assert await keys({"flag": True}) == ["t"]
    assert await keys({"flag": False}) == ["f"]
    assert await keys({"flag": "true"}) == ["s"]
    assert await keys({"flag": {"$ne": True}}) == ["f", "s"]
    # None matches a null and a missing key alike; $ne None needs a value.
    assert await keys({"gone": None}) == ["f", "t"]
    assert await keys({"gone": {"$ne": None}}) == ["s"]
    assert await keys({"gone": {"$ne": "here"}}) == ["f", "t"]
    # A dict or list matches an equal one; the order of keys does not matter.
    assert await keys({"meta": {"lang": "en", "tags": ["a", "b"]}}) == ["s", "t"]
    assert await keys({"meta": {"$eq": {"tags": ["a"], "lang": "fr"}}}) == ["f"]
    assert await keys({"meta": {"tags": ["b", "a"], "lang": "en"}}) == []


async def test_unsupported_operators_are_refused(store):
    await store.aput(("ops",), "k", {"score": 1})
    for operator in ("$in", "$regex", "$where"):
        with pytest.raises(ValueError, match=operator.replace("$", r"\$")):
            await store.asearch(("ops",), filter={"score": {operator: 1}})


# -- TTL (InMemoryStore has none) -----------------------------------------------------------


async def test_items_expire_and_reads_refresh_their_ttl(sql_store):
    clock = sql_store.clock
    await sql_store.aput(("ttl",), "item", {"foo": "bar"}, ttl=1)
    clock.advance(seconds=50)
    assert await sql_store.aget(("ttl",), "item", refresh_ttl=True) is not None  # now expires at 110 s
    clock.advance(seconds=50)
    assert len(await sql_store.asearch(("ttl",), refresh_ttl=True)) == 1  # now expires at 160 s
    clock.advance(seconds=50)
    assert await sql_store.aget(("ttl",), "item", refresh_ttl=False) is not None  # still 160 s
    clock.advance(seconds=11)
    assert await sql_store.aget(("ttl",), "item") is None
    assert await sql_store.asearch(("ttl",)) == []
    assert await sql_store.alist_namespaces() == []


async def test_refresh_on_read_defaults_to_the_store_config(sql_store):
    assert sql_store.ttl_config["refresh_on_read"] is True
    await sql_store.aput(("ttl",), "item", {"v": 1}, ttl=1)
    sql_store.clock.advance(seconds=50)
    await sql_store.aget(("ttl",), "item")
    sql_store.clock.advance(seconds=50)
    assert await sql_store.aget(("ttl",), "item") is not None


async def test_huge_pages_and_depths_are_just_big(sql_store):
    await sql_store.aput(("a", "b"), "k", {"v": 1})
    assert len(await sql_store.asearch(("a",), limit=2**70)) == 1
    assert await sql_store.asearch(("a",), offset=2**70) == []
    assert await sql_store.alist_namespaces(max_depth=2**40, limit=2**64) == [("a", "b")]


async def test_a_clock_in_another_time_zone_means_the_same_instants(sql_store, clock):
    await sql_store.aput(("tz",), "k", {"v": 1}, ttl=60)
    clock.now = clock.now.astimezone(timezone(timedelta(hours=-8)))  # same instant, other offset
    clock.advance(minutes=59)
    assert await sql_store.aget(("tz",), "k", refresh_ttl=False) is not None
    clock.advance(minutes=2)
    assert await sql_store.aget(("tz",), "k") is None


async def test_items_without_a_ttl_never_expire(sql_store):
    await sql_store.aput(("ttl",), "forever", {"v": 1}, ttl=None)
    sql_store.clock.advance(days=10_000)
    assert (await sql_store.aget(("ttl",), "forever")).value == {"v": 1}


async def test_a_put_replaces_the_ttl(sql_store):
    await sql_store.aput(("ttl",), "item", {"v": 1}, ttl=1)
    await sql_store.aput(("ttl",), "item", {"v": 2}, ttl=None)
    sql_store.clock.advance(minutes=5)
    assert (await sql_store.aget(("ttl",), "item")).value == {"v": 2}


# -- SqlStore: TTL bookkeeping and sweeping -------------------------------------------------


async def test_ttl_config_comes_from_the_store_config(engine, clock):
    store = make_store(
        engine,
        clock,
        default_ttl=timedelta(days=30),
        refresh_on_read=False,
        sweep_interval=timedelta(seconds=30),
    )
    assert store.supports_ttl is True
    assert store.ttl_config == {
        "refresh_on_read": False,
        "omit_expired": True,
        "default_ttl": 30 * 24 * 60,
        "sweep_interval_minutes": 1,
    }
    assert make_store(engine, clock, sweep_interval=None).ttl_config["sweep_interval_minutes"] is None


async def test_default_ttl_and_refresh_setting_apply_to_the_public_methods(engine, clock):
    store = make_store(engine, clock, default_ttl=timedelta(minutes=1), refresh_on_read=False)
    await store.aput(("ttl",), "default", {"v": 1})  # gets the default TTL
    await store.aput(("ttl",), "none", {"v": 1}, ttl=None)  # explicitly none
    await store.aput(("ttl",), "long", {"v": 1}, ttl=timedelta(minutes=10))
    clock.advance(seconds=50)
    await store.aget(("ttl",), "default")  # refresh_on_read is off: no refresh
    await store.asearch(("ttl",))
    clock.advance(seconds=50)
    assert sorted(item.key for item in await store.asearch(("ttl",))) == ["long", "none"]
    await store.aget(("ttl",), "long", refresh_ttl=True)  # asked explicitly: refreshed
    clock.advance(minutes=9.5)
    assert sorted(item.key for item in await store.asearch(("ttl",))) == ["long", "none"]


async def test_expired_rows_stay_invisible_until_swept(sql_store, clock, engine):
    await sql_store.aput(("ttl",), "item", {"v": 1}, ttl=1)
    clock.advance(minutes=2)
    assert await sql_store.aget(("ttl",), "item", refresh_ttl=True) is None  # no resurrection
    assert await sql_store.asearch(()) == []
    assert await sql_store.alist_namespaces() == []
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(store_items.c.key).where(store_items.c.user_id == sql_store.user_id))
        ).all()
    assert [r.key for r in row] == ["item"]  # still there: only a sweep deletes


async def test_sweep_deletes_only_expired_rows_of_every_user(fresh_backend, clock):
    engine = create_async_engine(fresh_backend)
    try:
        alice, bob = make_store(engine, clock), make_store(engine, clock)
        await alice.aput(("s",), "short", {"v": 1}, ttl=1)
        await alice.aput(("s",), "long", {"v": 1}, ttl=60)
        await alice.aput(("s",), "forever", {"v": 1})
        await bob.aput(("s",), "short", {"v": 1}, ttl=2)
        assert await alice.sweep_expired() == 0
        clock.advance(minutes=5)
        assert await alice.sweep_expired() == 2
        assert await alice.sweep_expired() == 0
        async with engine.connect() as conn:
            rows = (await conn.execute(select(store_items.c.user_id, store_items.c.key))).all()
        assert sorted(rows) == sorted([(alice.user_id, "long"), (alice.user_id, "forever")])
    finally:
        await engine.dispose()


async def test_run_sweeper_waits_the_interval_then_sweeps(fresh_backend, clock, monkeypatch):
    engine = create_async_engine(fresh_backend)
    try:
        store = make_store(engine, clock, sweep_interval=timedelta(minutes=5))
        await store.aput(("s",), "short", {"v": 1}, ttl=1)
        slept: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 1:
                clock.advance(seconds=seconds)  # the first interval passes: "short" expires
                return
            raise asyncio.CancelledError  # the manager cancels the task on close

        monkeypatch.setattr("memory_tiers.store.sql_store.asyncio.sleep", fake_sleep)
        with pytest.raises(asyncio.CancelledError):
            await store.run_sweeper()
        assert slept == [300.0, 300.0]
        async with engine.connect() as conn:
            assert (await conn.execute(select(store_items.c.key))).all() == []
    finally:
        await engine.dispose()


async def test_run_sweeper_does_nothing_without_an_interval_or_on_one_shared_connection(clock, monkeypatch):
    async def no_sleep(seconds: float) -> None:
        raise AssertionError("the sweeper should not have started")

    monkeypatch.setattr("memory_tiers.store.sql_store.asyncio.sleep", no_sleep)
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")  # StaticPool: one connection
    try:
        await make_store(engine, clock).run_sweeper()
        await make_store(engine, clock, sweep_interval=None).run_sweeper()
    finally:
        await engine.dispose()


async def test_a_refresh_never_overrides_a_newer_ttl(sql_store, clock, engine):
    await sql_store.aput(("ttl",), "item", {"v": 1}, ttl=1)
    expires = clock.now + timedelta(days=1)
    async with engine.begin() as conn:  # a concurrent put gave the item a new TTL after our read
        await conn.execute(
            update(store_items)
            .where(store_items.c.user_id == sql_store.user_id)
            .values(ttl_minutes=24 * 60, expires_at=expires)
        )
    batch = sql_store._plan([])
    batch.refresh[("ttl", "item")] = 1.0  # what the read saw
    async with engine.begin() as conn:
        await sql_store._write(conn, sql_store.user_id, clock.now, batch)
    clock.advance(hours=2)
    assert await sql_store.aget(("ttl",), "item", refresh_ttl=False) is not None


# -- SqlStore: timestamps and order ---------------------------------------------------------


async def test_updates_keep_created_at_and_move_updated_at(sql_store, clock):
    await sql_store.aput(("t",), "k", {"v": 1})
    created = clock.now
    clock.advance(minutes=3)
    await sql_store.aput(("t",), "k", {"v": 2})
    item = await sql_store.aget(("t",), "k")
    assert (item.created_at, item.updated_at) == (created, clock.now)


async def test_search_returns_the_most_recently_updated_first(sql_store, clock):
    for key in ("a", "b", "c"):
        await sql_store.aput(("order",), key, {"k": key})
        clock.advance(seconds=1)
    await sql_store.aput(("order",), "a", {"k": "a2"})
    assert [i.key for i in await sql_store.asearch(("order",))] == ["a", "c", "b"]
    # Ties (one batch, one timestamp) break by namespace, then key.
    clock.advance(seconds=1)
    await sql_store.abatch(
        [PutOp(("order", "z"), "y", {}), PutOp(("order", "y"), "z", {}), PutOp(("order", "y"), "a", {})]
    )
    found = await sql_store.asearch(("order",), limit=3)
    assert [(i.namespace, i.key) for i in found] == [
        (("order", "y"), "a"),
        (("order", "y"), "z"),
        (("order", "z"), "y"),
    ]


# -- SqlStore: filters beyond the reference -------------------------------------------------


async def test_dotted_filter_keys_reach_nested_values(sql_store):
    store = sql_store
    await store.aput(("docs",), "deep", {"user": {"access-level": "nested", "score": 7}})
    await store.aput(("docs",), "flat", {"user": "someone"})
    found = await store.asearch(("docs",), filter={"user.access-level": "nested"})
    assert [item.key for item in found] == ["deep"]
    if isinstance(store, SqlStore):
        assert [i.key for i in await store.asearch(("docs",), filter={"user.score": {"$gte": 7}})] == ["deep"]


async def test_a_numeric_label_names_a_key_never_an_array_index(sql_store):
    await sql_store.aput(("n",), "array", {"items": ["x", "y"]})
    await sql_store.aput(("n",), "object", {"items": {"0": "x"}})
    assert [i.key for i in await sql_store.asearch(("n",), filter={"items.0": "x"})] == ["object"]


async def test_range_operators_compare_strings_as_text_and_skip_other_types(sql_store):
    await put_all(
        sql_store,
        [
            (("mix",), "apple", {"name": "apple", "n": 5}),
            (("mix",), "banana", {"name": "banana", "n": "5"}),
            (("mix",), "zed", {"name": "Zed", "n": True}),
            (("mix",), "none", {"n": None}),
        ],
    )

    async def keys(filter: dict[str, Any]) -> list[str]:
        return sorted(item.key for item in await sql_store.asearch(("mix",), filter=filter))

    assert await keys({"name": {"$gt": "apple"}}) == ["banana"]  # "Zed" < "apple": code points
    assert await keys({"name": {"$lte": "apple"}}) == ["apple", "zed"]
    assert await keys({"n": {"$gte": 1}}) == ["apple"]  # not the string "5", not true
    assert await keys({"n": {"$gte": "1"}}) == ["banana"]
    assert await keys({"n": 5}) == ["apple"]
    assert await keys({"n": "5"}) == ["banana"]
    assert await keys({"n": True}) == ["zed"]
    assert await keys({"n": 1}) == []


async def test_a_dict_filter_is_equality_not_containment(sql_store):
    await sql_store.aput(("d",), "exact", {"meta": {"lang": "en"}})
    await sql_store.aput(("d",), "more", {"meta": {"lang": "en", "draft": True}})
    assert [i.key for i in await sql_store.asearch(("d",), filter={"meta": {"lang": "en"}})] == ["exact"]
    assert sorted(i.key for i in await sql_store.asearch(("d",), filter={"meta.lang": "en"})) == [
        "exact",
        "more",
    ]
    assert await sql_store.asearch(("d",), filter={"meta": {}}) == []


# -- SqlStore: validation at the edge -------------------------------------------------------


async def test_invalid_namespace_errors_are_both_langgraphs_and_ours(sql_store):
    assert issubclass(InvalidStoreNamespaceError, InvalidNamespaceError)
    assert issubclass(InvalidStoreNamespaceError, InvalidIdentifierError)
    # Also where LangGraph's own public methods do the check, sync or async.
    for call in (
        lambda: sql_store.aput(("langgraph",), "k", {}),
        lambda: sql_store.aget(("a.b",), "k"),
        lambda: sql_store.asearch(("",)),
        lambda: sql_store.alist_namespaces(suffix=("a.b",)),
        lambda: asyncio.to_thread(sql_store.put, (), "k", {}),
        lambda: asyncio.to_thread(sql_store.delete, ("a", 1), "k"),
    ):
        with pytest.raises(InvalidStoreNamespaceError):
            await call()


@pytest.mark.parametrize(
    "bad_op",
    [
        GetOp(("foo.bar",), "key"),
        PutOp(("foo", ""), "key", {"changed": True}),
        PutOp(("foo", 1), "key", None),  # type: ignore[arg-type]
        PutOp((), "key", {"v": 1}),
        PutOp("foobar", "key", {"v": 1}),  # type: ignore[arg-type]
        SearchOp(("foo.bar",)),
        ListNamespacesOp((MatchCondition("prefix", ("foo.bar",)),)),
        ListNamespacesOp((MatchCondition("suffix", ("",)),)),
    ],
    ids=lambda op: type(op).__name__,
)
async def test_an_invalid_op_fails_the_whole_batch_before_any_write(sql_store, bad_op):
    await sql_store.aput(("foo", "bar"), "key", {"original": True})
    with pytest.raises(InvalidStoreNamespaceError):
        await sql_store.abatch([PutOp(("valid",), "key", {}), PutOp(("foo", "bar"), "key", None), bad_op])
    assert (await sql_store.aget(("foo", "bar"), "key")).value == {"original": True}
    assert await sql_store.aget(("valid",), "key") is None


@pytest.mark.parametrize(
    ("op", "error"),
    [
        (GetOp(("k",), ""), InvalidStoreKeyError),
        (PutOp(("k",), 5, {"v": 1}), InvalidStoreKeyError),  # type: ignore[arg-type]
        (PutOp(("k",), "nul\x00", {"v": 1}), InvalidStoreKeyError),
        (PutOp(("k",), "k", {"v": math.nan}), InvalidStoreValueError),
        (PutOp(("k",), "k", {"v": [1, math.inf]}), InvalidStoreValueError),
        (PutOp(("k",), "k", {"v": {1: "int key"}}), InvalidStoreValueError),
        (PutOp(("k",), "k", {"v": {1, 2}}), InvalidStoreValueError),
        (PutOp(("k",), "k", {"v": object()}), InvalidStoreValueError),
        (PutOp(("k",), "k", {"v": "nul\x00"}), InvalidStoreValueError),
        (PutOp(("k",), "k", ["not", "a", "dict"]), InvalidStoreValueError),  # type: ignore[arg-type]
        (PutOp(("k",), "k", {"v": 1}, ttl=-1), StoreArgumentError),
        (PutOp(("k",), "k", {"v": 1}, ttl=0), StoreArgumentError),
        (PutOp(("k",), "k", {"v": 1}, ttl=math.nan), StoreArgumentError),
        (PutOp(("k",), "k", {"v": 1}, ttl="5"), StoreArgumentError),  # type: ignore[arg-type]
        (SearchOp(("k",), limit=-1), StoreArgumentError),
        (SearchOp(("k",), offset=-5), StoreArgumentError),
        (ListNamespacesOp(max_depth=0), StoreArgumentError),
        (ListNamespacesOp(limit=-1), StoreArgumentError),
        (ListNamespacesOp((MatchCondition("middle", ("a",)),)), StoreArgumentError),  # type: ignore[arg-type]
        ("not an op", StoreArgumentError),
    ],
)
async def test_bad_arguments_raise_typed_errors(sql_store, op, error):
    with pytest.raises(error):
        await sql_store.abatch([op])
    assert await sql_store.asearch(()) == []


@pytest.mark.parametrize(
    "filter",
    [
        {"a b": 1},
        {"a..b": 1},
        {"": 1},
        {".a": 1},
        {"a'); DROP TABLE mt_store_items; --": 1},
        {"$.a": 1},
        {"x" * 65: 1},
        {".".join(["a"] * 17): 1},
        {5: 1},
        {"a": {"$gt": [1]}},
        {"a": {"$lt": None}},
        {"a": {"$gte": True}},
        {"a": math.nan},
        {"a": {"$eq": math.inf}},
        {"a": {"b c": 1}},  # keys inside dict values follow the key rule too
        {"a": object()},
        ["not", "a", "dict"],
    ],
)
async def test_malformed_filters_raise_invalid_filter_error(sql_store, filter):
    await sql_store.aput(("f",), "k", {"a": 1})
    with pytest.raises(InvalidFilterError):
        await sql_store.asearch(("f",), filter=filter)


@pytest.mark.parametrize("operator", ["$in", "$nin", "$regex", "$exists", "$where", "gt", "$or"])
async def test_unsupported_operators_name_the_operator(sql_store, operator):
    # Refused even on an empty store: the filter is compiled before any query runs.
    with pytest.raises(UnsupportedFilterOperatorError) as raised:
        await sql_store.asearch(("f",), filter={"a": {"$eq": 1, operator: 1}})
    assert raised.value.operator == operator
    assert operator in str(raised.value)


async def test_a_huge_filter_is_refused(sql_store):
    with pytest.raises(InvalidFilterError, match="too large"):
        await sql_store.asearch(("f",), filter={f"k{i}": i for i in range(100)})


async def test_an_index_config_is_refused(engine):
    with pytest.raises(ConfigError, match="semantic search"):
        SqlStore(engine, StoreConfig(), ids=IdKeysConfig(), index={"dims": 3, "embed": "fake"})


async def test_for_user_validates_the_id(sql_store):
    for bad in ("", "a b", "x" * 200, "{tag}", None):
        with pytest.raises(InvalidIdentifierError):
            sql_store.for_user(bad)  # type: ignore[arg-type]


# -- SqlStore: round trips ------------------------------------------------------------------


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "mt_store_items" in statement:
            seen.append(statement.split()[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_batch_costs_one_statement_per_kind_of_work(sql_store, statements):
    await sql_store.abatch([PutOp(("rt",), f"k{i}", {"i": i}, ttl=5) for i in range(40)])
    assert statements == ["INSERT"]
    statements.clear()
    ops: list[Any] = [GetOp(("rt",), f"k{i}") for i in range(40)]
    ops += [PutOp(("rt",), f"k{i}", None) for i in range(10)] + [PutOp(("rt",), "new", {"v": 1})]
    results = await sql_store.abatch(ops)
    assert all(isinstance(item, Item) for item in results[:40])
    # One SELECT for 40 gets, one UPDATE refreshing 40 TTLs, one DELETE, one INSERT.
    assert statements == ["SELECT", "UPDATE", "DELETE", "INSERT"]


# -- SqlStore: the sync API through the loop bridge -----------------------------------------


async def test_sync_methods_run_on_the_bridged_loop(engine, clock):
    bridge = LoopBridge()
    bridge.bind()
    store = SqlStore(engine, StoreConfig(), ids=IdKeysConfig(), bridge=bridge).for_user(unique("user"))
    await asyncio.to_thread(store.put, ("sync",), "k", {"v": 1})
    item = await asyncio.to_thread(store.get, ("sync",), "k")
    assert item.value == {"v": 1} and item.created_at.tzinfo is not None
    assert [i.key for i in await asyncio.to_thread(store.search, ("sync",), filter={"v": 1})] == ["k"]
    assert await asyncio.to_thread(store.list_namespaces) == [("sync",)]
    results = await asyncio.to_thread(store.batch, [GetOp(("sync",), "k"), PutOp(("sync",), "k", None)])
    assert results[0].value == {"v": 1} and results[1] is None
    assert await store.aget(("sync",), "k") is None
    with pytest.raises(InvalidNamespaceError):
        await asyncio.to_thread(store.get, ("a.b",), "k")


async def test_sync_calls_fail_clearly_without_a_usable_bridge(engine):
    user = unique("user")
    no_bridge = SqlStore(engine, StoreConfig(), ids=IdKeysConfig()).for_user(user)
    with pytest.raises(UsageError, match="async"):
        await asyncio.to_thread(no_bridge.get, ("a",), "k")

    bridge = LoopBridge()
    closed = SqlStore(engine, StoreConfig(), ids=IdKeysConfig(), bridge=bridge).for_user(user)
    with pytest.raises(UsageError, match="not open"):
        await asyncio.to_thread(closed.get, ("a",), "k")

    bridge.bind()
    with pytest.raises(UsageError, match="ainvoke"):
        closed.get(("a",), "k")  # on the bridged loop itself: would deadlock, so refused
