"""Giving a benchmark user a history: a profile, facts, a session and a registered thread."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from benchmarks.workload import SESSION_CONTEXT, turn_messages
from memory_tiers import MemoryManager


async def seed_user(manager: MemoryManager, config: dict[str, Any], tag: str, turns: int) -> list[Any]:
    """Save ``turns`` turns through the save node (the first names the user and her city, each
    later one adds a fact) and return the thread's messages, oldest first."""
    history: list[Any] = [
        HumanMessage("Hi, I'm Alice. I live in Paris.", id=f"{tag}-intro"),
        AIMessage("Hello Alice.", id=f"{tag}-intro-reply"),
    ]
    await manager.nodes.save.ainvoke({"messages": history, "session": SESSION_CONTEXT}, config)
    for turn in range(1, turns):
        new = turn_messages(tag, turn)
        state = {"messages": new, "session": SESSION_CONTEXT}
        await manager.nodes.save.ainvoke(state, config)
        history.extend(new)
    return history
