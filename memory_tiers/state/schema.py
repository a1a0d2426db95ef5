"""The graph state the memory nodes read and write."""

from __future__ import annotations

from typing import Any

from langgraph.graph import MessagesState


class MemoryState(MessagesState, total=False):
    """Base state for graphs with memory: subclass it and add your own keys.

    Keys:
        messages: the conversation (LangGraph's ``add_messages`` reducer).
        session: the session context from the short-term tier; your nodes may change it and
            the save node writes it back.
        profile: the user's long-term profile document.
        facts: the long-term facts recalled for this turn, as dicts.
        memory_version: the state schema version (``state.version`` in the config).
        memory_cursor: id of the last message whose facts were saved, so a turn's messages
            are extracted once.
        memory_errors: what went wrong while learning from the last turn without failing it
            (a failing extractor, a fact the memory guard refused), as ``{"source", "error"}``.
        memory_degraded: the tiers this turn was served without (``"session"``,
            ``"long_term"``) because they were unreachable and their ``on_unavailable`` is
            ``degrade``; absent or empty on a healthy turn. A degraded session is not written back.
    """

    session: dict[str, Any]
    profile: dict[str, Any]
    facts: list[dict[str, Any]]
    memory_version: int
    memory_cursor: str | None
    memory_errors: list[dict[str, str]]
    memory_degraded: list[str]
