"""Thread lifecycle on every checkpointer: registry listing, history, time travel, fork, diff,
archive and delete, all owner-checked."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from helpers import fail_once, memory_graph, turn_config, unique
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, interrupt

import memory_tiers.working.thread_data
from memory_tiers import InvalidIdentifierError, MemoryManager, NotFoundError, OwnershipError, UsageError


def _extend(acc: list[str], batch: list[list[str]]) -> list[str]:
    return acc + [item for update in batch for item in update]


class LogState(TypedDict, total=False):
    # Stored as deltas: most checkpoints hold only a sentinel, a snapshot every 3 updates.
    log: Annotated[list[str], DeltaChannel(_extend, snapshot_frequency=3)]
    turns: Annotated[int, operator.add]


def log_graph(manager: MemoryManager, *, ask: bool = False) -> Any:
    """A graph whose state lives in a delta channel; with ``ask`` it stops for a human answer."""

    def step(state: LogState) -> dict[str, Any]:
        entry = f"turn-{state.get('turns', 0) + 1}"
        if ask:
            entry += f":{interrupt('approve?')}"
        return {"log": [entry], "turns": 1}

    builder = StateGraph(LogState)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    return builder.compile(checkpointer=manager.checkpointer)


async def run_turns(graph: Any, user: str, thread: str, n: int) -> None:
    for _ in range(n):
        await graph.ainvoke({"turns": 0}, turn_config(user, thread))


async def states(graph: Any, user: str, thread: str) -> dict[str, tuple[Any, ...]]:
    """Every checkpoint's full state as LangGraph rebuilds it: values, next nodes, interrupts."""
    out = {}
    async for snap in graph.aget_state_history(turn_config(user, thread)):
        interrupts = tuple(i.value for task in snap.tasks for i in task.interrupts)
        out[snap.config["configurable"]["checkpoint_id"]] = (snap.values, snap.next, interrupts)
    return out


async def test_list_is_the_users_registry_newest_first_with_filters_and_pages(checkpointer_config):
    alice, bob = unique("alice"), unique("bob")
    async with MemoryManager(checkpointer_config) as manager:
        made = [
            await manager.threads.create(alice, namespace="support" if i % 2 else "sales", metadata={"n": i})
            for i in range(5)
        ]
        await manager.threads.create(bob, metadata={"n": 1})
        await manager.threads.create(alice, metadata={"flag": True, "tag": "vip"})

        page = await manager.threads.list(alice, limit=2)
        seen = [t.thread_id for t in page.threads]
        while page.next_cursor:
            page = await manager.threads.list(alice, limit=2, cursor=page.next_cursor)
            seen += [t.thread_id for t in page.threads]
        support = await manager.threads.list(alice, namespace="support")
        by_meta = await manager.threads.list(alice, metadata={"n": 3})
        by_bool = await manager.threads.list(alice, metadata={"flag": True})
        none_true = await manager.threads.list(alice, metadata={"n": True})
        with pytest.raises(InvalidIdentifierError):
            await manager.threads.list(alice, metadata={"n') OR 1=1 --": 1})
        with pytest.raises(InvalidIdentifierError):
            await manager.threads.list(alice, status="gone")

    assert len(seen) == len(set(seen)) == 6  # every thread of alice once, bob's never
    assert set(seen) >= {t.thread_id for t in made}
    assert {t.thread_id for t in support.threads} == {made[1].thread_id, made[3].thread_id}
    assert [t.thread_id for t in by_meta.threads] == [made[3].thread_id]
    assert len(by_bool.threads) == 1 and by_bool.threads[0].metadata["tag"] == "vip"
    assert none_true.threads == []  # a boolean never matches a number


async def test_another_users_thread_gives_nothing_away(checkpointer_config):
    alice, mallory, thread = unique("alice"), unique("mallory"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 2)
        for call in (
            manager.threads.get(mallory, thread),
            manager.threads.history(mallory, thread),
            manager.threads.state(mallory, thread),
            manager.threads.fork(mallory, thread),
            manager.threads.archive(mallory, thread),
            manager.threads.delete(mallory, thread),
            manager.threads.diff(mallory, thread, "x"),
        ):
            with pytest.raises(OwnershipError):
                await call
        assert len(await manager.threads.history(alice, thread)) > 0
        with pytest.raises(NotFoundError):
            await manager.threads.get(alice, unique("missing"))


async def test_history_time_travel_and_diff(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 3)
        history = await manager.threads.history(alice, thread)
        after_first = next(h for h in history if h.step == 1)  # the first turn's node ran
        diff = await manager.threads.diff(alice, thread, after_first.checkpoint_id)

        replayed = await manager.threads.replay(graph, alice, thread, after_first.checkpoint_id)
        new_id = await manager.threads.update_state(graph, alice, thread, {"log": ["edited"]}, as_node="step")
        latest = await manager.threads.state(alice, thread)

    assert [h.checkpoint_id for h in history] == sorted((h.checkpoint_id for h in history), reverse=True)
    assert diff.changed["turns"] == (1, 3)
    # Replaying from after turn 1 re-ran nothing (the step had run), so the state is turn 1's.
    assert replayed["log"] == ["turn-1"]
    assert latest["turns"] == 1 and new_id != after_first.checkpoint_id


async def test_fork_copies_the_chain_with_delta_channels_and_a_pending_interrupt(checkpointer_config):
    alice, bob, thread = unique("alice"), unique("bob"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager, ask=True)
        for answer in ("yes", "no", "maybe", "ok", "fine"):
            await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
            await graph.ainvoke(Command(resume=answer), turn_config(alice, thread))
        await graph.ainvoke({"turns": 0}, turn_config(alice, thread))  # waits for an answer
        original = await states(graph, alice, thread)
        head = max(original)

        fork = await manager.threads.fork(alice, thread, metadata={"why": "try another answer"})
        forked = await states(graph, alice, fork.thread_id)
        resumed = await graph.ainvoke(Command(resume="forked"), turn_config(alice, fork.thread_id))

        middle = sorted(original)[len(original) // 2]
        early = await manager.threads.fork(alice, thread, checkpoint_id=middle)
        early_state = await graph.aget_state(turn_config(alice, early.thread_id))
        with pytest.raises(UsageError):
            await manager.threads.fork(alice, thread, new_thread_id=early.thread_id)
        with pytest.raises(OwnershipError):
            await manager.threads.fork(bob, thread)
        after = await states(graph, alice, thread)

    assert fork.status == "active" and fork.metadata["forked_from"] == thread
    assert forked[head] == original[head]  # same values, next node and pending interrupt
    assert forked == {cid: s for cid, s in original.items() if cid in forked}
    assert resumed["log"][-1] == "turn-6:forked"
    assert after == original  # the source is untouched
    assert early_state.values == original[middle][0]


async def test_delete_drops_checkpoints_and_registry_row_idempotently(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 2)
        assert await manager.threads.delete(alice, thread) is True
        assert await manager.threads.delete(alice, thread) is False
        leftover = [
            t async for t in manager.checkpointer.inner.alist({"configurable": {"thread_id": thread}})
        ]
        with pytest.raises(NotFoundError):
            await manager.threads.get(alice, thread)
        # The id is free again and starts from nothing.
        await run_turns(graph, alice, thread, 1)
        restarted = await manager.threads.state(alice, thread)
    assert leftover == []
    assert restarted["turns"] == 1


class CappedSaver(BaseCheckpointSaver[str]):
    """A saver memory_tiers has no batch delete for, whose ``adelete_thread`` removes at most
    two checkpoints a call (as AsyncRedisSaver's removes 10,000)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = InMemorySaver()
        self.deletes = 0

    async def aget_tuple(self, config: Any) -> Any:
        return await self.inner.aget_tuple(config)

    async def alist(self, config: Any, **kwargs: Any) -> Any:
        async for tup in self.inner.alist(config, **kwargs):
            yield tup

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        return await self.inner.aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        await self.inner.aput_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.deletes += 1
        for namespace in self.inner.storage.get(thread_id, {}).values():
            for checkpoint_id in sorted(namespace)[:2]:
                del namespace[checkpoint_id]

    def get_next_version(self, current: Any, channel: Any) -> Any:
        return self.inner.get_next_version(current, channel)


async def test_delete_repeats_a_capped_delete_of_a_saver_without_batch_delete(tmp_path):
    alice, thread = unique("alice"), unique("t")
    saver = CappedSaver()
    async with MemoryManager({"data_dir": str(tmp_path)}, checkpointer=saver) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 3)
        before = len([t async for t in saver.alist({"configurable": {"thread_id": thread}})])
        assert await manager.threads.delete(alice, thread) is True
        leftover = [t async for t in saver.alist({"configurable": {"thread_id": thread}})]

    assert before > 4 and leftover == []
    assert saver.deletes == -(-before // 2) + 1  # the last delete found nothing before it


async def test_archive_summarizes_learns_then_drops_and_survives_a_crash(checkpointer_config, monkeypatch):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = memory_graph(manager)
        for text in ("Hi, I'm Alice. I live in Paris.", "I like jazz music.", "Tell me about Lisbon trains."):
            await graph.ainvoke({"messages": [("user", text)]}, turn_config(alice, thread))
        facts_before = {f.value for f in await manager.long_term.list_facts(alice)}
        # The checkpoints' delete crashes, once.
        fail_once(monkeypatch, memory_tiers.working.thread_data, "delete_threads", RuntimeError("crash"))
        with pytest.raises(RuntimeError):
            await manager.threads.archive(alice, thread)
        half = await manager.threads.get(alice, thread)
        result = await manager.threads.archive(alice, thread)
        again = await manager.threads.archive(alice, thread)
        archives = [a for a in await manager.long_term.list_archives(alice) if a["thread_id"] == thread]
        record = await manager.threads.get(alice, thread)
        leftover = [
            t async for t in manager.checkpointer.inner.alist({"configurable": {"thread_id": thread}})
        ]
        facts_after = {f.value: f.confidence for f in await manager.long_term.list_facts(alice)}

    assert half.status == "archiving"
    assert result.checkpoints_deleted and not again.checkpoints_deleted
    assert len(archives) == 1 and archives[0]["id"] == result.archive_id
    assert archives[0]["kind"] == "thread" and archives[0]["summary"]
    assert archives[0]["data"]["message_count"] == 6
    assert record.status == "archived" and record.archived_at is not None
    assert leftover == []
    assert {"Alice", "Paris"} <= facts_before == set(facts_after)  # nothing learned twice
