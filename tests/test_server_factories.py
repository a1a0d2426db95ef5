"""memory_tiers.integrations.server, called the way LangGraph's server calls langgraph.json factories.

The server (langgraph-api, behind ``langgraph dev``) is heavy and needs a LangSmith key, so these
tests replay its call sequence instead of installing it. As read in langgraph-api's source,
``langgraph_api/_checkpointer/_adapter.py`` and ``langgraph_api/store.py``:

- ``_load_checkpointer`` / ``_load_store``: a ``./file.py:name`` path is imported with
  ``importlib.util.spec_from_file_location`` (the store under a random module name) and
  ``module.__dict__[name]`` is taken;
- ``get_checkpointer()`` / ``get_store()``: "Connection pools, futures, etc. are commonly scoped to
  a single event loop, so we want to allow the user the option of exposing a
  generator/constructor that would be entered into once per event loop": once per thread (a
  ``threading.local`` keeps an ``AsyncExitStack``) they ``enter_async_context`` of
  ``_yield_checkpointer(value)`` / ``_yield_store(value)``, which yield a saver/store instance
  as it is, ``async with`` an object that has ``__aenter__``, ``with`` one that has
  ``__enter__``, await a coroutine, and for a callable recurse on ``value()``;
- the lifespan (``langgraph_runtime_inmem/lifespan.py``) collects the store and calls
  ``get_store()`` before it loads the graphs, and in its ``finally`` calls
  ``exit_checkpointer()`` then ``exit_store()``, closing the stacks of the lifespan's thread;
- a run gets ``graph.copy(update={"checkpointer": checkpointer, "store": store})``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

import pytest
import yaml
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from memory_tiers import ConfigError, OwnershipError, UsageError
from memory_tiers.integrations import server

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "langgraph_server"


def load_attribute(project: Path, path: str) -> Any:
    """``./file.py:name`` imported from a file under a module name of its own, as the server does."""
    file, _, name = path.rpartition(":")
    module_name = f"lg_user_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, project / file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.__dict__[name]


@asynccontextmanager
async def resolve(value: Any, kind: type) -> AsyncIterator[Any]:
    """The server's ``_yield_checkpointer`` / ``_yield_store``."""
    if isinstance(value, kind):
        yield value
    elif hasattr(value, "__aenter__"):
        async with value as entered:
            yield entered
    elif hasattr(value, "__enter__"):
        with value as entered:
            yield entered
    elif asyncio.iscoroutine(value):
        yield await value
    elif callable(value):
        async with resolve(value(), kind) as entered:
            yield entered
    else:
        raise ValueError(f"unsupported {kind.__name__} factory: {value!r}")


class EmulatedServer:
    """The lifespan of one server process serving ``project`` (its langgraph.json)."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.spec = json.loads((project / "langgraph.json").read_text())
        self._stores = AsyncExitStack()
        self._checkpointers = AsyncExitStack()

    async def __aenter__(self) -> EmulatedServer:
        value = load_attribute(self.project, self.spec["store"]["path"])
        self.store = await self._stores.enter_async_context(resolve(value, BaseStore))
        self._graph = load_attribute(self.project, self.spec["graphs"]["agent"])
        value = load_attribute(self.project, self.spec["checkpointer"]["path"])
        self.checkpointer = await self._checkpointers.enter_async_context(resolve(value, BaseCheckpointSaver))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._checkpointers.aclose()
        finally:
            await self._stores.aclose()

    def graph(self, graph: Any = None) -> Any:
        """What a run executes: the graph with the server's checkpointer and store."""
        return (graph or self._graph).copy(update={"checkpointer": self.checkpointer, "store": self.store})


def unique(name: str) -> str:
    """An id of this test's own: the postgres+redis database is shared by the whole run."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def run(user: str, thread: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user, "thread_id": thread}}


def said(result: dict[str, Any]) -> str:
    return str(result["messages"][-1].content)


@pytest.fixture
def fresh_shared() -> Iterator[None]:
    server.shared.reset()
    yield
    server.shared.reset()


@pytest.fixture
def served(memory_config, tmp_path, monkeypatch, fresh_shared) -> None:
    """The factories read ``memory_config`` as YAML, from the file MEMORY_TIERS_CONFIG names."""
    config = tmp_path / "memory.yaml"
    config.write_text(yaml.safe_dump(memory_config))
    monkeypatch.setenv(server.CONFIG_ENV, str(config))


async def test_factories_share_one_manager_until_the_last_exit(served):
    async with EmulatedServer(PROJECT) as srv:
        manager = server.manager()
        assert srv.checkpointer is manager.checkpointer
        assert srv.store is manager.store
        assert server.shared.leases == 2
        await srv._checkpointers.aclose()  # exit_checkpointer(): the store still holds it open
        assert server.shared.leases == 1
        await manager.long_term.patch_profile(unique("alice"), {"name": "Alice"})
    assert server.shared.leases == 0
    with pytest.raises(UsageError):
        _ = manager.store  # closed with the server


async def test_a_graph_turn_through_the_factories_keeps_ownership(served):
    alice, bob, first, second = unique("alice"), unique("bob"), unique("a1"), unique("a2")
    async with EmulatedServer(PROJECT) as srv:
        graph = srv.graph()
        out = await graph.ainvoke({"messages": [("user", "Hi, I'm Alice. I like jazz.")]}, run(alice, first))
        assert "Nice to meet you, Alice" in said(out)
        out = await graph.ainvoke({"messages": [("user", "What do you know about me?")]}, run(alice, second))
        assert "jazz" in said(out)  # long-term memory, across threads
        with pytest.raises(OwnershipError):
            await graph.ainvoke({"messages": [("user", "hi")]}, run(bob, first))
        record = await server.manager().threads.get(alice, first)
        assert record.user_id == alice
        state = await graph.aget_state(run(alice, first))
        assert len(state.values["messages"]) == 2  # bob's message never reached the thread


class Notes(TypedDict, total=False):
    note: str
    notes: list[str]


async def take_note(state: Notes, runtime: Runtime) -> Notes:
    await runtime.store.aput(("notes",), state["note"], {"text": state["note"]})
    return {"notes": sorted(item.key for item in await runtime.store.asearch(("notes",)))}


async def test_the_store_is_scoped_to_the_run_user(served):
    builder = StateGraph(Notes)
    builder.add_node("take_note", take_note)
    builder.add_edge(START, "take_note")
    builder.add_edge("take_note", END)
    alice, bob = unique("alice"), unique("bob")
    async with EmulatedServer(PROJECT) as srv:
        graph = srv.graph(builder.compile())
        assert (await graph.ainvoke({"note": "milk"}, run(alice, unique("n"))))["notes"] == ["milk"]
        assert (await graph.ainvoke({"note": "tea"}, run(bob, unique("n"))))["notes"] == ["tea"]
        assert (await graph.ainvoke({"note": "eggs"}, run(alice, unique("n"))))["notes"] == ["eggs", "milk"]
        with pytest.raises(UsageError):
            await srv.store.aget(("notes",), "milk")  # outside a run, no user: refused
        assert (await srv.store.for_user(bob).aget(("notes",), "milk")) is None
        assert (await srv.store.for_user(alice).aget(("notes",), "milk")) is not None


async def test_another_thread_reuses_the_open_manager_uncounted(served):
    async def enter_elsewhere() -> Any:
        async with resolve(server.checkpointer, BaseCheckpointSaver) as saver:
            return saver, server.shared.leases

    async with EmulatedServer(PROJECT) as srv:
        # The server keeps one exit stack per thread; a worker thread runs its own event loop.
        saver, leases = await asyncio.wait_for(asyncio.to_thread(asyncio.run, enter_elsewhere()), 30)
        assert saver is srv.checkpointer
        assert leases == 2  # the foreign loop's lease is not counted, nor can it close the manager
        assert server.shared.leases == 2
    assert server.shared.leases == 0


async def test_a_missing_config_file_says_which_variable_names_it(tmp_path, monkeypatch, fresh_shared):
    monkeypatch.setenv(server.CONFIG_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="MEMORY_TIERS_CONFIG"):
        async with resolve(server.checkpointer, BaseCheckpointSaver):
            pass


async def test_the_example_project_serves_on_its_own_config(tmp_path, monkeypatch, fresh_shared):
    monkeypatch.setenv(server.CONFIG_ENV, str(PROJECT / "memory_tiers.yaml"))
    monkeypatch.chdir(tmp_path)  # its embedded data_dir is relative: keep it out of the repo
    async with EmulatedServer(PROJECT) as srv:
        out = await srv.graph().ainvoke({"messages": [("user", "I live in Rome.")]}, run("carol", "c1"))
        assert "you live in Rome" in said(out)
    assert (tmp_path / ".memory_tiers").is_dir()
