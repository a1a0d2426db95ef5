"""Small builders shared by the tests: graphs and unique ids."""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import AIMessage

from memory_tiers import MemoryManager, MemoryState


def unique(prefix: str) -> str:
    """An id no other test run uses, so tests on shared servers never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def echo_agent(state: MemoryState) -> dict[str, Any]:
    """Replies with what memory told it, and counts turns in the session."""
    profile = state.get("profile") or {}
    session = dict(state.get("session") or {})
    session["turns"] = session.get("turns", 0) + 1
    name = profile.get("name", "stranger")
    return {"messages": [AIMessage(f"Hello {name}")], "session": session}


def memory_graph(manager: MemoryManager, agent: Any = echo_agent) -> Any:
    """load_memory -> agent -> save_memory, on the manager's checkpointer."""
    return manager.nodes.around(agent).compile(checkpointer=manager.checkpointer)


def turn_config(user_id: str, thread_id: str, session_id: str | None = None) -> dict[str, Any]:
    configurable = {"user_id": user_id, "thread_id": thread_id}
    if session_id is not None:
        configurable["session_id"] = session_id
    return {"configurable": configurable}
