"""Offline ``create_agent`` agents for the middleware and memory tool tests."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage

from memory_tiers import MemoryManager
from memory_tiers.testing.fake_models import FakeStructuredChatModel

SYSTEM_PROMPT = "You are a concise assistant."


def fake_model(*responses: AIMessage) -> FakeStructuredChatModel:
    """A chat model answering with copies of ``responses`` in turn (cycling), recording what it
    was sent in ``model.calls``; copies, so each answer gets its own message id."""
    script = list(responses) or [AIMessage("ok")]
    model = FakeStructuredChatModel(
        respond=lambda _: script[(len(model.calls) - 1) % len(script)].model_copy()
    )
    return model


def tool_call(name: str, call_id: str = "call-1", **args: Any) -> AIMessage:
    """A model answer calling one tool."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


def memory_agent(manager: MemoryManager, model: FakeStructuredChatModel, **options: Any) -> Any:
    """``create_agent`` with the manager's middleware, on its checkpointer."""
    return create_agent(
        model,
        middleware=[manager.middleware(**options)],
        checkpointer=manager.checkpointer,
        system_prompt=SYSTEM_PROMPT,
    )
