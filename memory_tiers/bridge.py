"""The sync bridge: synchronous callers run the async implementation on the manager's loop.

This mirrors how LangGraph's async checkpointers serve sync calls: the coroutine is submitted
to the loop that owns the connections and the calling thread waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from memory_tiers.errors import UsageError

T = TypeVar("T")


class LoopBridge:
    """Runs coroutines on the event loop the manager was opened on."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Remember the running loop (called when the manager opens)."""
        self.loop = asyncio.get_running_loop()

    def unbind(self) -> None:
        """Forget the loop (called when the manager closes)."""
        self.loop = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the manager's loop from another thread and return its result."""
        loop = self.loop
        if loop is None:
            coro.close()
            raise UsageError("the MemoryManager is not open: use `async with manager:` or `with manager:`")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise UsageError(
                "a synchronous call (graph.invoke) was made on the event loop that holds the "
                "memory connections; use `await graph.ainvoke(...)`, or open the manager with "
                "`with manager:` for synchronous code"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
