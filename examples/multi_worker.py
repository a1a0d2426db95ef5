"""A multi-worker deployment: N processes serve interleaved turns of the same users.

All state lives in the shared backends, one PostgreSQL database (checkpoints, long-term memory,
the thread registry) and one Redis (sessions), so any worker can serve any turn: consecutive
turns of a thread land on whichever worker is free. As in a real deployment, the schemas are
applied once before the workers start (``memory-tiers db upgrade``), and the workers run with
``setup: manual``.

Run it: ``python examples/multi_worker.py``. It reads the servers from
``MEMORY_TIERS_EXAMPLE_POSTGRES_URL`` and ``MEMORY_TIERS_EXAMPLE_REDIS_URL`` (use a database of
its own: it adds tables); without them it runs the same on the embedded defaults, where the
SQLite files are shared but each worker's in-process session store is its own. Every wait is
bounded; it exits non-zero unless every turn was recorded and every fact learned.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import sys
import tempfile
from collections import Counter
from typing import Any

from memory_tiers import MemoryManager, MemoryState
from memory_tiers.cli.responder import Responder

WORKERS = 3
USERS = {"alice": "Alice", "bob": "Bob", "chen": "Chen"}
TOPICS = ("jazz", "chess")  # one thread per topic and user, run concurrently
WAIT_SECONDS = 60.0  # for any one message between the processes
JOIN_SECONDS = 20.0


def turns(user: str, topic: str) -> list[str]:
    return [f"Hi, I'm {USERS[user]}.", f"I like {topic}.", "What do you know about me?"]


def threads() -> list[tuple[str, str, str]]:
    """(user, thread id, topic) of every conversation."""
    return [(user, f"{user}-{topic}", topic) for user in USERS for topic in TOPICS]


def backends(data_dir: str) -> tuple[dict[str, Any], str]:
    """The shared configuration, and what it runs on (embedded files go to ``data_dir``)."""
    postgres = os.environ.get("MEMORY_TIERS_EXAMPLE_POSTGRES_URL")
    redis = os.environ.get("MEMORY_TIERS_EXAMPLE_REDIS_URL")
    if postgres and redis:
        return {
            "working": {"backend": "postgres", "url": postgres},
            "session": {"url": redis},
            "long_term": {"url": postgres},
        }, "PostgreSQL + Redis"
    if postgres or redis:
        sys.exit("set both MEMORY_TIERS_EXAMPLE_POSTGRES_URL and MEMORY_TIERS_EXAMPLE_REDIS_URL, or neither")
    note = "embedded defaults (set MEMORY_TIERS_EXAMPLE_POSTGRES_URL and ..._REDIS_URL for the real thing)"
    return {"data_dir": data_dir}, note


def worker(config: dict[str, Any], tasks: Any, results: Any) -> None:
    """A worker process: its own manager and graph, serving turns until told to stop."""
    asyncio.run(serve(config, tasks, results))


async def serve(config: dict[str, Any], tasks: Any, results: Any) -> None:
    pid = os.getpid()
    async with MemoryManager({**config, "setup": "manual"}) as manager:
        graph = manager.nodes.around(Responder().respond, MemoryState).compile(
            checkpointer=manager.checkpointer
        )
        while (task := await asyncio.to_thread(tasks.get, True, WAIT_SECONDS)) is not None:
            user, thread, text = task
            run = {"configurable": {"user_id": user, "thread_id": thread}}
            try:
                out = await graph.ainvoke({"messages": [("user", text)]}, run)
                results.put(("done", pid, thread, out["messages"][-1].content))
            except Exception as exc:  # reported to the dispatcher, which fails the run
                results.put(("error", pid, thread, repr(exc)))


def dispatch(config: dict[str, Any]) -> tuple[dict[str, str], Counter[int], list[str]]:
    """Run every conversation on the workers; a thread's next turn is queued when its last is done."""
    context = multiprocessing.get_context("spawn")
    tasks, results = context.Queue(), context.Queue()
    pending = {thread: (user, turns(user, topic)) for user, thread, topic in threads()}
    procs = [context.Process(target=worker, args=(config, tasks, results)) for _ in range(WORKERS)]
    for proc in procs:
        proc.start()
    last: dict[str, str] = {}
    served: Counter[int] = Counter()
    errors: list[str] = []
    outstanding = 0  # turns queued and not answered yet; a failed thread queues no more
    try:
        for thread, (user, texts) in pending.items():
            tasks.put((user, thread, texts.pop(0)))
            outstanding += 1
        while outstanding:
            kind, pid, thread, text = results.get(timeout=WAIT_SECONDS)
            outstanding -= 1
            served[pid] += 1
            if kind == "error":
                errors.append(f"{thread}: {text}")
                continue
            last[thread] = text
            user, texts = pending[thread]
            if texts:
                tasks.put((user, thread, texts.pop(0)))
                outstanding += 1
    except queue.Empty:
        errors.append(f"no answer from the workers within {WAIT_SECONDS:.0f} s")
    finally:
        for _ in procs:
            tasks.put(None)
        for proc in procs:
            proc.join(JOIN_SECONDS)
            if proc.is_alive():
                proc.terminate()
                proc.join(JOIN_SECONDS)
                errors.append(f"worker {proc.pid} did not stop and was terminated")
            elif proc.exitcode:
                errors.append(f"worker {proc.pid} exited with {proc.exitcode}")
    return last, served, errors


async def check(config: dict[str, Any]) -> list[str]:
    """What the backends hold afterwards: every turn, every fact."""
    problems = []
    async with MemoryManager({**config, "setup": "manual"}) as manager:
        for user, thread, topic in threads():
            messages = (await manager.threads.state(user, thread)).get("messages", [])
            if len(messages) != 2 * len(turns(user, topic)):
                problems.append(f"{thread}: {len(messages)} messages recorded")
        for user in USERS:
            learned = {(f.attribute, f.value) for f in await manager.long_term.list_facts(user)}
            expected = {("likes", topic) for topic in TOPICS}
            if not expected <= learned:
                problems.append(f"{user}: facts learned {sorted(learned)}")
    return problems


async def upgrade(config: dict[str, Any]) -> None:
    """The deploy step, once, before any worker starts (what `memory-tiers db upgrade` does)."""
    async with MemoryManager({**config, "setup": "auto"}):
        pass


def main(data_dir: str) -> int:
    config, where = backends(data_dir)
    print(f"{WORKERS} workers on {where}")
    asyncio.run(upgrade(config))
    last, served, errors = dispatch(config)
    for thread in sorted(last):
        print(f"{thread}: {last[thread]}")
    print("turns per worker:", sorted(served.values(), reverse=True))
    errors += asyncio.run(check(config))
    for error in errors:
        print("ERROR", error)
    if not errors:
        print(f"every turn recorded, facts learned, no errors ({sum(served.values())} turns)")
    return 1 if errors else 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="mt-multi-worker-") as directory:
        code = main(directory)
    sys.exit(code)
