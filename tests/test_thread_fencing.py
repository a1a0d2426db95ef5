"""Two runs of one thread: fenced checkpoint writes and the per-thread run lock.

A run that another run of the same thread overtook must fail with `ThreadConflictError` and
write nothing; branching on purpose (time travel, update_state at an older checkpoint, a
subgraph replaying) must still work; heads that are behind the checkpoints are repaired;
deleting a thread drops its heads. Overlap is made deterministic with events: a run is held
inside its agent while the other one runs (every wait is bounded).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import unique
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from memory_tiers import MemoryManager, MemoryState, OwnershipError
from memory_tiers.errors import ThreadConflictError, ThreadLockTimeoutError
from memory_tiers.working.fencing import CRASH_GRACE_MS, LocalHeads, RedisHeads

BOUND = 30.0  # seconds any single wait in these tests may take


class Gate:
    """Holds a run whose message starts with "slow" inside its agent until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()


def reply(state: MemoryState) -> dict[str, Any]:
    return {"messages": [AIMessage(f"ack {state['messages'][-1].content}")]}


def single_node(manager: MemoryManager, gate: Gate | None = None) -> Any:
    async def agent(state: MemoryState) -> dict[str, Any]:
        if gate is not None and state["messages"][-1].content.startswith("slow"):
            gate.entered.set()
            await asyncio.wait_for(gate.release.wait(), BOUND)
        return reply(state)

    builder = StateGraph(MemoryState)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=manager.checkpointer)


def run_config(user: str, thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable = {"user_id": user, "thread_id": thread}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def say(graph: Any, user: str, thread: str, text: str, **kwargs: Any) -> list[str]:
    out = await graph.ainvoke({"messages": [("user", text)]}, run_config(user, thread), **kwargs)
    return [m.content for m in out["messages"]]


async def checkpoint_ids(manager: MemoryManager, user: str, thread: str) -> list[str]:
    return [c.checkpoint_id for c in await manager.threads.history(user, thread)]


async def messages(manager: MemoryManager, user: str, thread: str) -> list[str]:
    return [m.content for m in (await manager.threads.state(user, thread)).get("messages", [])]


async def checkpoint_with(
    manager: MemoryManager, user: str, thread: str, contents: list[str], source: str = "loop"
) -> Any:
    """The newest root checkpoint written by ``source`` whose messages are ``contents``."""
    for info in await manager.threads.history(user, thread):
        state = await manager.threads.state(user, thread, info.checkpoint_id)
        if info.source == source and [m.content for m in state.get("messages", [])] == contents:
            return info
    raise AssertionError(f"no {source} checkpoint with messages {contents}")


async def set_head(manager: MemoryManager, thread: str, ns: str, checkpoint_id: str, age_ms: int) -> None:
    """Overwrite a head directly, as a crashed or lagging worker would have left it."""
    heads = manager.checkpointer.fence.heads
    raw = f"{checkpoint_id} {int(time.time() * 1000) - age_ms}"
    if isinstance(heads, RedisHeads):
        await manager.session_store.client.hset(manager.session_store.keys.thread_heads(thread), ns, raw)
    else:
        assert isinstance(heads, LocalHeads)
        heads._heads[thread] = {**heads._heads.get(thread, {}), ns: raw}


async def overtaken(graph: Any, other: Any, gate: Gate, user: str, thread: str) -> asyncio.Task[Any]:
    """Start a run of "slow" on ``graph`` that loads the thread and writes nothing until it
    leaves its agent (durability "exit"), let ``other`` run a whole turn meanwhile, and return
    the held run, still held."""
    held = asyncio.create_task(say(graph, user, thread, "slow", durability="exit"))
    await asyncio.wait_for(gate.entered.wait(), BOUND)
    await say(other, user, thread, "fast")
    return held


# -- fencing, on every checkpointer -------------------------------------------------------------


async def test_a_run_another_run_overtook_is_refused_and_writes_nothing(checkpointer_config):
    user, thread = unique("u"), unique("t")
    gate = Gate()
    async with MemoryManager(checkpointer_config) as manager:
        graph = single_node(manager, gate)
        await say(graph, user, thread, "first")
        held = await overtaken(graph, graph, gate, user, thread)
        before = await checkpoint_ids(manager, user, thread)
        gate.release.set()
        with pytest.raises(ThreadConflictError, match=f"thread '{thread}': another run advanced") as error:
            await asyncio.wait_for(held, BOUND)
        assert error.value.thread_id == thread
        assert await checkpoint_ids(manager, user, thread) == before  # nothing written
        assert await messages(manager, user, thread) == ["first", "ack first", "fast", "ack fast"]
        # The thread is not blocked: the retried turn starts from the new latest checkpoint.
        assert (await say(graph, user, thread, "slow again"))[-2:] == ["slow again", "ack slow again"]


async def test_time_travel_and_update_state_at_an_older_checkpoint_still_branch(checkpointer_config):
    user, thread = unique("u"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = single_node(manager)
        for text in ("one", "two"):
            await say(graph, user, thread, text)
        after_one = await checkpoint_with(manager, user, thread, ["one", "ack one"], source="loop")
        before_two = await checkpoint_with(manager, user, thread, ["one", "ack one", "two"])

        # Replay from a past checkpoint (LangGraph time travel): the agent runs again.
        out = await graph.ainvoke(None, run_config(user, thread, before_two.checkpoint_id))
        assert [m.content for m in out["messages"]] == ["one", "ack one", "two", "ack two"]
        # manager.threads.replay, and a new input on top of a past checkpoint.
        await manager.threads.replay(graph, user, thread, before_two.checkpoint_id)
        out = await graph.ainvoke(
            {"messages": [("user", "three")]}, run_config(user, thread, after_one.checkpoint_id)
        )
        assert [m.content for m in out["messages"]] == ["one", "ack one", "three", "ack three"]
        # update_state at an older checkpoint, then a normal turn continues from the edit.
        edited = await manager.threads.update_state(
            graph, user, thread, {"messages": [AIMessage("edited")]}, checkpoint_id=after_one.checkpoint_id
        )
        assert (await checkpoint_ids(manager, user, thread))[0] == edited
        assert await say(graph, user, thread, "four") == ["one", "ack one", "edited", "four", "ack four"]
        # Raw aupdate_state on an older checkpoint too (the config LangGraph users pass).
        await graph.aupdate_state(
            {
                "configurable": run_config(user, thread, before_two.checkpoint_id)["configurable"]
                | {"checkpoint_ns": ""}
            },
            {"messages": [AIMessage("again")]},
        )
        assert (await say(graph, user, thread, "five"))[-3:] == ["again", "five", "ack five"]


async def test_a_head_behind_the_checkpoints_is_repaired_and_a_fresh_claim_is_a_conflict(checkpointer_config):
    user, thread = unique("u"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = single_node(manager)
        await say(graph, user, thread, "one")
        oldest = (await checkpoint_ids(manager, user, thread))[-1]

        # A claim whose write is still in flight (or just crashed): refused, nothing written.
        await set_head(manager, thread, "", "1f0-in-flight-claim", age_ms=0)
        before = await checkpoint_ids(manager, user, thread)
        with pytest.raises(ThreadConflictError):
            await say(graph, user, thread, "two")
        assert await checkpoint_ids(manager, user, thread) == before

        # The same claim older than the grace: abandoned by a crash, replaced.
        await set_head(manager, thread, "", "1f0-in-flight-claim", age_ms=CRASH_GRACE_MS + 1000)
        assert (await say(graph, user, thread, "three"))[-2:] == ["three", "ack three"]

        # A fresh head naming an older checkpoint that exists (a write that committed but
        # reported an error, or went unfenced while Redis was down): behind, replaced.
        await set_head(manager, thread, "", oldest, age_ms=0)
        assert (await say(graph, user, thread, "four"))[-2:] == ["four", "ack four"]
        latest = (await checkpoint_ids(manager, user, thread))[0]
        heads = await manager.checkpointer.fence.heads.read(thread)
        assert heads[""].split()[0] == latest


async def test_deleting_a_thread_drops_its_heads_so_the_id_starts_clean(checkpointer_config):
    user, thread = unique("u"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = single_node(manager)
        await say(graph, user, thread, "one")
        heads = manager.checkpointer.fence.heads
        assert set(await heads.read(thread)) == {""}
        assert await manager.threads.delete(user, thread)
        assert await heads.read(thread) == {}
        assert await say(graph, user, thread, "again") == ["again", "ack again"]


def _subgraph_parent(manager: MemoryManager, *, stateful: bool) -> Any:
    def agent(state: MemoryState) -> dict[str, Any]:
        text = state["messages"][-1].content
        if text.startswith("approve"):
            return {"messages": [AIMessage(f"approved {interrupt('approve?')}")]}
        return reply(state)

    inner = StateGraph(MemoryState)
    inner.add_node("agent", agent)
    inner.add_edge(START, "agent")
    inner.add_edge("agent", END)
    parent = StateGraph(MemoryState)
    parent.add_node("inner", inner.compile(checkpointer=True if stateful else None))
    parent.add_edge(START, "inner")
    parent.add_edge("inner", END)
    return parent.compile(checkpointer=manager.checkpointer)


@pytest.mark.parametrize("stateful", [False, True], ids=["subgraph", "checkpointer=True subgraph"])
async def test_subgraphs_are_fenced_per_namespace_across_turns_an_interrupt_and_a_replay(
    checkpointer_config, stateful
):
    user, thread = unique("u"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = _subgraph_parent(manager, stateful=stateful)
        await say(graph, user, thread, "one")
        out = await graph.ainvoke({"messages": [("user", "approve it")]}, run_config(user, thread))
        assert [i.value for i in out["__interrupt__"]] == ["approve?"]
        out = await graph.ainvoke(Command(resume="yes"), run_config(user, thread))
        assert [m.content for m in out["messages"]][-2:] == ["approve it", "approved yes"]
        await say(graph, user, thread, "three")

        # Each namespace has a head of its own: the subgraph's writes are fenced too.
        namespaces = set(await manager.checkpointer.fence.heads.read(thread))
        assert "" in namespaces and any(ns.startswith("inner") for ns in namespaces)

        # Replaying the root from before the interrupt re-enters the subgraph (a replaying
        # subgraph loads its starting point by listing before the replay point).
        before_approve = await checkpoint_with(manager, user, thread, ["one", "ack one", "approve it"])
        out = await graph.ainvoke(None, run_config(user, thread, before_approve.checkpoint_id))
        if stateful and checkpointer_config["working"]["backend"] == "redis":
            # Upstream, with or without memory_tiers: AsyncRedisSaver's alist ignores `before`
            # (see tests/test_conformance.py), so the subgraph resumes from its latest
            # checkpoint instead of replaying; the replay still writes without a conflict.
            assert "__interrupt__" not in out
            return
        assert [i.value for i in out["__interrupt__"]] == ["approve?"]
        out = await graph.ainvoke(Command(resume="again"), run_config(user, thread))
        assert [m.content for m in out["messages"]][-1] == "approved again"


# -- where fencing holds --------------------------------------------------------------------------


def _shared_files(tmp_path: Path, session: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two managers on the same SQLite files (as two processes on one machine would be)."""
    config: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    if session is not None:
        config["session"] = session
    return config


@pytest.mark.redis
async def test_fencing_spans_managers_that_share_a_redis(tmp_path, redis_url, redis_prefix):
    config = _shared_files(tmp_path, {"url": redis_url, "key_prefix": redis_prefix})
    user, thread = unique("u"), unique("t")
    gate = Gate()
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        graph, other = single_node(first, gate), single_node(second)
        await say(graph, user, thread, "first")
        held = await overtaken(graph, other, gate, user, thread)
        before = await checkpoint_ids(second, user, thread)
        gate.release.set()
        with pytest.raises(ThreadConflictError):
            await asyncio.wait_for(held, BOUND)
        assert await checkpoint_ids(second, user, thread) == before
        assert await second.session_store.client.exists(second.session_store.keys.thread_heads(thread))


async def test_embedded_fencing_is_per_process(tmp_path):
    """With fakeredis, each manager keeps its own heads: documented (docs/locking.md), and
    checked here so the documentation cannot drift from what happens."""
    config = _shared_files(tmp_path)
    user, thread = unique("u"), unique("t")
    gate = Gate()
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        graph, other = single_node(first, gate), single_node(second)
        await say(graph, user, thread, "first")
        held = await overtaken(graph, other, gate, user, thread)
        gate.release.set()
        await asyncio.wait_for(held, BOUND)  # not refused: the other manager's heads are its own
        assert isinstance(first.checkpointer.fence.heads, LocalHeads)


async def test_fencing_off_lets_an_overtaken_run_write(tmp_path):
    config = {"data_dir": str(tmp_path / "data"), "working": {"backend": "memory", "fencing": False}}
    user, thread = unique("u"), unique("t")
    gate = Gate()
    async with MemoryManager(config) as manager:
        assert manager.checkpointer.fence is None
        graph = single_node(manager, gate)
        await say(graph, user, thread, "first")
        held = await overtaken(graph, graph, gate, user, thread)
        gate.release.set()
        await asyncio.wait_for(held, BOUND)
        assert await messages(manager, user, thread) == ["first", "ack first", "slow", "ack slow"]  # forked


def test_synchronous_runs_are_fenced_too(tmp_path):
    config = {"data_dir": str(tmp_path / "data"), "working": {"backend": "memory"}}
    user, thread = unique("u"), unique("t")
    entered, release = threading.Event(), threading.Event()

    def agent(state: MemoryState) -> dict[str, Any]:
        if state["messages"][-1].content == "slow":
            entered.set()
            assert release.wait(BOUND)
        return reply(state)

    builder = StateGraph(MemoryState)
    builder.add_node("agent", agent)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    outcome: list[BaseException | None] = []
    with MemoryManager(config) as manager:
        graph = builder.compile(checkpointer=manager.checkpointer)
        graph.invoke({"messages": [("user", "first")]}, run_config(user, thread))

        def slow() -> None:
            try:
                graph.invoke({"messages": [("user", "slow")]}, run_config(user, thread), durability="exit")
            except BaseException as error:
                outcome.append(error)
            else:
                outcome.append(None)

        worker = threading.Thread(target=slow)
        worker.start()
        try:
            assert entered.wait(BOUND)
            graph.invoke({"messages": [("user", "fast")]}, run_config(user, thread))
        finally:
            release.set()
            worker.join(BOUND)
    assert len(outcome) == 1 and isinstance(outcome[0], ThreadConflictError)


# -- the run lock ---------------------------------------------------------------------------------


async def test_the_lock_runs_a_threads_turns_one_at_a_time(memory_config):
    user, thread = unique("u"), unique("t")
    events: list[str] = []

    async def agent(state: MemoryState) -> dict[str, Any]:
        text = state["messages"][-1].content
        events.append(f"enter {text}")
        await asyncio.sleep(0.05)  # let the other turn run, if it could
        events.append(f"leave {text}")
        return reply(state)

    async with MemoryManager(memory_config) as manager:
        builder = StateGraph(MemoryState)
        builder.add_node("agent", agent)
        builder.add_edge(START, "agent")
        builder.add_edge("agent", END)
        graph = builder.compile(checkpointer=manager.checkpointer)

        async def locked_turn(text: str) -> None:
            async with manager.threads.lock(user, thread):
                await say(graph, user, thread, text)

        await asyncio.wait_for(asyncio.gather(*(locked_turn(f"m{i}") for i in range(4))), BOUND)
        history = await messages(manager, user, thread)
    order = [e.split()[1] for e in events[::2]]
    assert events == [f"{kind} {text}" for text in order for kind in ("enter", "leave")]  # no overlap
    assert history == [m for text in order for m in (text, f"ack {text}")]


async def test_a_lock_held_beyond_the_timeout_raises_naming_the_thread(memory_config):
    user, thread = unique("u"), unique("t")
    async with MemoryManager(memory_config) as manager:
        async with manager.threads.lock(user, thread):
            with pytest.raises(ThreadLockTimeoutError, match=f"thread '{thread}' is locked") as error:
                async with manager.threads.lock(user, thread, timeout=0.2):
                    pytest.fail("acquired a lock another run holds")
        assert error.value.thread_id == thread
        assert isinstance(error.value, ThreadConflictError)
        async with manager.threads.lock(user, thread, timeout=0.2):  # released on exit
            pass


async def test_the_lock_is_owner_checked(memory_config):
    alice, bob, thread = unique("alice"), unique("bob"), unique("t")
    async with MemoryManager(memory_config) as manager:
        await manager.threads.create(alice, thread)
        with pytest.raises(OwnershipError):
            async with manager.threads.lock(bob, thread):
                pytest.fail("locked another user's thread")


@pytest.mark.redis
async def test_the_redis_lock_is_a_lease_renewed_while_held_and_freed_when_its_holder_died(
    tmp_path, redis_url, redis_prefix
):
    config = _shared_files(tmp_path, {"url": redis_url, "key_prefix": redis_prefix})
    config["working"] = {"lock": {"lease": "1s"}}
    user, thread = unique("u"), unique("t")
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        key = first.session_store.keys.thread_lock(user, thread)
        # Held across two leases: the holder renews it, so the other worker times out.
        async with first.threads.lock(user, thread):
            with pytest.raises(ThreadLockTimeoutError):
                async with second.threads.lock(user, thread, timeout=2.5):
                    pytest.fail("acquired a lock another worker holds")
        assert not await first.session_store.client.exists(key)  # released
        # A worker that died holding it: its lease runs out and the lock is free again.
        await first.session_store.client.set(key, "dead-worker-token", px=300)
        async with second.threads.lock(user, thread, timeout=BOUND):
            assert await second.session_store.client.get(key) != "dead-worker-token"


async def test_fencing_and_the_lock_work_on_a_redis_cluster(tmp_path, redis_cluster_url):
    prefix = unique("mt-fence")
    config = {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "memory"},
        "session": {"url": redis_cluster_url, "cluster": True, "key_prefix": prefix},
    }
    user, thread = unique("u"), unique("t")
    gate = Gate()
    async with MemoryManager(config) as manager:
        assert isinstance(manager.checkpointer.fence.heads, RedisHeads)
        graph = single_node(manager, gate)
        await say(graph, user, thread, "first")
        held = await overtaken(graph, graph, gate, user, thread)
        gate.release.set()
        with pytest.raises(ThreadConflictError):
            await asyncio.wait_for(held, BOUND)
        async with manager.threads.lock(user, thread):
            with pytest.raises(ThreadLockTimeoutError):
                async with manager.threads.lock(user, thread, timeout=0.2):
                    pytest.fail("acquired a lock another run holds")
        assert await manager.threads.delete(user, thread)
        assert await manager.checkpointer.fence.heads.read(thread) == {}


@pytest.mark.redis
@pytest.mark.parametrize("fencing", [True, False], ids=["fenced", "unfenced"])
async def test_fencing_costs_one_redis_round_trip_per_checkpoint_write(
    tmp_path, redis_url, redis_prefix, monkeypatch, fencing
):
    from redis.asyncio.client import Pipeline, Redis

    config = {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "memory", "fencing": fencing},
        "session": {"url": redis_url, "key_prefix": redis_prefix},
    }
    user, thread = unique("u"), unique("t")
    async with MemoryManager(config) as manager:
        graph = single_node(manager)
        await say(graph, user, thread, "warm-up")  # the script is loaded into Redis once
        counts = {"redis": 0, "writes": 0}
        execute_command, execute_pipeline = Redis.execute_command, Pipeline.execute
        inner_put = manager.checkpointer.inner.aput

        async def counted_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts["redis"] += 1
            return await execute_command(self, *args, **kwargs)

        async def counted_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts["redis"] += 1
            return await execute_pipeline(self, *args, **kwargs)

        async def counted_put(*args: Any, **kwargs: Any) -> Any:
            counts["writes"] += 1
            return await inner_put(*args, **kwargs)

        monkeypatch.setattr(Redis, "execute_command", counted_command)
        monkeypatch.setattr(Pipeline, "execute", counted_pipeline)
        monkeypatch.setattr(manager.checkpointer.inner, "aput", counted_put)
        for turn in range(3):
            await say(graph, user, thread, f"turn {turn}")
        monkeypatch.undo()
    assert counts["writes"] >= 3  # LangGraph writes input, start and agent checkpoints (1.2: 3 per turn)
    assert counts["redis"] == (counts["writes"] if fencing else 0)  # the graph has no memory nodes
