"""Three-tier memory for a LangChain ``create_agent`` agent, in one line of middleware.

Run it: python examples/create_agent_memory.py (offline: a scripted stand-in for the chat model,
embedded SQLite and fakeredis, data in a temp dir). With a real model, pass it to
``create_agent`` instead of ``stand_in_model()``; nothing else changes.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage

from memory_tiers import MemoryManager, OwnershipError
from memory_tiers.testing.fake_models import FakeStructuredChatModel


def respond(messages: list[BaseMessage]) -> AIMessage:
    """What the stand-in model says: it saves a memory when asked to, and otherwise answers
    from the memory block the middleware put in its system message."""
    last = messages[-1]
    if last.type == "human" and "remember" in last.text.lower():
        args = {"attribute": "diet", "value": "vegetarian"}
        return AIMessage("", tool_calls=[{"name": "save_memory", "args": args, "id": f"call-{uuid.uuid4()}"}])
    if last.type == "tool":
        return AIMessage(f"Done. ({last.text})")
    system = messages[0].text if messages[0].type == "system" else ""
    remembered = [line for line in system.splitlines() if line.startswith("- ")]
    return AIMessage("\n".join(["I remember:", *remembered]) if remembered else "Nice to meet you!")


def stand_in_model() -> FakeStructuredChatModel:
    return FakeStructuredChatModel(respond=respond)


async def main() -> None:
    config = {"data_dir": tempfile.mkdtemp(prefix="memory-tiers-agent-")}
    async with MemoryManager(config) as manager:
        agent = create_agent(
            stand_in_model(),
            middleware=[manager.middleware(tools=True)],  # memory, plus search/save/forget tools
            checkpointer=manager.checkpointer,
            system_prompt="You are a helpful assistant.",
        )

        def ids(user: str, thread: str) -> dict[str, dict[str, str]]:
            return {"configurable": {"user_id": user, "thread_id": thread}}

        out = await agent.ainvoke(
            {"messages": [("user", "Hi, I'm Alice. I live in Paris.")]}, ids("alice", "t1")
        )
        print("t1:", out["messages"][-1].text)
        out = await agent.ainvoke(
            {"messages": [("user", "Please remember I'm vegetarian.")]}, ids("alice", "t1")
        )
        print("t1:", out["messages"][-1].text)

        # A new conversation: the model's request carries what the first one taught it.
        out = await agent.ainvoke({"messages": [("user", "What do you know about me?")]}, ids("alice", "t2"))
        print("t2:", out["messages"][-1].text)
        kinds = [m.type for m in (await agent.aget_state(ids("alice", "t2"))).values["messages"]]
        print("t2 checkpointed messages:", kinds, "(the memory system message is not among them)")

        try:
            await agent.ainvoke({"messages": [("user", "What does Alice like?")]}, ids("bob", "t1"))
        except OwnershipError as exc:
            print("bob on t1:", exc)


if __name__ == "__main__":
    asyncio.run(main())
