"""State schema evolution: threads written by an old graph move forward safely."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import turn_config, unique
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel, ConfigDict

from memory_tiers import ConfigError, MemoryManager, MemoryState, StateSchemaError
from memory_tiers.state.checkpoints import MIGRATION_METADATA_KEY
from memory_tiers.state.migrators import StateMigrationError, StateMigrator


class StateV1(MemoryState, total=False):
    name: str  # "Ada Lovelace"


class StateV3(MemoryState, total=False):
    first_name: str
    last_name: str
    greeting: str


def v1_agent(state: StateV1) -> dict[str, Any]:
    return {"messages": [AIMessage("hi")], "name": "Ada Lovelace"}


def v3_agent(state: StateV3) -> dict[str, Any]:
    return {"messages": [AIMessage(f"{state['greeting']}, {state['first_name']}")]}


def migrator(model: type[BaseModel] | None = None, *, fail_on: str | None = None) -> StateMigrator:
    migrations = StateMigrator(model)

    @migrations.step(1)
    def split_name(state: dict[str, Any]) -> dict[str, Any]:
        full = state.pop("name", "")
        if full == fail_on:
            raise ValueError(f"cannot split {full!r}")
        first, _, last = full.partition(" ")
        return {**state, "first_name": first, "last_name": last}

    @migrations.step(2)
    async def add_greeting(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "greeting": "Hello" if state["last_name"] else "Hi"}

    return migrations


class StrictV3(BaseModel):
    model_config = ConfigDict(extra="allow")
    first_name: str
    greeting: int  # wrong on purpose: the migrated greeting is a string


def v3_config(memory_config: dict[str, Any]) -> dict[str, Any]:
    return {**memory_config, "state": {"version": 3}}


async def write_v1_threads(memory_config: dict[str, Any], user: str, threads: list[str]) -> None:
    async with MemoryManager(memory_config) as v1:
        graph = v1.nodes.around(v1_agent, StateV1).compile(checkpointer=v1.checkpointer)
        for thread in threads:
            await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(user, thread))


async def history(manager: MemoryManager, user: str, thread: str) -> list[Any]:
    graph = manager.nodes.around(v3_agent, StateV3).compile(checkpointer=manager.checkpointer)
    return [snapshot async for snapshot in graph.aget_state_history(turn_config(user, thread))]


async def test_an_old_thread_is_brought_forward_once_before_the_agent_sees_it(memory_config):
    alice, thread = unique("alice"), unique("t")
    await write_v1_threads(memory_config, alice, [thread])
    async with MemoryManager(v3_config(memory_config), state_migrator=migrator()) as v3:
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        first = await graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
        second = await graph.ainvoke({"messages": [("user", "and again")]}, turn_config(alice, thread))
        latest = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        snapshots = await history(v3, alice, thread)
        raw_history = [c async for c in v3.checkpointer.inner.alist({"configurable": {"thread_id": thread}})]

    assert first["messages"][-1].content == "Hello, Ada"
    assert second["messages"][-1].content == "Hello, Ada"
    assert (first["first_name"], first["last_name"], first["memory_version"]) == ("Ada", "Lovelace", 3)
    # The renamed key is gone from the checkpoint itself, though the v3 graph has no such channel.
    assert "name" not in latest.checkpoint["channel_values"]
    migrations = [
        s.metadata[MIGRATION_METADATA_KEY] for s in snapshots if MIGRATION_METADATA_KEY in s.metadata
    ]
    assert migrations == [{"from": 1, "to": 3}]  # once, however many turns
    # The v1 turn is still in the thread's history, before the migration.
    assert any(c.checkpoint["channel_values"].get("name") == "Ada Lovelace" for c in raw_history)


async def test_a_failing_step_leaves_the_thread_exactly_as_it_was(memory_config):
    alice, thread = unique("alice"), unique("t")
    await write_v1_threads(memory_config, alice, [thread])
    config = v3_config(memory_config)
    async with MemoryManager(config, state_migrator=migrator(fail_on="Ada Lovelace")) as v3:
        before = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        with pytest.raises(StateMigrationError) as raised:
            await graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
        after = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})

    message = str(raised.value)
    assert repr(thread) in message and "from version 1 to 3" in message and "step 1 -> 2" in message
    assert "cannot split 'Ada Lovelace'" in message
    assert after.checkpoint["id"] == before.checkpoint["id"]
    assert after.checkpoint["channel_values"] == before.checkpoint["channel_values"]


async def test_a_migrated_state_that_fails_validation_is_not_written(memory_config):
    alice, thread = unique("alice"), unique("t")
    await write_v1_threads(memory_config, alice, [thread])
    async with MemoryManager(v3_config(memory_config), state_migrator=migrator(StrictV3)) as v3:
        before = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        with pytest.raises(StateMigrationError, match=r"field greeting: Input should be a valid integer"):
            await graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
        after = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})

    assert after.checkpoint["id"] == before.checkpoint["id"]


async def test_bulk_migration_reports_counts_fails_per_thread_and_resumes(memory_config):
    alice, bob = unique("alice"), unique("bob")
    good = [unique("t") for _ in range(4)]
    bad = unique("t")
    await write_v1_threads(memory_config, alice, good[:3])
    await write_v1_threads(memory_config, bob, good[3:])
    # One of bob's threads holds a name the migration cannot handle.
    async with MemoryManager(memory_config) as v1:
        graph = v1.nodes.around(lambda s: {"messages": [AIMessage("x")], "name": "Bad"}, StateV1)
        await graph.compile(checkpointer=v1.checkpointer).ainvoke(
            {"messages": [("user", "x")]}, turn_config(bob, bad)
        )

    async with MemoryManager(v3_config(memory_config), state_migrator=migrator(fail_on="Bad")) as v3:
        ticks: list[int] = []
        dry = await v3.migrate_threads(user_id=bob, dry_run=True, progress=ticks.append)
        bobs = await v3.migrate_threads(user_id=bob, batch_size=1)
        alices = await v3.migrate_threads(user_id=alice, batch_size=2)
        again = await v3.migrate_threads(user_id=bob)
        versions = {
            t: (await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": t}})).checkpoint[
                "channel_values"
            ]["memory_version"]
            for t in [*good, bad]
        }

    assert (dry.before, dry.after, dry.migrated, list(dry.failed), dry.dry_run) == (
        {1: 2},
        {1: 1, 3: 1},
        1,
        [bad],
        True,
    )
    assert ticks == [1, 1]
    assert (bobs.before, bobs.after, bobs.migrated, list(bobs.failed)) == ({1: 2}, {1: 1, 3: 1}, 1, [bad])
    assert "cannot split 'Bad'" in bobs.failed[bad]
    assert (alices.before, alices.after, alices.migrated, alices.failed) == ({1: 3}, {3: 3}, 3, {})
    # Running it again resumes: what is current is only counted, the failure is still reported.
    assert (again.before, again.after, again.migrated, list(again.failed)) == (
        {1: 1, 3: 1},
        {1: 1, 3: 1},
        0,
        [bad],
    )
    assert versions == {**dict.fromkeys(good, 3), bad: 1}


def _memory_versions(manager: MemoryManager, threads: list[str]) -> Any:
    async def read() -> dict[str, int]:
        inner = manager.checkpointer.inner
        return {
            t: (await inner.aget_tuple({"configurable": {"thread_id": t}})).checkpoint["channel_values"][
                "memory_version"
            ]
            for t in threads
        }

    return read()


async def test_bulk_migration_runs_threads_concurrently_up_to_its_bound(memory_config, monkeypatch):
    alice, threads = unique("alice"), [unique("t") for _ in range(7)]
    await write_v1_threads(memory_config, alice, threads)
    async with MemoryManager(v3_config(memory_config), state_migrator=migrator()) as v3:
        inner, in_flight, most = v3.checkpointer.inner, [0], [0]
        real = inner.aget_tuple

        async def counted(config: Any) -> Any:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            try:
                return await real(config)
            finally:
                in_flight[0] -= 1

        with pytest.raises(ValueError, match="concurrency must be at least 1, not 0"):
            await v3.migrate_threads(user_id=alice, concurrency=0)
        monkeypatch.setattr(inner, "aget_tuple", counted)
        report = await v3.migrate_threads(user_id=alice, concurrency=3)
        monkeypatch.undo()
        versions = await _memory_versions(v3, threads)

    assert most == [3]
    assert (report.before, report.after, report.migrated, report.failed) == ({1: 7}, {3: 7}, 7, {})
    assert versions == dict.fromkeys(threads, 3)


async def test_a_backend_error_stops_bulk_migration_after_the_threads_in_flight(memory_config, monkeypatch):
    alice, threads = unique("alice"), sorted(unique("t") for _ in range(6))
    broken = threads[1]  # the registry walks threads by id: the second one fails
    await write_v1_threads(memory_config, alice, threads)
    async with MemoryManager(v3_config(memory_config), state_migrator=migrator()) as v3:
        inner = v3.checkpointer.inner
        real, started = inner.aget_tuple, []

        async def failing(config: Any) -> Any:
            started.append(config["configurable"]["thread_id"])
            if config["configurable"]["thread_id"] == broken:
                raise ConnectionError("the checkpointer went away")
            return await real(config)

        monkeypatch.setattr(inner, "aget_tuple", failing)
        with pytest.raises(ConnectionError, match="went away"):
            await v3.migrate_threads(user_id=alice, concurrency=2)
        monkeypatch.undo()
        left = await _memory_versions(v3, threads)
        again = await v3.migrate_threads(user_id=alice)
        versions = await _memory_versions(v3, threads)

    # The thread in flight beside the failing one was done; none was started after the failure.
    assert started == threads[:2]
    assert left == {threads[0]: 3, **dict.fromkeys(threads[1:], 1)}
    assert (again.before, again.migrated) == ({1: 5, 3: 1}, 5)
    assert versions == dict.fromkeys(threads, 3)


async def test_a_dry_run_writes_nothing(memory_config):
    alice, thread = unique("alice"), unique("t")
    config = memory_config
    await write_v1_threads(config, alice, [thread])
    async with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        before = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        report = await v3.migrate_threads(user_id=alice, dry_run=True)
        after = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        real = await v3.migrate_threads(user_id=alice)

    assert (report.before, report.after, report.migrated) == ({1: 1}, {3: 1}, 1)
    assert after.checkpoint["id"] == before.checkpoint["id"]
    assert (real.before, real.after, real.migrated) == ({1: 1}, {3: 1}, 1)


async def test_a_thread_waiting_on_an_interrupt_is_migrated_and_resumes(memory_config):
    alice, thread = unique("alice"), unique("t")
    config = memory_config

    def asking_agent(state: StateV1) -> dict[str, Any]:
        if state.get("name"):
            interrupt("shall I go on?")  # the second turn waits here
        return {"messages": [AIMessage("hi")], "name": "Ada Lovelace"}

    async with MemoryManager(config) as v1:
        graph = v1.nodes.around(asking_agent, StateV1).compile(checkpointer=v1.checkpointer)
        await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(alice, thread))
        await graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
        waiting = await v1.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
    async with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        report = await v3.migrate_threads(user_id=alice)
        migrated = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        resumed = await graph.ainvoke(Command(resume="yes"), turn_config(alice, thread))

    assert waiting.pending_writes  # the interrupt is a pending write of the waiting task
    assert (report.migrated, report.before, report.after) == (1, {1: 1}, {3: 1})
    # Rewritten in place: same checkpoint, its pending writes still attached.
    assert migrated.checkpoint["id"] == waiting.checkpoint["id"]
    assert migrated.pending_writes == waiting.pending_writes
    assert resumed["messages"][-1].content == "Hello, Ada"
    assert (resumed["first_name"], resumed["last_name"]) == ("Ada", "Lovelace")


async def test_a_run_stopped_between_steps_finishes_after_migration(memory_config):
    alice, thread = unique("alice"), unique("t")
    config = memory_config
    async with MemoryManager(config) as v1:
        graph = v1.nodes.around(v1_agent, StateV1).compile(checkpointer=v1.checkpointer)
        await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(alice, thread))
        stopping = v1.nodes.around(v1_agent, StateV1).compile(
            checkpointer=v1.checkpointer, interrupt_before=["agent"]
        )
        await stopping.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
    async with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        pending = (await graph.aget_state(turn_config(alice, thread))).next
        finished = await graph.ainvoke(None, turn_config(alice, thread))

    assert pending == ("agent",)
    assert finished["messages"][-1].content == "Hello, Ada"


async def test_concurrent_loads_of_an_old_thread_add_no_checkpoints(memory_config):
    alice, thread = unique("alice"), unique("t")
    await write_v1_threads(memory_config, alice, [thread])
    async with MemoryManager(v3_config(memory_config), state_migrator=migrator()) as v3:
        before = [c async for c in v3.checkpointer.inner.alist({"configurable": {"thread_id": thread}})]
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        states = await asyncio.gather(*(graph.aget_state(turn_config(alice, thread)) for _ in range(4)))
        after = [c async for c in v3.checkpointer.inner.alist({"configurable": {"thread_id": thread}})]

    assert {s.values["first_name"] for s in states} == {"Ada"}
    assert [c.checkpoint["id"] for c in after] == [c.checkpoint["id"] for c in before]
    assert after[0].metadata[MIGRATION_METADATA_KEY] == {"from": 1, "to": 3}


async def test_new_threads_and_graphs_without_memory_nodes_are_never_migrated(tmp_path):
    alice = unique("alice")
    strict = StateMigrator.from_steps({1: lambda state: {**state, "name": state.pop("missing_key")}, 2: dict})
    async with MemoryManager(v3_config({"data_dir": str(tmp_path)}), state_migrator=strict) as v3:
        plain = StateGraph(MessagesState)
        plain.add_node("echo", lambda state: {"messages": [AIMessage("ok")]})
        plain.add_edge(START, "echo")
        graph = plain.compile(checkpointer=v3.checkpointer)
        thread = unique("t")
        for text in ("one", "two", "three"):
            await graph.ainvoke({"messages": [("user", text)]}, turn_config(alice, thread))
        history = [c async for c in v3.checkpointer.inner.alist({"configurable": {"thread_id": thread}})]

    assert history and not any(MIGRATION_METADATA_KEY in c.metadata for c in history)


async def test_a_thread_written_by_newer_code_is_refused_not_damaged(memory_config):
    alice, thread = unique("alice"), unique("t")
    config = memory_config
    await write_v1_threads(config, alice, [thread])
    async with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        await v3.migrate_threads(user_id=alice)
        before = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})
    older = {**config, "state": {"version": 2}}
    async with MemoryManager(older, state_migrator=StateMigrator.from_steps({1: dict})) as v2:
        graph = v2.nodes.around(v1_agent, StateV1).compile(checkpointer=v2.checkpointer)
        with pytest.raises(StateSchemaError, match="state version 3, newer than this code's 2"):
            await graph.ainvoke({"messages": [("user", "hi")]}, turn_config(alice, thread))
        report = await v2.migrate_threads(user_id=alice)
        after = await v2.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})

    assert list(report.failed) == [thread]
    assert after.checkpoint == before.checkpoint


async def test_a_run_cannot_start_from_a_checkpoint_older_than_the_migration(memory_config):
    alice, thread = unique("alice"), unique("t")
    config = memory_config
    await write_v1_threads(config, alice, [thread, unique("t")])
    async with MemoryManager(config) as v1:
        graph = v1.nodes.around(v1_agent, StateV1).compile(checkpointer=v1.checkpointer)
        await graph.ainvoke({"messages": [("user", "second turn")]}, turn_config(alice, thread))
    async with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        old = [s async for s in graph.aget_state_history(turn_config(alice, thread))][-2]
        fork = {"configurable": {**old.config["configurable"], "user_id": alice}}
        with pytest.raises(StateSchemaError, match="runs can start only from checkpoints at the current"):
            await graph.ainvoke({"messages": [("user", "from the past")]}, fork)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_migration_on_the_other_checkpointers(backend, tmp_path, request):
    alice, thread = unique("alice"), unique("t")
    config: dict[str, Any] = {"data_dir": str(tmp_path)}
    clients: dict[str, Any] = {}
    if backend == "redis":
        config["working"] = {"backend": "redis", "url": request.getfixturevalue("redis_stack_url")}
    else:
        clients["checkpointer"] = InMemorySaver()  # shared by the v1 and the v3 manager
    async with MemoryManager(config, **clients) as v1:
        v1_graph = v1.nodes.around(v1_agent, StateV1).compile(checkpointer=v1.checkpointer)
        await v1_graph.ainvoke({"messages": [("user", "hello")]}, turn_config(alice, thread))
    async with MemoryManager(v3_config(config), state_migrator=migrator(), **clients) as v3:
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        result = await graph.ainvoke({"messages": [("user", "again")]}, turn_config(alice, thread))
        again = await graph.ainvoke({"messages": [("user", "and again")]}, turn_config(alice, thread))
        latest = await v3.checkpointer.inner.aget_tuple({"configurable": {"thread_id": thread}})

    assert result["messages"][-1].content == again["messages"][-1].content == "Hello, Ada"
    assert "name" not in latest.checkpoint["channel_values"]
    assert latest.checkpoint["channel_values"]["memory_version"] == 3


def test_sync_graphs_are_migrated_too(tmp_path):
    alice, thread = unique("alice"), unique("t")
    config = {"data_dir": str(tmp_path)}
    with MemoryManager(config) as v1:
        v1.nodes.around(v1_agent, StateV1).compile(checkpointer=v1.checkpointer).invoke(
            {"messages": [("user", "hello")]}, turn_config(alice, thread)
        )
    with MemoryManager(v3_config(config), state_migrator=migrator()) as v3:
        graph = v3.nodes.around(v3_agent, StateV3).compile(checkpointer=v3.checkpointer)
        result = graph.invoke({"messages": [("user", "again")]}, turn_config(alice, thread))

    assert result["messages"][-1].content == "Hello, Ada"


@pytest.mark.parametrize(
    ("steps", "version", "problem"),
    [
        ({1: dict, 3: dict}, 4, "no step for 2 -> 3"),
        ({1: dict}, 3, "no step for 2 -> 3"),
        ({}, 2, "no step for 1 -> 2"),
        ({1: dict, 2: dict}, 2, "steps from versions [2] fall outside 1..2"),
    ],
)
def test_a_broken_chain_is_a_configuration_error_at_startup(steps, version, problem):
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        MemoryManager({"state": {"version": version}}, state_migrator=StateMigrator.from_steps(steps))


def test_two_steps_from_one_version_are_refused():
    migrations = StateMigrator()
    migrations.register(1, dict)
    with pytest.raises(ConfigError, match="two steps from version 1 to 2"):
        migrations.register(1, dict)


def test_migrators_are_named_in_yaml(tmp_path, monkeypatch):
    module = tmp_path / "my_migrations.py"
    module.write_text("migrators = {1: lambda s: {**s, 'x': 1}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = MemoryManager({"state": {"version": 2, "migrators": "my_migrations:migrators"}})
    assert manager.state_migrator.versions == [1]
    with pytest.raises(ConfigError, match=r"state: no step for 2 -> 3"):
        MemoryManager({"state": {"version": 3, "migrators": "my_migrations:migrators"}})
    with pytest.raises(ConfigError, match=r"state.migrators 'my_migrations:nothing'"):
        MemoryManager({"state": {"version": 2, "migrators": "my_migrations:nothing"}})
