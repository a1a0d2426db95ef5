"""The `llm` extractor in a graph turn, offline by default.

    python examples/llm_extractor.py

Offline, the chat model is `FakeStructuredChatModel`, answering with the structured output a
real model would give. To use a real model instead, name it as an ``init_chat_model`` string
(needs ``pip install 'memory-tiers[llm]'`` and the provider's package and API key):

    LLM_EXTRACTOR_MODEL=openai:gpt-4o-mini python examples/llm_extractor.py
"""

from __future__ import annotations

import asyncio
import os
import tempfile

from langchain_core.messages import AIMessage

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.testing import FakeStructuredChatModel

# What the model "answers": the extractor's schema is a list of facts, each with subject,
# attribute (snake_case), value, cardinality (one|many), confidence and the message number.
OFFLINE_ANSWER = {
    "facts": [
        {"attribute": "name", "value": "Alice", "cardinality": "one", "confidence": 0.95, "message": 1},
        {"attribute": "job_title", "value": "nurse", "cardinality": "one", "confidence": 0.9, "message": 1},
        {
            "subject": "user's dog",
            "attribute": "name",
            "value": "Biscuit",
            "cardinality": "one",
            "message": 2,
        },
        {"attribute": "likes", "value": "night shifts", "confidence": 0.6, "message": 2},
    ]
}


def offline_model() -> FakeStructuredChatModel:
    """A chat model factory, named in the configuration as "__main__:offline_model"."""
    return FakeStructuredChatModel(responses=[OFFLINE_ANSWER])


def llm_options() -> dict:
    model = os.environ.get("LLM_EXTRACTOR_MODEL")
    if model:
        return {"model": model, "model_options": {"temperature": 0}, "max_facts": 10}
    return {"chat_model": "__main__:offline_model", "max_facts": 10}


def agent(state: MemoryState) -> dict:
    return {"messages": [AIMessage("Nice to meet you both!")]}


async def main() -> None:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data_dir:
        extractors = [{"use": "llm", "options": llm_options()}]
        manager = MemoryManager({"data_dir": data_dir, "long_term": {"extractors": extractors}})
        async with manager:
            graph = manager.nodes.around(agent).compile(checkpointer=manager.checkpointer)
            config = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
            messages = [
                ("user", "Hi, I'm Alice, I work as a nurse."),
                ("user", "This is my dog Biscuit. Honestly, I like night shifts."),
            ]
            out = await graph.ainvoke({"messages": messages}, config)
            for problem in out.get("memory_errors") or []:
                print("problem:", problem)
            facts = await manager.long_term.list_facts("alice")
            for fact in sorted(facts, key=lambda f: (f.subject, f.attribute, f.value)):
                print(f"{fact.subject}.{fact.attribute}: {fact.value} (confidence {fact.confidence})")


if __name__ == "__main__":
    asyncio.run(main())
