"""A custom fact extractor: its own options model, the conformance kit, and a graph turn.

Run it from anywhere (offline, data in a temporary directory):

    python examples/custom_extractor.py

The extractor is named in the configuration as ``"__main__:TicketExtractor"`` because this
script is the ``__main__`` module; in an application it would be ``"myapp.memory:TicketExtractor"``.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ConfigDict, Field

from memory_tiers import FactCandidate, MemoryManager, MemoryState
from memory_tiers.extractors import BaseExtractor, ExtractionContext
from memory_tiers.testing import check_extractor


class TicketOptions(BaseModel):
    """What YAML may set under ``options``; a typo is a ConfigError naming the key."""

    model_config = ConfigDict(extra="forbid")

    projects: list[str] = Field(default_factory=lambda: ["SUP"], min_length=1)
    confidence: float = Field(default=0.9, ge=0.0, le=1.0)


class TicketExtractor(BaseExtractor):
    """Remembers the support tickets a user mentions, such as SUP-1234."""

    options_model = TicketOptions

    def __init__(self, options: TicketOptions | None = None) -> None:
        self.settings = options or TicketOptions()
        super().__init__(self.settings)
        projects = "|".join(re.escape(project) for project in self.settings.projects)
        self.pattern = re.compile(rf"\b(?:{projects})-\d{{1,7}}\b")

    def extract(self, messages: Sequence[BaseMessage], context: ExtractionContext) -> list[FactCandidate]:
        facts: list[FactCandidate] = []
        seen: set[str] = set()
        for message in messages:
            if message.type != "human":  # the agent's own words are not facts about the user
                continue
            # .text is the message's text whether its content is a string or content blocks.
            for ticket in self.pattern.findall(message.text):
                if ticket not in seen:
                    seen.add(ticket)
                    facts.append(
                        FactCandidate(
                            attribute="open_ticket",
                            value=ticket,
                            cardinality="many",
                            confidence=self.settings.confidence,
                            message_id=message.id,
                        )
                    )
        return facts


def agent(state: MemoryState) -> dict:
    return {"messages": [AIMessage("I'll look into your tickets.")]}


async def main() -> None:
    # 1. The conformance kit: valid output, idempotence, hostile input (raises AssertionError).
    await check_extractor(
        TicketExtractor(TicketOptions(projects=["SUP", "OPS"])),
        ["My ticket SUP-1234 is still open.", "Any news on OPS-7?"],
    )
    print("TicketExtractor passes the conformance kit")

    # 2. In a manager, beside the built-in rules: the same as YAML
    #    long_term: {extractors: [rules, {use: "myapp.memory:TicketExtractor", options: {...}}]}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as data_dir:
        extractors = ["rules", {"use": "__main__:TicketExtractor", "options": {"projects": ["SUP", "OPS"]}}]
        manager = MemoryManager({"data_dir": data_dir, "long_term": {"extractors": extractors}})
        async with manager:
            graph = manager.nodes.around(agent).compile(checkpointer=manager.checkpointer)
            config = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
            message = "Hi, I'm Alice. My ticket SUP-1234 is still open, and OPS-77 too."
            out = await graph.ainvoke({"messages": [("user", message)]}, config)
            print(out["messages"][-1].content)
            facts = await manager.long_term.list_facts("alice")
            for fact in sorted(facts, key=lambda f: (f.attribute, f.value)):
                print(f"{fact.attribute}: {fact.value} (confidence {fact.confidence})")


if __name__ == "__main__":
    asyncio.run(main())
