"""``memory-tiers demo``: a scripted conversation through a real LangGraph graph.

Two users talk to a deterministic offline responder (no LLM, no API key). After every turn the
demo shows what each tier holds. Run it twice: long-term facts and the working-memory threads
persist, so the second run is greeted with what the first one taught the agent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from langchain_core.runnables import RunnableConfig
from rich.console import Console
from rich.markup import escape
from rich.rule import Rule

from memory_tiers.cli.common import build_config, config_options
from memory_tiers.cli.responder import Responder
from memory_tiers.cli.tables import session_is_embedded, setup_table, turn_table
from memory_tiers.config import MemoryTiersConfig
from memory_tiers.manager import MemoryManager
from memory_tiers.state import MemoryState

SCRIPT: dict[str, list[str]] = {
    "alice": [
        "Hi, I'm Alice.",
        "I live in Paris.",
        "I like green tea and I hate olives.",
        "What do you know about me?",
    ],
    "bob": [
        "My name is Bob.",
        "I live in Berlin.",
        "I love jazz.",
        "What do you know about me?",
    ],
}

HINT = "Run `memory-tiers demo` again: the agent will remember."


class DemoState(MemoryState):
    """The demo graph's state: the memory keys are all it needs."""


@dataclass(frozen=True)
class TurnRecord:
    """One turn of the demo and what each tier held right after it."""

    user: str
    turn: int
    message: str
    reply: str
    thread_id: str
    thread_messages: int
    checkpoints: int
    session_id: str
    session: dict[str, Any]
    session_ttl: int | None
    profile: dict[str, Any]
    profile_version: int
    facts: list[dict[str, Any]]


@dataclass
class DemoResult:
    """Every turn of a demo run, in order."""

    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def replies(self) -> dict[str, list[str]]:
        """The agent's replies per user, in turn order."""
        out: dict[str, list[str]] = {}
        for record in self.turns:
            out.setdefault(record.user, []).append(record.reply)
        return out

    def for_user(self, user: str) -> list[TurnRecord]:
        """The turns of one user."""
        return [record for record in self.turns if record.user == user]


def thread_id_of(user: str) -> str:
    return f"demo-{user}"


def session_id_of(user: str) -> str:
    return f"demo-{user}-session"


def build_graph(manager: MemoryManager, responder: Responder) -> Any:
    """load_memory -> agent -> save_memory, checkpointed by the manager's working tier."""
    builder = manager.nodes.around(responder.respond, DemoState)
    return builder.compile(checkpointer=manager.checkpointer)


async def _snapshot(
    manager: MemoryManager, graph: Any, config: RunnableConfig, user: str, turn: int, text: str
) -> TurnRecord:
    configurable = config["configurable"]
    thread_id, session_id = configurable["thread_id"], configurable["session_id"]
    state = await graph.aget_state(config)
    messages = list(state.values.get("messages") or [])
    checkpoints = [c async for c in manager.checkpointer.alist(config)]
    record = await manager.session_store.load(user, session_id)
    profile = await manager.long_term.get_profile(user)
    facts = await manager.long_term.list_facts(user)
    return TurnRecord(
        user=user,
        turn=turn,
        message=text,
        reply=str(messages[-1].content) if messages else "",
        thread_id=thread_id,
        thread_messages=len(messages),
        checkpoints=len(checkpoints),
        session_id=session_id,
        session=dict(record.data) if record else {},
        session_ttl=await manager.session_store.ttl(user, session_id),
        profile=dict(profile.document),
        profile_version=profile.version,
        facts=[fact.model_dump(mode="json") for fact in facts],
    )


async def run_demo(
    manager: MemoryManager,
    console: Console,
    script: dict[str, list[str]] | None = None,
) -> DemoResult:
    """Play ``script`` (default `SCRIPT`) through the graph on an open ``manager``."""
    keys = manager.config.ids
    responder = Responder(user_key=keys.user)
    graph = build_graph(manager, responder)
    result = DemoResult()
    for user, lines in (script or SCRIPT).items():
        config: RunnableConfig = {
            "configurable": {
                keys.thread: thread_id_of(user),
                keys.user: user,
                keys.session: session_id_of(user),
            }
        }
        if keys.thread != "thread_id":  # LangGraph's checkpointer always reads thread_id
            config["configurable"]["thread_id"] = thread_id_of(user)
        console.print(Rule(f"[bold]{escape(user)}[/]  thread {thread_id_of(user)}", align="left"))
        for turn, text in enumerate(lines, start=1):
            await graph.ainvoke({"messages": [("user", text)]}, config)
            record = await _snapshot(manager, graph, config, user, turn, text)
            result.turns.append(record)
            console.print(f"[bold green]{escape(user)}[/] > {escape(text)}", soft_wrap=True)
            console.print(f"[bold magenta]agent[/] > {escape(record.reply)}", soft_wrap=True)
            console.print(turn_table(record))
    return result


def print_intro(cfg: MemoryTiersConfig, console: Console) -> None:
    console.print(setup_table(cfg))
    if session_is_embedded(cfg):
        note = (
            "The embedded session tier is in-process: it starts empty in every run, while "
            "working memory and long-term facts persist on disk."
        )
    else:
        note = "Sessions live in Redis: they survive this process until their TTL runs out."
    console.print(f"[dim]{note}[/]")
    console.print()


async def demo_main(cfg: MemoryTiersConfig, console: Console) -> DemoResult:
    """Open a manager on ``cfg``, print its setup and run the demo."""
    async with MemoryManager.from_config(cfg) as manager:
        print_intro(cfg, console)
        result = await run_demo(manager, console)
    console.print()
    console.print(f"[bold]{escape(HINT)}[/]", soft_wrap=True)
    return result


@click.command("demo")
@config_options
def demo(config_file: Path | None, data_dir: Path | None) -> None:
    """Talk to an offline agent as alice and bob and watch each memory tier.

    With no options it runs on the embedded defaults (files under ./.memory_tiers/, sessions
    in-process): no server, no API key. Run it twice to see the agent remember.
    """
    cfg = build_config(config_file, data_dir)
    asyncio.run(demo_main(cfg, Console()))
