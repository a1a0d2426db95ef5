"""What the benchmarks feed the memory layer: ids, turns' messages and a trivial agent."""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

SESSION_CONTEXT = {
    "summary": "The user is planning a trip and asked about trains, hotels and museums. " * 3,
    "topics": ["travel", "trains", "hotels", "museums"],
    "turns": 12,
}
"""A session document of a realistic size (about 0.3 kB of JSON)."""


def unique(prefix: str) -> str:
    """An id no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def turn_config(user_id: str, thread_id: str, session_id: str) -> dict[str, Any]:
    """The config a graph run (or a node called directly) takes its ids from."""
    return {"configurable": {"user_id": user_id, "thread_id": thread_id, "session_id": session_id}}


def fact_text(turn: int) -> str:
    """A user message the rules extractor turns into one new fact (``likes``)."""
    return f"I like topic{turn}."


def turn_messages(tag: str, turn: int) -> list[BaseMessage]:
    """One turn: a user message stating a fact, and the agent's reply, with stable ids."""
    return [
        HumanMessage(fact_text(turn), id=f"{tag}-h{turn}"),
        AIMessage("Noted.", id=f"{tag}-a{turn}"),
    ]


def question(tag: str, turn: int) -> list[BaseMessage]:
    """A user message that recall ranks facts for."""
    return [HumanMessage("Which topic do I like most?", id=f"{tag}-q{turn}")]


def agent(state: dict[str, Any]) -> dict[str, Any]:
    """The 1-node agent: appends one AIMessage and does nothing else."""
    return {"messages": [AIMessage("ok")]}
