"""State schema evolution: threads written by a v1 agent, served by its v3 successor.

v1 kept ``name`` ("Ada Lovelace") and ``tone``.
v2 renamed ``name`` to ``full_name``.
v3 split ``full_name`` into ``first_name`` and ``last_name`` and added ``greeting``, computed
from ``tone`` for old threads.

Run it: python examples/state_migrations.py (offline; embedded SQLite in a temp dir).
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from langchain_core.messages import AIMessage
from pydantic import BaseModel, ConfigDict

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.state.migrators import StateMigrator

# -- the v1 agent, as it was deployed months ago ----------------------------------------------


class StateV1(MemoryState, total=False):
    name: str
    tone: str


def agent_v1(state: StateV1) -> dict[str, Any]:
    return {"messages": [AIMessage("Noted.")], "name": "Ada Lovelace", "tone": "formal"}


# -- the v3 agent and the migrations that bring v1 threads to it ----------------------------


class StateV3(MemoryState, total=False):
    first_name: str
    last_name: str
    greeting: str


class ValidV3(BaseModel):
    """What every migrated state must satisfy (extra keys allowed)."""

    model_config = ConfigDict(extra="allow")
    first_name: str
    last_name: str
    greeting: str


migrations = StateMigrator(ValidV3)


@migrations.step(1)
def rename_name(state: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: ``name`` is now ``full_name``."""
    state["full_name"] = state.pop("name", "")
    return state


@migrations.step(2)
async def split_name_and_add_greeting(state: dict[str, Any]) -> dict[str, Any]:
    """v2 -> v3: split ``full_name``; ``greeting`` is computed from the old ``tone``."""
    first, _, last = state.pop("full_name").partition(" ")
    greeting = "Good day" if state.pop("tone", None) == "formal" else "Hi"
    return {**state, "first_name": first, "last_name": last, "greeting": greeting}


def agent_v3(state: StateV3) -> dict[str, Any]:
    return {"messages": [AIMessage(f"{state['greeting']}, {state['first_name']} {state['last_name']}.")]}


def run_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"user_id": "ada", "thread_id": thread}}


async def main() -> None:
    data_dir = tempfile.mkdtemp()
    threads = ["chat-1", "chat-2", "chat-3"]

    async with MemoryManager({"data_dir": data_dir}) as v1:
        graph = v1.nodes.around(agent_v1, StateV1).compile(checkpointer=v1.checkpointer)
        for thread in threads:
            await graph.ainvoke({"messages": [("user", "Hello")]}, run_config(thread))
    print(f"v1 wrote {len(threads)} threads")

    async with MemoryManager(
        {"data_dir": data_dir, "state": {"version": 3}}, state_migrator=migrations
    ) as v3:
        graph = v3.nodes.around(agent_v3, StateV3).compile(checkpointer=v3.checkpointer)

        # An old thread is brought forward when it is loaded, before the agent sees it.
        result = await graph.ainvoke({"messages": [("user", "Hello again")]}, run_config("chat-1"))
        print(f"chat-1 on load: {result['messages'][-1].content} (memory_version {result['memory_version']})")

        # The others in bulk (what `memory-tiers state migrate` does).
        preview = await v3.migrate_threads(dry_run=True)
        print(f"dry run: before {dict(preview.before)}, would be {dict(preview.after)}")
        report = await v3.migrate_threads()
        print(f"bulk: migrated {report.migrated}, now {dict(report.after)}, failed {report.failed}")

        state = (await graph.aget_state(run_config("chat-3"))).values
        print(f"chat-3 now: first_name={state['first_name']!r} greeting={state['greeting']!r}")


if __name__ == "__main__":
    asyncio.run(main())
