"""Retention on every checkpointer: pruning keeps every kept checkpoint's exact state (delta
channels, pending interrupts), idle threads are archived or deleted, runs are idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from helpers import memory_graph, turn_config, unique
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from sqlalchemy import update
from test_threads import log_graph, run_turns, states

from memory_tiers import MemoryManager
from memory_tiers import retention as retention_module
from memory_tiers.long_term.schema import threads
from memory_tiers.working import redis_saver
from memory_tiers.working.chain import checkpoint_info, load_thread, plan_prune
from memory_tiers.working.pruning import prune_threads, read_chains


def with_retention(config: dict[str, Any], **retention: Any) -> dict[str, Any]:
    working = dict(config.get("working") or {})
    working["retention"] = retention
    return {**config, "working": working}


async def make_idle(manager: MemoryManager, thread_id: str, days: int) -> None:
    """Pretend the thread was last active ``days`` ago."""
    past = datetime.now(UTC) - timedelta(days=days)
    async with manager.long_term.engine.begin() as conn:
        await conn.execute(
            update(threads).where(threads.c.thread_id == thread_id).values(last_active_at=past)
        )


async def test_keep_last_keeps_what_delta_channels_need_and_every_kept_state(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=2)) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 8)
        before = await states(graph, alice, thread)
        chain = (await load_thread(manager.checkpointer.inner, thread))[""]
        sentinel_only = [c for c, t in chain.items() if "log" not in t.checkpoint["channel_values"]]

        report = await manager.retention.run()
        after = await states(graph, alice, thread)
        again = await manager.retention.run()
        await run_turns(graph, alice, thread, 1)
        latest = await graph.aget_state(turn_config(alice, thread))

    assert sentinel_only, "the graph must store its log as deltas for this test to mean anything"
    assert 2 < len(after) < len(before)  # more than keep_last survive: the delta chain back to a snapshot
    assert after == {cid: before[cid] for cid in after}  # every kept checkpoint loads as before
    assert max(after) == max(before)
    assert report.pruned_threads == 1 and report.pruned_checkpoints == len(before) - len(after)
    assert again.pruned_threads == 0  # nothing new since: skipped
    assert latest.values["log"] == [f"turn-{i}" for i in range(1, 10)]


async def test_keep_last_keeps_a_pending_interrupt_resumable(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=1)) as manager:
        graph = log_graph(manager, ask=True)
        for answer in ("a", "b", "c"):
            await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
            await graph.ainvoke(Command(resume=answer), turn_config(alice, thread))
        await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
        before = await states(graph, alice, thread)
        await manager.retention.run()
        after = await states(graph, alice, thread)
        resumed = await graph.ainvoke(Command(resume="d"), turn_config(alice, thread))

    head = max(before)
    assert after[head] == before[head] and after[head][2] == ("approve?",)
    assert len(after) < len(before)
    assert resumed["log"] == ["turn-1:a", "turn-2:b", "turn-3:c", "turn-4:d"]


async def test_prune_plan_without_delta_channels_keeps_exactly_keep_last(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = memory_graph(manager)
        for i in range(4):
            await graph.ainvoke({"messages": [("user", f"message {i}")]}, turn_config(alice, thread))
        [by_ns] = (await read_chains(manager.checkpointer.inner, [thread])).values()
    plan = plan_prune(by_ns, keep_last=3)
    assert plan.checkpoints == len(by_ns[""]) - 3
    assert set(by_ns[""]) - plan.delete[""] == set(sorted(by_ns[""])[-3:])  # the newest three


async def test_the_chain_reader_agrees_with_the_full_checkpoints_and_batches_threads(checkpointer_config):
    alice, threads_ = unique("alice"), [unique("t") for _ in range(3)]
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager, ask=True)
        for n, thread in enumerate(threads_[:2]):
            for answer in "abcde"[: n + 3]:
                await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
                await graph.ainvoke(Command(resume=answer), turn_config(alice, thread))
        saver = manager.checkpointer.inner
        read = await read_chains(saver, threads_)
        full = {t: await load_thread(saver, t) for t in threads_}

    assert read[threads_[2]] == {}  # registered nowhere, no checkpoints: an empty entry
    for thread in threads_[:2]:
        expected = {
            ns: {c: checkpoint_info(t) for c, t in chain.items()} for ns, chain in full[thread].items()
        }
        assert read[thread].keys() == expected.keys()
        deltas = {ch for chain in expected.values() for info in chain.values() for ch in info.delta_channels}
        assert deltas, "the log must be a delta channel for this test to mean anything"
        for ns, chain in expected.items():
            assert read[thread][ns].keys() == chain.keys()
            for cid, info in chain.items():
                got = read[thread][ns][cid]
                assert (got.parent, got.format, got.delta_channels) == (
                    info.parent,
                    info.format,
                    info.delta_channels,
                )
                assert {k: str(v) for k, v in got.channel_versions.items()} == {
                    k: str(v) for k, v in info.channel_versions.items()
                }
                assert got.holds & deltas == info.holds & deltas  # all the planner asks about
            got, want = plan_prune(read[thread], 2), plan_prune(expected, 2)
            # PostgreSQL's reader knows which values are inline (no blob to delete): fewer candidates.
            assert got.delete == want.delete
            assert all(got.freed_blobs[ns] <= blobs for ns, blobs in want.freed_blobs.items())


class IntegerVersionSaver(InMemorySaver):
    """An in-memory saver with the base saver's integer channel versions (its blobs' keys)."""

    def get_next_version(self, current: Any, channel: None) -> Any:
        return int(current or 0) + 1


class FloatVersionSaver(InMemorySaver):
    """An in-memory saver whose channel versions are floats."""

    def get_next_version(self, current: Any, channel: None) -> Any:
        return float(current or 0) + 1.0


@pytest.mark.parametrize("saver_class", [InMemorySaver, IntegerVersionSaver, FloatVersionSaver])
async def test_pruning_an_in_memory_thread_frees_exactly_the_blobs_no_kept_checkpoint_uses(saver_class):
    alice, pruned, other = unique("alice"), unique("t"), unique("t")
    async with MemoryManager({"working": {"backend": "memory"}}, checkpointer=saver_class()) as manager:
        graph = log_graph(manager)
        for thread in (pruned, other):
            await run_turns(graph, alice, thread, 8)
        before = await states(graph, alice, pruned)
        saver = manager.checkpointer.inner
        others_before = {key: blob for key, blob in saver.blobs.items() if key[0] == other}
        plan = plan_prune((await read_chains(saver, [pruned]))[pruned], keep_last=2)
        removed = await prune_threads(saver, {pruned: plan})
        after = await states(graph, alice, pruned)
        used = {
            (pruned, ns, channel, version)
            for ns, stored in saver.storage[pruned].items()
            for checkpoint_b, _, _ in stored.values()
            for channel, version in saver.serde.loads_typed(checkpoint_b)["channel_versions"].items()
        }
        left = {key for key in saver.blobs if key[0] == pruned}
        others_after = {key: blob for key, blob in saver.blobs.items() if key[0] == other}

    assert removed == plan.checkpoints > 0
    assert 2 < len(after) < len(before)  # the delta chain back to a snapshot is kept too
    assert after == {cid: before[cid] for cid in after}  # every kept checkpoint loads as before
    assert left == used  # every blob a kept checkpoint uses, and no other
    assert others_after == others_before


async def test_one_batch_prunes_many_threads_and_a_failing_batch_falls_back_per_thread(
    checkpointer_config, monkeypatch
):
    alice, threads_ = unique("alice"), [unique("t") for _ in range(3)]
    config = with_retention(checkpointer_config, keep_last=1, batch_size=10)
    async with MemoryManager(config) as manager:
        graph = log_graph(manager)
        for thread in threads_:
            await run_turns(graph, alice, thread, 3)
        before = {t: await states(graph, alice, t) for t in threads_}
        registry = manager.long_term.registry
        real, calls = registry.mark_pruned, []

        async def refuse_batches(thread_ids: Any, at: Any) -> None:
            calls.append(list(thread_ids))
            if len(thread_ids) > 1:
                from memory_tiers import BackendError

                raise BackendError("long_term tier: down for a moment")
            await real(thread_ids, at)

        monkeypatch.setattr(registry, "mark_pruned", refuse_batches)
        report = await manager.retention.run()
        after = {t: await states(graph, alice, t) for t in threads_}
        again = await manager.retention.run()

    assert sorted(calls[0]) == sorted(threads_) and len(calls) == 1 + len(threads_)
    assert report.failed == {} and report.pruned_threads == len(threads_)
    for thread in threads_:
        kept = after[thread]
        assert kept == {cid: before[thread][cid] for cid in kept} and len(kept) < len(before[thread])
    assert again.pruned_threads == 0


async def test_an_error_in_one_batch_is_raised_once_the_batch_in_flight_is_done(
    checkpointer_config, monkeypatch
):
    alice, threads_ = unique("alice"), sorted(unique("t") for _ in range(3))
    config = with_retention(checkpointer_config, keep_last=1, batch_size=1)
    async with MemoryManager(config) as manager:
        graph = log_graph(manager)
        for thread in threads_:
            await run_turns(graph, alice, thread, 3)
        counts = {t: len(await states(graph, alice, t)) for t in threads_}
        real = retention_module.read_chains

        async def second_batch_breaks(saver: Any, thread_ids: Any) -> Any:
            if list(thread_ids) == [threads_[1]]:
                raise RuntimeError("the chains could not be read")
            return await real(saver, thread_ids)

        monkeypatch.setattr(retention_module, "read_chains", second_batch_breaks)
        with pytest.raises(RuntimeError, match="could not be read"):
            await manager.retention.run()
        monkeypatch.undo()
        left = {t: len(await states(graph, alice, t)) for t in threads_}
        again = await manager.retention.run()

    # The first batch (in flight beside the second) was pruned; none was started after the failure.
    assert left[threads_[0]] < counts[threads_[0]]
    assert [left[t] for t in threads_[1:]] == [counts[t] for t in threads_[1:]] and counts[threads_[1]] > 1
    assert again.pruned_threads == 2 and again.failed == {}


async def test_idle_threads_are_archived_or_deleted_per_namespace_and_dry_run_writes_nothing(
    checkpointer_config,
):
    alice = unique("alice")
    config = with_retention(
        checkpointer_config,
        max_idle="30d",
        namespaces={"scratch": {"max_idle": "1d", "on_idle": "delete"}},
    )
    async with MemoryManager(config) as manager:
        graph = memory_graph(manager)
        ids = {name: unique(name) for name in ("old", "recent", "scratch_old", "scratch_new")}
        await manager.threads.create(alice, ids["scratch_old"], namespace="scratch")
        await manager.threads.create(alice, ids["scratch_new"], namespace="scratch")
        for thread in ids.values():
            await graph.ainvoke({"messages": [("user", "I like tea.")]}, turn_config(alice, thread))
        await make_idle(manager, ids["old"], 40)
        await make_idle(manager, ids["recent"], 10)  # idle, but within the default 30d
        await make_idle(manager, ids["scratch_old"], 2)
        await make_idle(manager, ids["scratch_new"], 0)

        dry = await manager.retention.run(dry_run=True)
        untouched = {t.thread_id: t.status for t in (await manager.threads.list(alice)).threads}
        report = await manager.retention.run()
        after = {t.thread_id: t.status for t in (await manager.threads.list(alice)).threads}
        rerun = await manager.retention.run()
        archives = {a["thread_id"] for a in await manager.long_term.list_archives(alice)}

    assert (dry.archived, dry.deleted, dry.dry_run) == (1, 1, True)
    assert set(untouched.values()) == {"active"} and len(untouched) == 4
    assert (report.archived, report.deleted, report.failed) == (1, 1, {})
    assert after == {ids["old"]: "archived", ids["recent"]: "active", ids["scratch_new"]: "active"}
    assert (rerun.archived, rerun.deleted) == (0, 0)
    assert archives == {ids["old"]}


async def test_a_thread_active_again_since_the_scan_is_left_alone(checkpointer_config, monkeypatch):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, max_idle="1d")) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(alice, thread))
        await make_idle(manager, thread, 3)
        registry = manager.long_term.registry
        scan = registry.idle

        async def scan_then_turn(**kwargs: Any) -> Any:
            found = await scan(**kwargs)
            if found:  # the user comes back between the scan and the archive
                await graph.ainvoke({"messages": [("user", "back again")]}, turn_config(alice, thread))
            return found

        monkeypatch.setattr(registry, "idle", scan_then_turn)
        report = await manager.retention.run()
        state = await graph.aget_state(turn_config(alice, thread))
        record = await manager.threads.get(alice, thread)

    assert report.archived == 0
    assert record.status == "active" and len(state.values["messages"]) == 4


async def _write_keys(saver: Any, thread: str) -> set[str]:
    """The keys of a thread's pending writes in a Redis checkpointer."""
    keys = saver._redis.scan_iter(f"checkpoint_write:{thread}:*", count=1000)
    return {key.decode() if isinstance(key, bytes) else key async for key in keys}


@pytest.mark.parametrize("reply_size", [None, 4], ids=["one-search", "replies-too-small"])
async def test_redis_pruning_finds_the_pruned_checkpoints_writes_in_batched_searches(
    redis_stack_url, tmp_path, monkeypatch, reply_size
):
    if reply_size is not None:  # a first reply holds 4 documents: each search needs a second
        monkeypatch.setattr(redis_saver, "PAGE", reply_size)
    alice, thread = unique("alice"), unique("t")
    config = {"data_dir": str(tmp_path / "data"), "working": {"backend": "redis", "url": redis_stack_url}}
    async with MemoryManager(config) as manager:
        graph = log_graph(manager, ask=True)
        for answer in "abcd":
            await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
            await graph.ainvoke(Command(resume=answer), turn_config(alice, thread))
        await graph.ainvoke({"turns": 0}, turn_config(alice, thread))  # waits for an answer
        before = await states(graph, alice, thread)
        saver = manager.checkpointer.inner
        writes_before = await _write_keys(saver, thread)
        plan = plan_prune((await read_chains(saver, [thread]))[thread], keep_last=1)
        index, searches = saver.checkpoint_writes_index, []
        search = index.search

        async def counted(query: Any) -> Any:
            searches.append(query)
            return await search(query)

        monkeypatch.setattr(index, "search", counted)
        pruned = await prune_threads(saver, {thread: plan})
        monkeypatch.undo()
        after = await states(graph, alice, thread)
        writes_after = await _write_keys(saver, thread)
        resumed = await graph.ainvoke(Command(resume="e"), turn_config(alice, thread))

    def checkpoint_of(key: str) -> str:
        return key.split(":")[3]  # checkpoint_write:<thread>:<ns>:<checkpoint>:<task>:<idx>

    doomed = plan.delete[""]
    assert pruned == len(doomed) == len(before) - len(after) and 0 < len(doomed) < 100
    assert {checkpoint_of(key) for key in writes_before} & doomed, "pruned checkpoints must have writes"
    assert writes_after == {key for key in writes_before if checkpoint_of(key) not in doomed}
    assert after == {cid: before[cid] for cid in after}
    if reply_size is None:
        assert len(searches) == 1  # LangGraph's aprune searches once per checkpoint
    else:
        assert len(searches) == 2  # a first page, then all the rest in one reply
    assert resumed["log"][-1] == "turn-5:e"


@pytest.mark.parametrize("keep_last", [0, -1])
def test_retention_config_rejects_nonsense(keep_last):
    from memory_tiers import ConfigError

    with pytest.raises(ConfigError, match=r"working\.retention\.keep_last"):
        MemoryManager({"working": {"backend": "memory", "retention": {"keep_last": keep_last}}})
