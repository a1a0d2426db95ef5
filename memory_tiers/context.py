"""Finding a turn's ids in ``config['configurable']`` or LangGraph's runtime context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig

from memory_tiers.config import IdKeysConfig
from memory_tiers.ids import validate_id


@dataclass(frozen=True)
class TurnIds:
    """The validated ids of one turn. ``session_id`` defaults to the thread id."""

    user_id: str
    thread_id: str | None
    session_id: str | None


def _runtime_context() -> Any:
    from langgraph.runtime import get_runtime

    try:
        return get_runtime().context
    except RuntimeError:  # called outside a graph run
        return None


def _lookup(source: Any, key: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def resolve_ids(config: RunnableConfig | None, keys: IdKeysConfig) -> TurnIds:
    """Read and validate the ids; the configurable dict wins over the runtime context.

    Raises:
        InvalidIdentifierError: the user id is missing, or any id is malformed.
    """
    configurable = (config or {}).get("configurable") or {}
    context = _runtime_context()

    def find(key: str) -> Any:
        value = configurable.get(key)
        return _lookup(context, key) if value is None else value

    user_id = validate_id("user_id", find(keys.user))
    raw_thread = find(keys.thread)
    thread_id = None if raw_thread is None else validate_id("thread_id", raw_thread)
    raw_session = find(keys.session)
    session_id = thread_id if raw_session is None else validate_id("session_id", raw_session)
    return TurnIds(user_id=user_id, thread_id=thread_id, session_id=session_id)
