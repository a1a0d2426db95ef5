"""Reading a thread's graph state straight from its checkpoints, without the graph.

Archive, export and diff need a checkpoint's values when no compiled graph is at hand. Plain
channels are in ``channel_values``; a delta channel (``DeltaChannel``) is rebuilt from its
history the way LangGraph rebuilds it, with the reducer the channel uses: the message list's
``add_messages`` for ``messages``. Other delta channels are reported as not stored.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AnyMessage
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.graph.message import add_messages

from memory_tiers.working.chain import DELTA_COUNTERS

MESSAGES = "messages"


async def channel_values(saver: BaseCheckpointSaver[Any], tup: CheckpointTuple) -> dict[str, Any]:
    """The checkpoint's channel values, with a delta ``messages`` channel rebuilt."""
    values = {
        k: v.value if isinstance(v, _DeltaSnapshot) else v
        for k, v in tup.checkpoint["channel_values"].items()
    }
    counters = (tup.metadata or {}).get(DELTA_COUNTERS) or {}
    if MESSAGES in counters and MESSAGES not in tup.checkpoint["channel_values"]:
        history = (await saver.aget_delta_channel_history(config=tup.config, channels=[MESSAGES]))[MESSAGES]
        seed = history.get("seed")
        messages: list[AnyMessage] = list(seed.value if isinstance(seed, _DeltaSnapshot) else seed or [])
        for _task, _channel, update in history["writes"]:
            messages = add_messages(messages, update)  # type: ignore[assignment]
        values[MESSAGES] = messages
    return values


async def thread_messages(saver: BaseCheckpointSaver[Any], tup: CheckpointTuple) -> list[AnyMessage]:
    """The messages of the state at ``tup`` (empty if the graph keeps none)."""
    messages = (await channel_values(saver, tup)).get(MESSAGES) or []
    return list(messages) if isinstance(messages, list) else []
