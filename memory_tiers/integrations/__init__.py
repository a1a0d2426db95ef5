"""memory_tiers in the LangChain and LangGraph ecosystem.

- `memory_tiers.integrations.server`: ``langgraph.json`` checkpointer and store factories;
- `memory_tiers.integrations.middleware`: the ``create_agent`` middleware (`MemoryMiddleware`);
- `memory_tiers.integrations.tools`: the memory tools (`memory_tools`).

`memory_tools` needs only langchain-core and langgraph; `MemoryMiddleware` needs the
``langchain`` package (``pip install 'memory-tiers[llm]'``) and is imported on first use, so
``import memory_tiers.integrations`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memory_tiers.integrations.tools import memory_tools

if TYPE_CHECKING:
    from memory_tiers.integrations.middleware import MemoryMiddleware

__all__ = ["MemoryMiddleware", "memory_tools"]


def __getattr__(name: str) -> Any:
    if name == "MemoryMiddleware":
        from memory_tiers.integrations.middleware import MemoryMiddleware

        return MemoryMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
