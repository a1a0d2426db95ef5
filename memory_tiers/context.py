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


# LangGraph keeps the run's Runtime (and so its context) in the configurable dict under this key.
RUNTIME_KEY = "__pregel_runtime"


def read_id(config: RunnableConfig | None, key: str) -> Any:
    """The raw value of ``key`` from ``config['configurable']``, else from the runtime context."""
    configurable = (config or {}).get("configurable") or {}
    value = configurable.get(key)
    if value is not None:
        return value
    context = getattr(configurable.get(RUNTIME_KEY), "context", None)
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


def resolve_ids(config: RunnableConfig | None, keys: IdKeysConfig) -> TurnIds:
    """Read and validate the ids; the configurable dict wins over the runtime context.

    Raises:
        InvalidIdentifierError: the user id is missing, or any id is malformed.
    """
    user_id = validate_id("user_id", read_id(config, keys.user))
    raw_thread = read_id(config, keys.thread)
    thread_id = None if raw_thread is None else validate_id("thread_id", raw_thread)
    raw_session = read_id(config, keys.session)
    session_id = thread_id if raw_session is None else validate_id("session_id", raw_session)
    return TurnIds(user_id=user_id, thread_id=thread_id, session_id=session_id)
