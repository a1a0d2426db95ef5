"""Injection fuzz: hostile ids, namespaces, keys, filters and values into every public entry point.

Ids, namespaces, metadata and filter keys and operators are drawn by hypothesis from text rich in
SQL, LIKE/GLOB and Redis metacharacters (quotes, ``;``, ``--``, ``*``, ``?``, ``[``, ``{}``,
``%``, ``\\x00``, newlines), long strings and arbitrary unicode. Each call must raise a typed
validation error of memory_tiers or return nothing; afterwards the SQL schema (every table and
column, SQLite and PostgreSQL) is unchanged and the Redis keys under the prefix only grew, with
the shapes the key builder makes. Hostile *values* (1 MB strings, 1000-deep nesting, NaN and
infinities, lone surrogates, NUL) in session data, profile patches, store values, thread metadata
and fact values round-trip exactly or are refused with a typed error: never stored half, never a driver error.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import inspect

from memory_tiers import BackendError, FactCandidate, MemoryManager, MemoryTiersError, NotFoundError

EXAMPLES = 60
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=list(HealthCheck),
)
META = [
    *"'\";-*?[]{}()%_$.:@\\/\x00\n\r\t ",
    "--",
    "/*",
    "*/",
    "' OR '1'='1",
    "; DROP TABLE mt_facts; --",
]
HOSTILE_TEXT = st.one_of(
    st.lists(st.sampled_from([*META, "a", "1", "é", "\u202e", "\U0001f600"]), min_size=0, max_size=12).map(
        "".join
    ),
    st.text(max_size=40),
    st.sampled_from(["a" * 129, "a" * 5000, "x{y}", "{x}", "alice*", "alice?", "a[bc]", "ok:id"]),
)
EXECUTED = {"calls": 0, "refused": 0, "empty": 0}


def typed(exc: BaseException) -> bool:
    """A validation or lookup error of memory_tiers (or pydantic's, on a model's fields), not a
    backend failure in disguise."""
    if isinstance(exc, ValidationError):
        return True
    return isinstance(exc, MemoryTiersError) and not isinstance(exc, BackendError)


def call(manager: MemoryManager, coro: Any) -> Any:
    """Run ``coro``; a typed refusal gives None, anything else untyped fails the test."""
    EXECUTED["calls"] += 1
    try:
        result = manager.run(coro)
    except Exception as exc:
        assert typed(exc), f"untyped {type(exc).__module__}.{type(exc).__name__}: {exc}"
        EXECUTED["refused"] += 1
        return None
    return result


def nothing(result: Any) -> None:
    """An accepted hostile read returns no rows."""
    if result is None:
        return
    if getattr(result, "user_id", None) is not None:
        return  # an empty id means "a new one" (fork): the user's own new thread
    rows = getattr(result, "threads", result)
    assert not rows, f"a hostile read returned {result!r}"
    EXECUTED["empty"] += 1


# -- what must not change ---------------------------------------------------------------------


def schema(manager: MemoryManager, data_dir: Path) -> dict[str, Any]:
    """Every table with its columns: of the long-term database (the working tier's too on
    PostgreSQL) and of every SQLite file under the data directory."""

    def tables(conn: Any) -> dict[str, list[str]]:
        inspector = inspect(conn)
        return {t: sorted(c["name"] for c in inspector.get_columns(t)) for t in inspector.get_table_names()}

    async def long_term() -> dict[str, list[str]]:
        async with manager.long_term.engine.connect() as conn:
            return await conn.run_sync(tables)

    snapshot: dict[str, Any] = {"long_term": manager.run(long_term())}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00":
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                snapshot[path.name] = sorted(conn.execute("SELECT type, name, sql FROM sqlite_master"))
    return snapshot


def redis_keys(manager: MemoryManager) -> set[str]:
    store = manager.session_store

    async def scan() -> set[str]:
        return {key async for key in store.client.scan_iter(match=f"{store.keys.prefix}:*", count=500)}

    return manager.run(scan())


ID = r"[A-Za-z0-9][A-Za-z0-9._:@-]*"


def key_shape(prefix: str) -> re.Pattern[str]:
    p = re.escape(prefix)
    return re.compile(
        rf"{p}:(\{{{ID}\}}:(session:{ID}|session-shadow:{ID}|sessions|forgotten|thread-lock:{ID})"
        rf"|session-owner:\{{{ID}\}}|heads:\{{{ID}\}}|session-expiry)"
    )


# -- ids, namespaces, keys, filters ------------------------------------------------------------


def test_hostile_ids_keys_and_filters_are_refused_or_find_nothing(memory_config, tmp_path):
    EXECUTED.update(calls=0, refused=0, empty=0)
    data_dir = Path(str(memory_config["data_dir"]))
    with MemoryManager(memory_config) as manager:
        alice, sid, tid = unique("alice"), unique("s"), unique("t")
        graph = memory_graph(manager)
        manager.run(graph.ainvoke({"messages": [("user", "I like tea.")]}, turn_config(alice, tid, sid)))
        manager.run(manager.store.for_user(alice).aput(("notes",), "k", {"text": "tea", "n": 1}))
        before_schema, before_keys = schema(manager, data_dir), redis_keys(manager)
        facts_before = manager.run(manager.long_term.list_facts(alice))

        @SETTINGS
        @given(bad=HOSTILE_TEXT, other=HOSTILE_TEXT)
        def fuzz(bad: str, other: str) -> None:
            sessions, threads, lt = manager.sessions, manager.threads, manager.long_term
            # Ids: every id-taking entry point of sessions, threads, users and the store.
            for coro in (
                sessions.get(bad, sid),
                sessions.get(alice, bad),
                sessions.update(alice, bad, {"x": 1}),
                sessions.end(bad, bad),
                sessions.list(bad),
                threads.get(alice, bad),
                threads.get(bad, tid),
                threads.history(alice, tid, before=bad),
                threads.state(alice, tid, bad),
                threads.fork(alice, tid, new_thread_id=bad),
                threads.fork(alice, tid, checkpoint_id=bad),
                threads.delete(bad, tid),
                manager.users.export(bad),
                manager.users.forget(bad),
            ):
                result = call(manager, coro)
                if bad and (not re.fullmatch(ID, bad) or len(bad) > 128):
                    assert result is None, f"a malformed id was accepted: {result!r}"
            # Writes with a hostile id are refused; a hostile namespace is data (alice's own thread).
            if (bad and not re.fullmatch(ID, bad)) or len(bad) > 128:  # ("" means "a new id")
                for coro in (
                    sessions.start(bad, sid),
                    sessions.start(alice, bad, {"x": 1}),
                    threads.create(bad, tid),
                    threads.create(alice, bad),
                ):
                    assert call(manager, coro) is None
            created = call(manager, threads.create(alice, None, namespace=bad))
            if created is not None:
                assert created.namespace == bad and created.user_id == alice
                call(manager, threads.delete(alice, created.thread_id))
            nothing(call(manager, threads.list(alice, metadata={bad: other})))
            nothing(call(manager, threads.list(alice, namespace=bad)))
            nothing(call(manager, threads.list(alice, status=bad)))
            nothing(call(manager, threads.list(alice, cursor=bad)))
            nothing(call(manager, threads.list(bad)))
            # A graph turn with hostile ids in the run config is refused before anything runs.
            for config in (
                turn_config(bad, tid, sid),
                turn_config(alice, bad, sid),
                turn_config(alice, tid, bad),
            ):
                if bad not in (alice, tid, sid):
                    call(manager, graph.ainvoke({"messages": [("user", "hi")]}, config))
            # Long-term reads validate the user id and bind the rest: nothing of alice's comes back.
            nothing(call(manager, lt.list_facts(bad)))
            nothing(call(manager, lt.search_facts(bad, other.replace("\x00", ""))))
            nothing(call(manager, lt.list_archives(bad)))
            # Attributes, subjects and fact ids are bound, not validated: PostgreSQL refuses a NUL
            # in a bound text parameter (a BackendError), so these take NUL-free text.
            text_arg = bad.replace("\x00", "")
            nothing(call(manager, lt.fact_history(alice, text_arg)))
            nothing(call(manager, lt.fact_history(alice, "likes", subject=text_arg)))
            call(manager, lt.forget_fact(alice, text_arg))
            call(manager, lt.search_facts(alice, text_arg))  # free text: any result is alice's own
            # The store: user, namespace labels, keys, filter keys and operators.
            try:
                scoped = manager.store.for_user(bad)
            except Exception as exc:
                assert typed(exc)
                scoped = None
            if scoped is not None and bad != alice:
                nothing(call(manager, scoped.asearch(("notes",))))
            mine = manager.store.for_user(alice)
            nothing(call(manager, mine.asearch((bad,))))
            nothing(call(manager, mine.asearch(("notes", bad))))
            assert call(manager, mine.aget((bad,), "k")) is None
            # (The item is {"text": "tea", "n": 1}: a generated "n" or "tea" is a true match.)
            if bad != "n":
                nothing(call(manager, mine.asearch(("notes",), filter={bad: 1})))
            nothing(call(manager, mine.asearch(("notes",), filter={"text": {bad: other}})))
            if bad != "tea":
                nothing(call(manager, mine.asearch(("notes",), filter={"text": bad})))
            listed = call(manager, mine.alist_namespaces(prefix=(bad,)))
            if bad != "*":  # in namespace conditions "*" is LangGraph's one-label wildcard
                nothing(listed)
            if bad != "k":  # alice's own key: deleting it is what it should do
                call(manager, mine.adelete(("notes",), bad))
            if bad not in ("notes",):
                call(manager, mine.adelete((bad,), "k"))

        fuzz()
        # Nothing of alice's was touched, no table or column changed, keys only grew in shape.
        assert manager.run(manager.store.for_user(alice).aget(("notes",), "k")).value == {
            "text": "tea",
            "n": 1,
        }
        assert manager.run(manager.long_term.list_facts(alice)) == facts_before
        assert manager.run(manager.threads.get(alice, tid)).user_id == alice
        assert schema(manager, data_dir) == before_schema
        after_keys = redis_keys(manager)
        assert before_keys <= after_keys
        shape = key_shape(manager.session_store.keys.prefix)
        assert [k for k in after_keys if not shape.fullmatch(k)] == []
    assert EXECUTED["refused"] > EXAMPLES
    print(f"injection fuzz: {EXECUTED}")


# -- hostile values -------------------------------------------------------------------------------


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for n in range(levels):
        value = {"d": value} if n % 2 else [value]
    return value


HOSTILE_VALUES: dict[str, Any] = {
    "1 MB string": "x" * (1 << 20),
    "1 MB of unicode": "é\U0001f600" * (1 << 18),
    "1000-deep nesting": deep(1000),
    "NaN": float("nan"),
    "infinity": float("inf"),
    "-infinity": float("-inf"),
    "lone surrogate": "a\ud800b",
    "NUL": "a\x00b",
    "mixed": {"k'; DROP": ["\n", "--", "*", {"{x}": None}], "n": 10**30},
}


def same(left: Any, right: Any) -> bool:
    """Equality that treats NaN as equal to NaN."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


@pytest.mark.parametrize("name", list(HOSTILE_VALUES))
def test_hostile_values_round_trip_exactly_or_are_refused_whole(memory_config, name):
    value = HOSTILE_VALUES[name]
    outcomes: dict[str, str] = {}
    with MemoryManager(memory_config) as manager:
        user = unique("u")

        def attempt(where: str, write: Any, read: Any, stored: Any) -> None:
            try:
                manager.run(write)
            except Exception as exc:
                assert typed(exc), f"{where}: untyped {type(exc).__module__}.{type(exc).__name__}: {exc}"
                outcomes[where] = "refused"
                # Refused whole: nothing of the write is readable.
                with contextlib.suppress(NotFoundError):
                    assert manager.run(read()) in (None, {}, [], "missing")
                return
            assert same(manager.run(read()), stored), f"{where}: stored differently"
            outcomes[where] = "round trip"

        sid = unique("s")

        async def session() -> Any:
            return (await manager.sessions.get(user, sid)).data["v"]

        async def session_or_missing() -> Any:
            try:
                return await session()
            except NotFoundError:
                return "missing"

        attempt("session data", manager.sessions.start(user, sid, {"v": value}), session_or_missing, value)

        async def profile() -> Any:
            return (await manager.long_term.get_profile(user)).document.get("v", "missing")

        attempt("profile patch", manager.long_term.patch_profile(user, {"v": value}), profile, value)

        async def item() -> Any:
            found = await manager.store.for_user(user).aget(("notes",), "k")
            return None if found is None else found.value["v"]

        attempt("store value", manager.store.for_user(user).aput(("notes",), "k", {"v": value}), item, value)

        tid = unique("t")

        async def thread_metadata() -> Any:
            return (await manager.threads.get(user, tid)).metadata["v"]

        attempt(
            "thread metadata",
            manager.threads.create(user, tid, metadata={"v": value}),
            thread_metadata,
            value,
        )

        if isinstance(value, str):

            async def fact() -> Any:
                values = [f.value for f in await manager.long_term.list_facts(user)]
                return values[0] if values else "missing"

            try:
                candidate = FactCandidate(attribute="likes", value=value)
            except ValidationError:
                outcomes["fact value"] = "refused"  # longer than a fact value may be
            else:
                attempt("fact value", manager.long_term.add_facts(user, [candidate]), fact, value)
        manager.run(manager.users.forget(user))
    print(f"hostile value {name!r}: {json.dumps(outcomes)}")
    assert outcomes


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
_ = uuid  # ids come from helpers.unique
