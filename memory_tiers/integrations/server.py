"""Factories for LangGraph's server (``langgraph dev``, langgraph-api): memory_tiers' checkpointer
and store, named in ``langgraph.json``.

.. code-block:: json

    {"graphs": {"agent": "./agent.py:graph"},
     "checkpointer": {"path": "./memory.py:checkpointer"},
     "store": {"path": "./memory.py:store"}}

where ``memory.py`` holds ``from memory_tiers.integrations.server import checkpointer, store``
and ``agent.py`` builds its graph with the nodes of `manager()`.

What the server does with them (langgraph-api's ``langgraph_api/_checkpointer/_adapter.py`` and
``langgraph_api/store.py``): it imports the named attribute, and the first time a thread of the
server needs it, resolves it: an instance is used as it is, an async (or sync) context manager is
entered, a coroutine awaited, and a callable called with no arguments and its result resolved in
turn. What it entered stays on a ``threading.local`` exit stack until the server's lifespan ends
and ``exit_checkpointer()`` / ``exit_store()`` close it.

So `checkpointer` and `store` are functions returning async context managers, and both lease the
same `MemoryManager` of the process: the one `manager()` returns, whose nodes the graph runs. The
first lease opens it (pools, schema setup when ``setup: auto``), the last release closes it. The
configuration is the YAML file named by ``MEMORY_TIERS_CONFIG`` (default ``memory_tiers.yaml`` in
the working directory, which for ``langgraph dev`` is the directory of ``langgraph.json``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from memory_tiers.errors import ConfigError, UsageError
from memory_tiers.manager import MemoryManager
from memory_tiers.observability import get_logger
from memory_tiers.store import SqlStore
from memory_tiers.working.guard import OwnershipGuardedSaver

logger = get_logger(__name__)

CONFIG_ENV = "MEMORY_TIERS_CONFIG"
DEFAULT_CONFIG = "memory_tiers.yaml"


def config_path() -> Path:
    """The configuration file: ``$MEMORY_TIERS_CONFIG``, else ``memory_tiers.yaml`` here."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def manager_from_env() -> MemoryManager:
    """A new (closed) manager built from `config_path()`.

    Raises:
        ConfigError: the file does not exist (the message says how to name another one), or
            its contents are not a valid configuration.
    """
    path = config_path()
    if not path.is_file():
        named = f"{CONFIG_ENV}={os.environ[CONFIG_ENV]!r}" if os.environ.get(CONFIG_ENV) else "the default"
        raise ConfigError(
            f"memory_tiers config file {str(path.resolve())!r} ({named}) does not exist: create it, "
            f"or set {CONFIG_ENV} to the path of your memory_tiers YAML file"
        )
    return MemoryManager.from_yaml(path)


class SharedManager:
    """One `MemoryManager` for a process, open while any lease on it is held.

    The manager's connections belong to the event loop that opened it, so leases are counted on
    that loop only. A lease taken on another loop while the manager is open (the server keeps
    one exit stack per thread) gets the same manager, uncounted, with a warning: its async calls
    belong on the owning loop. Once every lease is released, any loop may open it again.

    Args:
        build: makes the manager, on first use (`manager_from_env` for the server factories).
    """

    def __init__(self, build: Callable[[], MemoryManager]) -> None:
        self._build = build
        self._manager: MemoryManager | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it is (or was last) open on
        self._lock: asyncio.Lock | None = None  # serializes open/close on that loop
        self._leases = 0
        self._guard = threading.Lock()  # the server imports and resolves in worker threads

    @property
    def manager(self) -> MemoryManager:
        """The manager (built on first access, not opened)."""
        with self._guard:
            if self._manager is None:
                self._manager = self._build()
            return self._manager

    @property
    def leases(self) -> int:
        """How many counted leases are held; the manager is open while this is above zero."""
        return self._leases

    def reset(self) -> None:
        """Forget the manager, so the next use builds a new one (after a config change, in tests).

        Raises:
            UsageError: leases are still held.
        """
        with self._guard:
            if self._leases:
                raise UsageError(f"the shared MemoryManager still has {self._leases} open lease(s)")
            self._manager = self._loop = self._lock = None

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[MemoryManager]:
        """Hold the manager open (opening it if this is the first lease) until the block ends."""
        manager = self.manager
        lock = self._owning_lock(asyncio.get_running_loop())
        if lock is None:
            logger.warning(
                "the shared MemoryManager is open on another event loop; this lease reuses it "
                "uncounted, and its connections serve that loop only"
            )
            yield manager
            return
        async with lock:
            if self._leases == 0:
                await manager.__aenter__()
            self._leases += 1
        try:
            yield manager
        finally:
            async with lock:
                self._leases -= 1
                if self._leases == 0:
                    await manager.__aexit__(None, None, None)

    def _owning_lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock | None:
        """The open/close lock if ``loop`` owns (or may now take) the manager, else None."""
        with self._guard:
            if self._loop is not loop:
                if self._leases:
                    return None
                self._loop, self._lock = loop, asyncio.Lock()
            assert self._lock is not None
            return self._lock


shared = SharedManager(manager_from_env)
"""The process's manager behind the factories below."""


def manager() -> MemoryManager:
    """The process's shared manager: build the graph with its nodes (``manager().nodes``)."""
    return shared.manager


@asynccontextmanager
async def checkpointer() -> AsyncIterator[OwnershipGuardedSaver]:
    """``langgraph.json`` ``checkpointer.path`` factory: the shared manager's checkpointer."""
    async with shared.lease() as opened:
        yield opened.checkpointer


@asynccontextmanager
async def store() -> AsyncIterator[SqlStore]:
    """``langgraph.json`` ``store.path`` factory: the shared manager's store, scoped per user."""
    async with shared.lease() as opened:
        yield opened.store
