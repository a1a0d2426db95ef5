"""A chatbot with memory: it remembers who you are across conversations.

Run it: ``python examples/chatbot.py`` (a scripted conversation) or ``python examples/chatbot.py
--chat`` (type your own; an empty line ends it). Offline by default: the replies come from a
deterministic responder that answers from what memory loaded. With ``OPENAI_API_KEY`` or
``ANTHROPIC_API_KEY`` set (and the provider's LangChain package installed) a real model answers
instead, through ``init_chat_model``, with the recalled memory in its system prompt.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

from langchain_core.messages import SystemMessage

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.cli.responder import Responder
from memory_tiers.long_term.hygiene import render_facts

# The first provider whose key is set answers; MEMORY_TIERS_CHAT_MODEL overrides the model.
MODELS = {"OPENAI_API_KEY": "openai:gpt-4o-mini", "ANTHROPIC_API_KEY": "anthropic:claude-haiku-4-5"}
SCRIPT = [
    ("first-chat", "Hi, I'm Alice. I live in Rome."),
    ("first-chat", "I like jazz and I prefer tea."),
    ("second-chat", "Hello again! What do you know about me?"),
]


def real_model() -> Any | None:
    """A chat model if an API key is set and its package is installed, else None."""
    for key, model in MODELS.items():
        if os.environ.get(key):
            try:
                from langchain.chat_models import init_chat_model

                return init_chat_model(os.environ.get("MEMORY_TIERS_CHAT_MODEL", model))
            except ImportError as exc:
                print(f"({key} is set but {exc.name} is missing: answering offline)")
    return None


def model_agent(model: Any) -> Any:
    """The agent node for a real model: memory goes into the system prompt, as quoted data."""

    async def respond(state: MemoryState) -> dict[str, Any]:
        memory = render_facts(state["facts"], profile=state["profile"])
        system = SystemMessage(f"You are a friendly assistant who remembers the user.\n{memory}")
        return {"messages": [await model.ainvoke([system, *state["messages"]])]}

    return respond


def conversation() -> list[tuple[str, str]]:
    """The turns to play: the script, or what the user types with --chat."""
    if "--chat" not in sys.argv:
        return SCRIPT
    turns = []
    while text := input("you> ").strip():
        turns.append(("chat", text))
    return turns


async def main(data_dir: str) -> None:
    model = real_model()
    agent = model_agent(model) if model is not None else Responder().respond
    print(f"answering with {'a real model' if model is not None else 'the offline responder'}")
    async with MemoryManager({"data_dir": data_dir}) as manager:
        graph = manager.nodes.around(agent, MemoryState).compile(checkpointer=manager.checkpointer)
        for thread_id, text in conversation():
            run = {"configurable": {"user_id": "alice", "thread_id": thread_id}}
            result = await graph.ainvoke({"messages": [("user", text)]}, run)
            print(f"[{thread_id}] alice: {text}\n[{thread_id}] bot:   {result['messages'][-1].content}")
        facts = await manager.long_term.list_facts("alice")
        print("remembered:", ", ".join(f"{f.attribute}={f.value}" for f in facts))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(directory))
