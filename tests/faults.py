"""Shared pieces of the fault and concurrency tests: identifiable turns, worker processes, audits.

A turn is named by a ``tag`` (lowercase letters, digits and dashes). Its user message states two
facts that exist only in that turn, and the agent's reply quotes the message, so afterwards the
checkpoints and the long-term tables say exactly which turns were recorded, and whether whole.

Worker processes are started with the ``spawn`` method (a clean interpreter, as a real worker
is); their entry points live here so the child can import them by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from sqlalchemy import text

from memory_tiers import MemoryManager, MemoryState

JOIN_TIMEOUT = 60.0
"""Upper bound, in seconds, on waiting for a worker process."""


def turn_text(tag: str, name: str | None = None) -> str:
    """The user message of turn ``tag``: two facts of its own (and the user's name if given)."""
    return f"I like tea {tag}. I enjoy jazz {tag}." + (f" My name is {name}." if name else "")


def turn_facts(tag: str) -> frozenset[str]:
    """The values of the facts turn ``tag`` states."""
    return frozenset({f"tea {tag}", f"jazz {tag}"})


def reply_text(tag: str) -> str:
    return f"ack {turn_text(tag)}"


def ack_agent(state: MemoryState) -> dict[str, Any]:
    """Quotes the user's last message, so the reply names its turn."""
    return {"messages": [AIMessage(f"ack {state['messages'][-1].content}")]}


def fault_graph(manager: MemoryManager, agent: Any = ack_agent) -> Any:
    return manager.nodes.around(agent).compile(checkpointer=manager.checkpointer)


def config_for(user_id: str, thread_id: str) -> dict[str, Any]:
    return {"configurable": {"user_id": user_id, "thread_id": thread_id, "session_id": f"s-{thread_id}"}}


def user_name(user_id: str) -> str:
    """The name the turns of ``user_id`` state (users named ``u<n>``... become ``Un``...)."""
    return user_id.capitalize()


async def run_turn(
    graph: Any, user_id: str, thread_id: str, tag: str, *, named: bool = False
) -> dict[str, Any]:
    message = turn_text(tag, user_name(user_id) if named else None)
    return await graph.ainvoke({"messages": [("user", message)]}, config_for(user_id, thread_id))


# --------------------------------------------------------------------------- audits


def turn_pairs(messages: Sequence[Any]) -> list[str]:
    """The tags of the complete turns in a history, in order: a user message immediately
    followed by the reply quoting it."""
    tags = []
    for user, reply in itertools.pairwise(messages):
        if user.type == "human" and reply.type == "ai" and reply.content == f"ack {user.content}":
            tags.append(user.content.removeprefix("I like tea ").split(".")[0])
    return tags


async def thread_history(manager: MemoryManager, user_id: str, thread_id: str) -> list[Any]:
    """The messages of the thread's latest checkpoint ([] if it has none)."""
    graph = fault_graph(manager)
    snapshot = await graph.aget_state(config_for(user_id, thread_id))
    return list(snapshot.values.get("messages", []))


async def fact_values(manager: MemoryManager, user_id: str) -> set[str]:
    return {fact.value for fact in await manager.long_term.list_facts(user_id)}


async def half_rows(manager: MemoryManager) -> dict[str, int]:
    """Rows that a torn write would leave: facts without an observation, observations without a
    fact, and registered threads without a single checkpoint (counted, per kind)."""
    async with manager.long_term.engine.connect() as conn:
        orphan_facts = await conn.scalar(
            text(
                "SELECT count(*) FROM mt_facts f WHERE NOT EXISTS "
                "(SELECT 1 FROM mt_fact_observations o WHERE o.fact_id = f.id)"
            )
        )
        orphan_observations = await conn.scalar(
            text(
                "SELECT count(*) FROM mt_fact_observations o WHERE NOT EXISTS "
                "(SELECT 1 FROM mt_facts f WHERE f.id = o.fact_id)"
            )
        )
        thread_ids = (await conn.execute(text("SELECT thread_id FROM mt_threads"))).scalars().all()
    saver = manager.checkpointer.inner
    empty = 0
    for thread_id in thread_ids:
        if await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is None:
            empty += 1
    return {"facts_without_observation": orphan_facts, "observations_without_fact": orphan_observations} | {
        "threads_without_checkpoint": empty
    }


async def observed_turns(manager: MemoryManager) -> dict[str, frozenset[str]]:
    """Fact values grouped by the user message that stated them: the observation key
    ``turn:<thread>:<checkpoint>:<message>``. A message left unsaved by a crash is learned by
    the thread's next turn, under that turn's checkpoint but still under its own message id."""
    async with manager.long_term.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT o.observation_key, f.value FROM mt_fact_observations o "
                    "JOIN mt_facts f ON f.id = o.fact_id"
                )
            )
        ).all()
    groups: dict[str, set[str]] = defaultdict(set)
    for key, value in rows:
        groups[key].add(value)
    return {key: frozenset(values) for key, values in groups.items()}


def torn_turns(groups: dict[str, frozenset[str]], tags: Iterable[str]) -> list[tuple[str, frozenset[str]]]:
    """The observation groups that are not exactly the facts of one of ``tags``."""
    whole = {turn_facts(tag) for tag in tags}
    return [(key, values) for key, values in groups.items() if values not in whole]


# --------------------------------------------------------------------------- worker processes


def spawn_context() -> Any:
    return multiprocessing.get_context("spawn")


def join(process: Any, timeout: float = JOIN_TIMEOUT) -> None:
    """Wait for ``process`` (bounded); kill it if it overstays."""
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(10)
        raise AssertionError(f"worker {process.pid} did not finish within {timeout:g}s")


def read_acks(path: Path) -> list[str]:
    """The tags a worker acknowledged (one line per ``ainvoke`` that returned)."""
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line]


def wait_for_acks(path: Path, count: int, process: Any, timeout: float = JOIN_TIMEOUT) -> None:
    """Poll until ``path`` holds ``count`` acknowledgements (bounded; fails if the worker died)."""
    deadline = time.monotonic() + timeout
    while len(read_acks(path)) < count:
        if not process.is_alive():
            raise AssertionError(f"worker exited with {process.exitcode} before {count} turns")
        if time.monotonic() > deadline:
            raise AssertionError(f"worker acknowledged fewer than {count} turns in {timeout:g}s")
        time.sleep(0.02)


def turns_worker(
    config: dict[str, Any],
    turns: Sequence[tuple[str, str, str]],
    ack_path: str,
    start: Any = None,
    named: bool = False,
) -> None:
    """Worker process: run ``(user, thread, tag)`` turns in order on its own manager, appending
    each tag to ``ack_path`` once its ``ainvoke`` returned, and each error as ``!error ...``.

    ``start`` (a Barrier) lets several workers begin their turns at the same moment.
    """
    asyncio.run(_turns(config, turns, Path(ack_path), start, named))


async def _turns(
    config: dict[str, Any], turns: Sequence[tuple[str, str, str]], ack_path: Path, start: Any, named: bool
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        try:
            manager = await stack.enter_async_context(MemoryManager(config))
        except BaseException:
            if start is not None:
                start.abort()  # the other workers stop waiting for this one
            raise
        graph = fault_graph(manager)
        if start is not None:
            start.wait(JOIN_TIMEOUT)
        with ack_path.open("a") as acks:
            for user_id, thread_id, tag in turns:
                try:
                    await run_turn(graph, user_id, thread_id, tag, named=named)
                except Exception as exc:
                    acks.write(f"!error {tag} {type(exc).__module__}.{type(exc).__name__}: {exc}\n")
                else:
                    acks.write(f"{tag}\n")
                acks.flush()  # into the kernel: a SIGKILL after this line cannot take it back
