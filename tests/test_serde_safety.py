"""Safe deserialization: a crafted checkpoint never runs code when a thread is loaded.

Each test writes a hostile payload straight into a backend's storage (the SQLite ``checkpoints``
table, PostgreSQL ``checkpoint_blobs``, the memory saver's dicts, the Redis Stack JSON docs),
then loads the thread through ``manager.checkpointer`` and a graph's ``aget_state``. The payload
would create a canary file if executed; it must not, and the load either yields the payload as
plain data or raises `UnsafeCheckpointError`. Each test then swaps in a permissive LangGraph
serializer and loads again to show the canary does appear: the payload was live and reached
the deserializer, so the first assertion means something.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pickle
import shlex
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import ormsgpack
import pytest
from helpers import unique
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command, Interrupt, Send
from pydantic import BaseModel
from test_working_backends import _working

from memory_tiers import (
    BackendUnavailableError,
    ConfigError,
    MemoryManager,
    MemoryState,
    UnsafeCheckpointError,
)
from memory_tiers.extractors import FactCandidate
from memory_tiers.summarizers.base import ThreadSummary
from memory_tiers.working.serde import (
    allowlist,
    strict_redis_serde,
    strict_serde,
)

MODULE = __name__

# -- hostile types: each creates the file it is given when constructed --------------------


class Detonator:
    """Not on any allowlist; its constructor has a side effect."""

    def __init__(self, path: str) -> None:
        Path(path).touch()


@dataclass
class DataclassDetonator:
    """A dataclass: JsonPlusRedisSerializer calls any dataclass an envelope names."""

    path: str

    def __post_init__(self) -> None:
        Path(self.path).touch()


class PickleBomb:
    """Unpickling it runs a shell command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


# -- allowed user types (listed in working.serde.allowed_modules) -------------------------


class Ticket(BaseModel):
    id: int
    title: str


class Priority(Enum):
    LOW = "low"
    HIGH = "high"


@dataclass
class Note:
    text: str


class State(MemoryState, total=False):
    payload: Any


def _config(tmp_path: Path, working: dict[str, Any], allowed: list[str] | None = None) -> dict[str, Any]:
    if allowed is not None:
        working = {**working, "serde": {"allowed_modules": allowed}}
    return {
        "data_dir": str(tmp_path / "data"),
        "working": working,
        "session": {"url": "memory://"},
        "long_term": {"url": f"sqlite+aiosqlite:///{tmp_path / 'long_term.db'}"},
    }


BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis-stack", marks=pytest.mark.redis_stack),
]


# -- the allowlist ---------------------------------------------------------------------------


def _graph_values() -> dict[str, Any]:
    """What LangChain/LangGraph graphs and memory_tiers put in checkpoints."""
    return {
        "messages": [
            HumanMessage("hi", id="1"),
            AIMessage("", id="2", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "c1"}]),
            ToolMessage("done", tool_call_id="c1", id="3"),
        ],
        "send": Send("node", {"x": 1}),
        "interrupt": Interrupt(value={"question": "ok?"}, id="i1"),
        "command": Command(resume="yes", goto=["agent"]),
        "fact": FactCandidate(subject="user", attribute="name", value="Alice"),
        "summary": ThreadSummary(text="Planned a trip.", topics=["trip"], message_count=2),
        "ticket": Ticket(id=7, title="printer"),
        "note": Note("remember"),
    }


# The Redis saver stores JSON: orjson writes these as plain strings and lists (upstream).
_MSGPACK_ONLY = {
    "priority": Priority.HIGH,
    "when": datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
    "day": date(2024, 5, 1),
    "gap": timedelta(hours=2),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "amount": Decimal("1.10"),
    "tags": {"a", "b"},
}

USER_TYPES = [f"{MODULE}:Ticket", f"{MODULE}:Priority", f"{MODULE}:Note"]


@pytest.mark.parametrize("kind", ["msgpack", "redis"])
def test_the_allowlist_round_trips_what_graphs_store(kind: str) -> None:
    """Messages, Send, Interrupt, Command, memory_tiers' models and the user's listed types come
    back as themselves (datetimes and friends too, on the msgpack savers)."""
    if kind == "redis":
        pytest.importorskip("langgraph.checkpoint.redis")
    keys = allowlist(USER_TYPES)
    serde = strict_redis_serde(keys) if kind == "redis" else strict_serde(keys)
    values = _graph_values() | (_MSGPACK_ONLY if kind == "msgpack" else {})
    loaded = serde.loads_typed(serde.dumps_typed(values))
    for name, value in values.items():
        assert type(loaded[name]) is type(value), name
        assert loaded[name] == value, name


def test_an_unlisted_type_loads_as_its_plain_data() -> None:
    serde = strict_serde(allowlist())
    loaded = serde.loads_typed(serde.dumps_typed({"ticket": Ticket(id=7, title="printer")}))
    assert loaded == {"ticket": {"id": 7, "title": "printer"}}


def test_a_module_entry_allows_every_class_defined_there() -> None:
    keys = allowlist([MODULE])
    assert {(MODULE, "Ticket"), (MODULE, "Note"), (MODULE, "Detonator")} <= keys
    assert ("pydantic", "BaseModel") not in keys  # imported there, not defined there


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("not a path", "working.serde.allowed_modules.0: 'not a path' is not 'package.module:Class'"),
        ("pkg.mod:", "working.serde.allowed_modules.0"),
        ("pkg..mod:Class", "working.serde.allowed_modules.0"),
    ],
)
def test_a_malformed_entry_is_a_config_error_naming_the_key(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MemoryManager({"working": {"backend": "memory", "serde": {"allowed_modules": [entry]}}})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("no_such_module_xyz:Thing", r"allowed_modules.1: cannot import 'no_such_module_xyz'"),
        (f"{MODULE}:Nope", rf"allowed_modules.1: {MODULE} has no 'Nope'"),
        ("os:system", r"allowed_modules.1: 'os:system' is not a class"),
    ],
)
async def test_an_entry_that_names_no_class_fails_the_open(tmp_path: Path, entry: str, message: str) -> None:
    config = _config(tmp_path, {"backend": "memory"}, [f"{MODULE}:Ticket", entry])
    with pytest.raises(ConfigError, match=message):
        async with MemoryManager(config):
            pass


async def test_a_listed_type_round_trips_through_a_graph(tmp_path: Path) -> None:
    """End to end on SQLite: a user's pydantic model in the state comes back as itself."""
    async with MemoryManager(_config(tmp_path, {"backend": "sqlite"}, [f"{MODULE}:Ticket"])) as manager:
        graph = manager.nodes.around(lambda s: {"payload": Ticket(id=1, title="t")}, State).compile(
            checkpointer=manager.checkpointer
        )
        run = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
        await graph.ainvoke({"messages": [HumanMessage("hi")]}, run)
    async with MemoryManager(_config(tmp_path, {"backend": "sqlite"}, [f"{MODULE}:Ticket"])) as manager:
        graph = manager.nodes.around(lambda s: {}, State).compile(checkpointer=manager.checkpointer)
        state = await graph.aget_state({"configurable": {"thread_id": "t1"}})
    assert state.values["payload"] == Ticket(id=1, title="t")


async def test_a_checkpointer_the_user_passes_keeps_its_serializer(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    mine = InMemorySaver()
    serde = mine.serde
    async with MemoryManager(_config(tmp_path, {"backend": "memory"}), checkpointer=mine) as manager:
        assert manager.checkpointer.inner.serde is serde


# -- crafted rows -----------------------------------------------------------------------------


def _ext(code: int, *fields: Any) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, ormsgpack.packb(list(fields)))


def _envelope(name: str, path: Path) -> dict[str, Any]:
    return {"lc": 2, "type": "constructor", "id": [*MODULE.split("."), name], "kwargs": {"path": str(path)}}


# name -> canary -> the stored value: ("pickle", bytes), ("msgpack", Ext) or ("json", envelope)
Vector = Callable[[Path], tuple[str, Any]]
VECTORS: dict[str, Vector] = {
    "pickle": lambda c: ("pickle", pickle.dumps(PickleBomb(c))),
    "ext-class": lambda c: ("msgpack", _ext(2, MODULE, "Detonator", {"path": str(c)})),
    "ext-function": lambda c: ("msgpack", _ext(0, "os", "system", f"touch {shlex.quote(str(c))}")),
    "ext-dataclass": lambda c: ("msgpack", _ext(2, MODULE, "DataclassDetonator", {"path": str(c)})),
    "json-envelope": lambda c: ("json", _envelope("DataclassDetonator", c)),
}


def _keep_ext(code: int, data: bytes) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, data)


def _encoded(kind: str, value: Any) -> bytes:
    if kind == "pickle":
        return value
    return json.dumps(value).encode() if kind == "json" else ormsgpack.packb(value)


def _inject_memory(saver: Any, thread_id: str, kind: str, value: Any) -> None:
    for key in [k for k in saver.blobs if k[0] == thread_id and k[2] == "payload"]:
        saver.blobs[key] = (kind, _encoded(kind, value))


async def _inject_postgres(url: str, thread_id: str, kind: str, value: Any) -> None:
    import psycopg

    from memory_tiers.working.checkpointer import postgres_conninfo

    async with await psycopg.AsyncConnection.connect(postgres_conninfo(url), autocommit=True) as conn:
        cur = await conn.execute(
            "UPDATE checkpoint_blobs SET type = %s, blob = %s WHERE thread_id = %s AND channel = 'payload'",
            (kind, _encoded(kind, value), thread_id),
        )
        assert cur.rowcount > 0


def _inject_sqlite(path: Path, thread_id: str, kind: str, value: Any) -> None:
    """SQLite keeps channel values inside the checkpoint row: a pickle replaces the whole row's
    payload, an extension or envelope replaces the ``payload`` channel inside it."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        rows = conn.execute(
            "SELECT checkpoint_id, checkpoint FROM checkpoints WHERE thread_id = ?", (thread_id,)
        ).fetchall()
        assert rows
        for checkpoint_id, blob in rows:
            if kind == "pickle":
                data = value
            else:
                checkpoint = ormsgpack.unpackb(blob, ext_hook=_keep_ext, option=ormsgpack.OPT_NON_STR_KEYS)
                if kind == "json":  # a legacy JSON row: the channels of a JSON checkpoint
                    checkpoint["channel_values"] = {"payload": value}
                    data = json.dumps(checkpoint).encode()
                else:
                    checkpoint["channel_values"]["payload"] = value
                    data = ormsgpack.packb(checkpoint)
            conn.execute(
                "UPDATE checkpoints SET type = ?, checkpoint = ? WHERE thread_id = ? AND checkpoint_id = ?",
                (kind, data, thread_id, checkpoint_id),
            )


async def _inject_redis(manager: MemoryManager, url: str, thread_id: str, kind: str, value: Any) -> None:
    """Redis keeps JSON documents: an envelope goes into the checkpoint document's channel
    values; pickle and msgpack blobs into a pending-write document of the latest checkpoint
    (created empty through the saver, then overwritten directly)."""
    import redis.asyncio as aioredis

    saver = manager.checkpointer.inner
    latest = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
    assert latest is not None
    client = aioredis.Redis.from_url(url)
    try:
        if kind == "json":
            checkpoint_id = latest.config["configurable"]["checkpoint_id"]
            keys = [k async for k in client.scan_iter(match=f"checkpoint:{thread_id}:*{checkpoint_id}")]
            assert len(keys) == 1
            await client.json().set(keys[0], "$.checkpoint.channel_values.payload", value)
            return
        await saver.aput_writes(latest.config, [("payload", "benign")], task_id="crafted")
        keys = [k async for k in client.scan_iter(match=f"checkpoint_write:{thread_id}:*crafted*")]
        assert keys
        for key in keys:
            await client.json().set(key, "$.type", kind)
            await client.json().set(key, "$.blob", base64.b64encode(_encoded(kind, value)).decode())
    finally:
        await client.aclose()


def _is_plain(value: Any) -> bool:
    """Nothing but data: what an unallowed type must come back as."""
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, str | int | float | bool | bytes)


def _permissive(backend: str, vector: str) -> JsonPlusSerializer:
    """LangGraph's serializer as a careless deployment would configure it."""
    if backend == "redis":
        from langgraph.checkpoint.redis.jsonplus_redis import JsonPlusRedisSerializer

        if vector == "json-envelope":
            # Even LangGraph's strict mode: the Redis serializer's dataclass shortcut ignores it.
            return JsonPlusRedisSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
        return JsonPlusRedisSerializer(pickle_fallback=True, allowed_msgpack_modules=True)
    return JsonPlusSerializer(pickle_fallback=True, allowed_msgpack_modules=True, allowed_json_modules=True)


@pytest.mark.parametrize("vector", sorted(VECTORS))
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_crafted_checkpoint_is_not_executed_on_load(
    backend: str, vector: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    canary = tmp_path / "canary"
    thread_id = unique("crafted")
    working = _working(backend, request)
    async with MemoryManager(_config(tmp_path, working)) as manager:
        graph = manager.nodes.around(lambda s: {"payload": {"benign": [1, 2]}}, State).compile(
            checkpointer=manager.checkpointer
        )
        await graph.ainvoke(
            {"messages": [HumanMessage("hi")]}, {"configurable": {"thread_id": thread_id, "user_id": "alice"}}
        )
        kind, value = VECTORS[vector](canary)
        saver = manager.checkpointer.inner
        if backend == "memory":
            _inject_memory(saver, thread_id, kind, value)
        elif backend == "sqlite":
            _inject_sqlite(tmp_path / "data" / "working.db", thread_id, kind, value)
        elif backend == "postgres":
            await _inject_postgres(working["url"], thread_id, kind, value)
        else:
            await _inject_redis(manager, working["url"], thread_id, kind, value)

        config = {"configurable": {"thread_id": thread_id}}
        loads: list[Callable[[], Awaitable[Any]]] = [
            lambda: manager.checkpointer.aget_tuple(config),
            lambda: graph.aget_state(config),
        ]
        for load in loads:
            try:
                loaded = await load()
            except UnsafeCheckpointError as exc:
                assert kind == "pickle", f"only a pickle payload is refused outright, not {kind}: {exc}"
            else:
                assert kind != "pickle", "a pickle payload must raise UnsafeCheckpointError"
                _assert_inert(loaded)
            assert not canary.exists(), f"{vector} was executed on {backend}"

        # Sanity: the same payload through a permissive serializer does run.
        saver.serde = _permissive(backend, vector)
        with contextlib.suppress(Exception):
            await manager.checkpointer.aget_tuple(config)
        assert canary.exists(), (
            f"{vector} never reached the deserializer on {backend}: the test proves nothing"
        )
        if backend == "redis":
            await saver.adelete_thread(thread_id)


def _assert_inert(loaded: Any) -> None:
    """Whatever holds the payload (checkpoint values, pending writes, state values) is data."""
    if hasattr(loaded, "checkpoint"):  # a CheckpointTuple
        values = [loaded.checkpoint["channel_values"].get("payload")]
        values += [v for _task, channel, v in loaded.pending_writes or [] if channel == "payload"]
    else:  # a StateSnapshot
        values = [loaded.values.get("payload")]
    for value in values:
        assert not isinstance(value, Detonator | DataclassDetonator)
        assert _is_plain(value), f"{value!r} is not plain data"


# -- untrusted configuration (test 10) ------------------------------------------------------

YAML_TAGS = [
    '!!python/object/apply:os.system ["touch {canary}"]',
    'working: !!python/object/apply:os.system ["touch {canary}"]',
    "session: !!python/object/new:os.system [touch {canary}]",
    "session: !!python/object:memory_tiers.config.SessionConfig {{ttl: 1h}}",
    "long_term: {{url: !!python/name:os.system }}",
]


@pytest.mark.parametrize("text", YAML_TAGS)
def test_yaml_with_python_tags_is_rejected_naming_the_file(tmp_path: Path, text: str) -> None:
    from click.testing import CliRunner

    from memory_tiers.cli import main
    from memory_tiers.config import load_yaml

    canary = tmp_path / "CANARY"
    file = tmp_path / "hostile.yaml"
    file.write_text(text.format(canary=shlex.quote(str(canary))), encoding="utf-8")
    for load in (load_yaml, MemoryManager.from_yaml):
        with pytest.raises(ConfigError, match=rf"{file}.*not valid YAML"):
            load(file)
    result = CliRunner().invoke(main, ["config", "check", str(file)])
    assert result.exit_code == 2 and str(file) in result.stderr and "Traceback" not in result.output
    assert not canary.exists()


def test_the_yaml_tag_payload_is_live(tmp_path: Path) -> None:
    """Sanity for the test above: an unsafe YAML loader does run it."""
    import yaml

    canary = tmp_path / "CANARY"
    yaml.unsafe_load(YAML_TAGS[0].format(canary=shlex.quote(str(canary))))
    assert canary.exists()


PASSWORD = "Pw-0f-the-DSN"
DSNS = {
    "working-postgres": {
        "working": {"backend": "postgres", "url": f"postgresql://app:{PASSWORD}@127.0.0.1:1/db"}
    },
    "working-postgres-query": {
        "working": {"backend": "postgres", "url": f"postgresql://127.0.0.1:1/db?user=app&password={PASSWORD}"}
    },
    "working-redis": {"working": {"backend": "redis", "url": f"redis://:{PASSWORD}@127.0.0.1:1/0"}},
    "session": {"session": {"url": f"redis://app:{PASSWORD}@127.0.0.1:1/0"}},
    "long-term": {"long_term": {"url": f"postgresql+asyncpg://app:{PASSWORD}@127.0.0.1:1/db"}},
    "working-postgres-keywords": {
        "working": {"backend": "postgres", "url": f"host=127.0.0.1 port=1 user=app password={PASSWORD}"}
    },
}


def _timeouts(tmp_path: Path, sections: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    for name, section in sections.items():
        config[name] = {**section, "connect_timeout": "1s"}
    return config


@pytest.mark.parametrize("name", sorted(DSNS))
def test_a_dsn_password_never_shows_in_the_config(tmp_path: Path, name: str) -> None:
    import yaml
    from click.testing import CliRunner

    from memory_tiers.cli import main
    from memory_tiers.config import load_config

    config = load_config(DSNS[name])
    for shown in (repr(config), str(config), str(config.masked()), json.dumps(config.masked())):
        assert PASSWORD not in shown
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(DSNS[name]), encoding="utf-8")
    result = CliRunner().invoke(main, ["config", "check", str(file)])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and "***" in result.output


@pytest.mark.parametrize("name", sorted(DSNS))
async def test_a_dsn_password_never_shows_in_a_failing_connect(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import traceback

    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailableError) as caught:
        async with MemoryManager(_timeouts(tmp_path, DSNS[name])):
            pass
    assert "***" in str(caught.value)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    assert not [line for line in lines if PASSWORD in line]
    assert PASSWORD not in "".join(traceback.format_exception(caught.value))
