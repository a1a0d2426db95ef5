"""Review of the thread lifecycle on every checkpointer: subgraphs, parallel delta writes, map-reduce
fan-outs, history paging, prune racing a turn, archive failures and the registry's filters."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from helpers import memory_graph, turn_config, unique
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send, interrupt
from test_retention import with_retention
from test_threads import _extend, log_graph, run_turns, states

from memory_tiers import MemoryManager
from memory_tiers.working.chain import load_thread, plan_prune, thread_config
from memory_tiers.working.pruning import prune_threads, read_chains


class SubState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def subgraph_parent(manager: MemoryManager, calls: list[str], *, persistent: bool = False) -> Any:
    """A parent graph whose only node is a compiled subgraph: ``a`` (counted), then ``b`` asks."""

    def a(state: SubState) -> dict[str, Any]:
        calls.append("a")
        return {"log": ["a"]}

    def b(state: SubState) -> dict[str, Any]:
        return {"log": [f"b:{interrupt('ok?')}"]}

    sub = StateGraph(SubState)
    sub.add_node("a", a)
    sub.add_node("b", b)
    sub.add_edge(START, "a")
    sub.add_edge("a", "b")
    parent = StateGraph(SubState)
    parent.add_node("sub", sub.compile(checkpointer=True if persistent else None))
    parent.add_edge(START, "sub")
    return parent.compile(checkpointer=manager.checkpointer)


@pytest.mark.parametrize("persistent", [False, True], ids=["subgraph", "subgraph-checkpointer"])
async def test_fork_of_a_thread_interrupted_inside_a_subgraph_resumes_where_it_stopped(
    checkpointer_config, persistent
):
    alice, thread = unique("alice"), unique("t")
    calls: list[str] = []
    async with MemoryManager(checkpointer_config) as manager:
        graph = subgraph_parent(manager, calls, persistent=persistent)
        await graph.ainvoke({"log": ["start"]}, turn_config(alice, thread))
        original = await graph.aget_state(turn_config(alice, thread), subgraphs=True)
        fork = await manager.threads.fork(alice, thread)
        forked = await graph.aget_state(turn_config(alice, fork.thread_id), subgraphs=True)
        calls.clear()
        resumed = await graph.ainvoke(Command(resume="yes"), turn_config(alice, fork.thread_id))
        reran = list(calls)
        source = await graph.ainvoke(Command(resume="yes"), turn_config(alice, thread))

    [task] = original.tasks
    [forked_task] = forked.tasks
    assert task.state is not None and task.state.values == {"log": ["start", "a"]}
    assert forked_task.state is not None and forked_task.state.values == task.state.values
    assert reran == []  # the subgraph's first node had run: the fork does not run it again
    assert resumed == source


def _batch_extend(acc: list[str], batch: list[list[str]]) -> list[str]:
    return _extend(acc, batch)


class FanState(TypedDict, total=False):
    log: Annotated[list[str], DeltaChannel(_batch_extend, snapshot_frequency=4)]
    items: list[str]


def parallel_graph(manager: MemoryManager) -> Any:
    """Three parallel branches append to one delta channel in the same super-step."""

    def branch(name: str) -> Any:
        def node(state: FanState) -> dict[str, Any]:
            return {"log": [f"{name}{len(state.get('log', []))}"]}

        return node

    builder = StateGraph(FanState)
    for name in ("x", "y", "z"):
        builder.add_node(name, branch(name))
        builder.add_edge(START, name)
    return builder.compile(checkpointer=manager.checkpointer)


async def test_parallel_delta_writes_keep_their_order_through_fork_and_prune(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=2)) as manager:
        graph = parallel_graph(manager)
        for _ in range(5):
            await graph.ainvoke({"items": []}, turn_config(alice, thread))
        before = await states(graph, alice, thread)
        fork = await manager.threads.fork(alice, thread)
        forked = await states(graph, alice, fork.thread_id)
        await manager.retention.run()
        after = await states(graph, alice, thread)
        await graph.ainvoke({"items": []}, turn_config(alice, fork.thread_id))
        await graph.ainvoke({"items": []}, turn_config(alice, thread))
        fork_next = await graph.aget_state(turn_config(alice, fork.thread_id))
        source_next = await graph.aget_state(turn_config(alice, thread))

    assert forked == {cid: before[cid] for cid in forked} and max(forked) == max(before)
    assert after == {cid: before[cid] for cid in after} and len(after) < len(before)
    if checkpointer_config["working"]["backend"] == "redis":
        # AsyncRedisSaver (0.5.2) replays one step's parallel writes in no fixed order, fork or
        # not: the state it reads back can differ in order from the run's own (upstream).
        assert sorted(fork_next.values["log"]) == sorted(source_next.values["log"])
    else:
        assert fork_next.values["log"] == source_next.values["log"]
    assert len(source_next.values["log"]) == 18


class MapState(TypedDict, total=False):
    items: list[str]
    done: Annotated[list[str], operator.add]


def map_reduce_graph(manager: MemoryManager) -> Any:
    """A fan-out by `Send`; the worker for ``"b"`` asks a human, the others finish."""

    def fan(state: MapState) -> Command[Any]:
        return Command(goto=[Send("work", {"items": [item]}) for item in state["items"]])

    def work(state: MapState) -> dict[str, Any]:
        item = state["items"][0]
        answer = interrupt(f"approve {item}?") if item == "b" else "auto"
        return {"done": [f"{item}:{answer}"]}

    builder = StateGraph(MapState)
    builder.add_node("fan", fan, destinations=("work",))
    builder.add_node("work", work)
    builder.add_edge(START, "fan")
    return builder.compile(checkpointer=manager.checkpointer)


async def test_a_pending_send_fan_out_survives_fork_and_prune(checkpointer_config):
    alice, thread, other = unique("alice"), unique("t"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=1)) as manager:
        graph = map_reduce_graph(manager)
        for t in (thread, other):
            await graph.ainvoke({"items": ["a", "b", "c"]}, turn_config(alice, t))
        before = await states(graph, alice, thread)
        fork = await manager.threads.fork(alice, thread)
        forked = await states(graph, alice, fork.thread_id)
        await manager.retention.run()
        pruned = await states(graph, alice, other)
        results = [
            await graph.ainvoke(Command(resume="yes"), turn_config(alice, t))
            for t in (thread, fork.thread_id, other)
        ]

    head = max(before)
    assert before[head][2] == ("approve b?",)
    assert forked[head] == before[head]
    assert max(pruned) in pruned and pruned[max(pruned)][2] == ("approve b?",)
    assert all(sorted(r["done"]) == ["a:auto", "b:yes", "c:auto"] for r in results)


async def test_history_pages_with_before_on_every_backend(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 3)
        everything = [h.checkpoint_id for h in await manager.threads.history(alice, thread)]
        paged: list[str] = []
        before = None
        for _ in range(len(everything) + 1):  # bounded: each page must move on
            page = await manager.threads.history(alice, thread, limit=2, before=before)
            if not page:
                break
            paged += [h.checkpoint_id for h in page]
            before = page[-1].checkpoint_id

    assert len(everything) >= 6
    assert paged == everything


async def test_history_is_the_root_graphs_even_with_subgraph_checkpoints(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = subgraph_parent(manager, [])
        await graph.ainvoke({"log": ["start"]}, turn_config(alice, thread))
        history = [h.checkpoint_id for h in await manager.threads.history(alice, thread)]
        root = [
            snap.config["configurable"]["checkpoint_id"]
            async for snap in graph.aget_state_history(turn_config(alice, thread))
        ]
        by_ns = await load_thread(manager.checkpointer.inner, thread)

    assert sorted(history, reverse=True) == history
    assert set(history) == set(by_ns[""]) and len(by_ns) == 2
    assert len(root) >= len(history)


async def test_prune_racing_a_turn_keeps_every_checkpoint_the_plan_kept(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = log_graph(manager)
        await run_turns(graph, alice, thread, 8)
        saver = manager.checkpointer.inner
        plan = plan_prune((await read_chains(saver, [thread]))[thread], keep_last=2)
        await run_turns(graph, alice, thread, 2)  # a live turn between the plan and the delete
        await prune_threads(saver, {thread: plan})
        latest = await graph.aget_state(turn_config(alice, thread))
        kept = await states(graph, alice, thread)

    assert plan.checkpoints > 0
    assert latest.values["log"] == [f"turn-{i}" for i in range(1, 11)]
    assert all(values["log"] for values, _, _ in kept.values() if values.get("turns"))


class Exploding:
    def asummarize(self, messages: Any, context: Any) -> Any:
        raise RuntimeError("model unavailable")


async def test_a_failed_archive_leaves_the_thread_usable_and_prunable(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=1)) as manager:
        graph = memory_graph(manager)
        await graph.ainvoke({"messages": [("user", "I like tea.")]}, turn_config(alice, thread))
        good = manager.summarizer
        manager.summarizer = Exploding()
        from memory_tiers import MemoryTiersError

        with pytest.raises(MemoryTiersError):
            await manager.threads.archive(alice, thread)
        manager.summarizer = good
        after_failure = await manager.threads.get(alice, thread)
        history = await manager.threads.history(alice, thread)
        await graph.ainvoke({"messages": [("user", "still here")]}, turn_config(alice, thread))
        report = await manager.retention.run()
        active = [t.thread_id for t in (await manager.threads.list(alice, status="active")).threads]

    assert len(history) > 1  # nothing was deleted
    assert after_failure.status == "active"
    assert report.pruned_threads == 1 and active == [thread]


async def test_metadata_filters_match_the_same_threads_on_sqlite_and_postgresql(memory_config):
    alice = unique("alice")
    stored = {
        "int": {"n": 1},
        "float": {"n": 1.0},
        "half": {"n": 1.5},
        "text": {"n": "1"},
        "true": {"n": True},
        "false": {"n": False},
        "zero": {"n": 0},
        "text-true": {"n": "true"},
        "list": {"n": [1]},
        "object": {"n": {"m": 1}},
        "null": {"n": None},
        "absent": {},
    }
    async with MemoryManager(memory_config) as manager:
        ids = {
            name: (await manager.threads.create(alice, metadata=meta)).thread_id
            for name, meta in stored.items()
        }
        names = {thread_id: name for name, thread_id in ids.items()}

        async def matching(value: Any) -> set[str]:
            page = await manager.threads.list(alice, metadata={"n": value}, limit=100)
            return {names[t.thread_id] for t in page.threads}

        found = {repr(v): await matching(v) for v in (1, 1.0, 1.5, "1", True, False, 0, "true", "")}

    assert found == {
        "1": {"int", "float"},
        "1.0": {"int", "float"},
        "1.5": {"half"},
        "'1'": {"text"},
        "True": {"true"},
        "False": {"false"},
        "0": {"zero"},
        "'true'": {"text-true"},
        "''": set(),
    }


def _cursor(raw: str) -> str:
    import base64

    return base64.urlsafe_b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor('["2030-01-01T00:00:00", "zzz"]'),  # naive time
        _cursor('[1, "x"]'),
        _cursor('{"a": 1, "b": 2}'),
        _cursor("[]"),
        _cursor('["2030-01-01T00:00:00+00:00", "z", "extra"]'),
        _cursor('"ab"'),
        "%%%not-base64%%%",
        "é",
        _cursor("\\udcff"),
    ],
)
async def test_a_tampered_cursor_is_refused_or_pages_only_the_users_threads(memory_config, cursor):
    from memory_tiers import InvalidIdentifierError

    alice, bob = unique("alice"), unique("bob")
    async with MemoryManager(memory_config) as manager:
        mine = {(await manager.threads.create(alice)).thread_id for _ in range(2)}
        await manager.threads.create(bob)
        try:
            page = await manager.threads.list(alice, cursor=cursor)
        except InvalidIdentifierError:
            return
    assert {t.thread_id for t in page.threads} <= mine


def _add_message_batches(acc: list[Any], batch: list[Any]) -> list[Any]:
    from functools import reduce

    from langgraph.graph.message import add_messages

    return reduce(add_messages, batch, acc)  # type: ignore[arg-type]


class DeltaMessages(TypedDict, total=False):
    messages: Annotated[list[Any], DeltaChannel(_add_message_batches, snapshot_frequency=3)]


def delta_reply_graph(manager: MemoryManager, answer: str) -> Any:
    """A one-node graph answering ``answer`` to every turn, its messages kept as deltas."""
    from langchain_core.messages import AIMessage

    def reply(state: DeltaMessages) -> dict[str, Any]:
        return {"messages": [AIMessage(answer)]}

    builder = StateGraph(DeltaMessages)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    return builder.compile(checkpointer=manager.checkpointer)


async def test_archive_reads_messages_kept_in_a_delta_channel(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = delta_reply_graph(manager, "Sure.")
        for text in ("I plan a trip to Lisbon.", "Lisbon trains are good.", "Book Lisbon hotels.", "Thanks"):
            await graph.ainvoke({"messages": [("user", text)]}, turn_config(alice, thread))
        expected = (await graph.aget_state(turn_config(alice, thread))).values["messages"]
        state = await manager.threads.state(alice, thread)
        result = await manager.threads.archive(alice, thread)
        [archive] = [a for a in await manager.long_term.list_archives(alice) if a["thread_id"] == thread]

    assert [m.content for m in state["messages"]] == [m.content for m in expected] and len(expected) == 8
    assert archive["data"]["message_count"] == 8 and "Lisbon" in result.summary


async def test_retention_on_threads_without_checkpoints_and_short_threads(checkpointer_config):
    alice = unique("alice")
    config = with_retention(checkpointer_config, keep_last=50, max_idle="1d")
    async with MemoryManager(config) as manager:
        graph = log_graph(manager)
        empty_old, empty_new, short = unique("empty"), unique("empty"), unique("short")
        await manager.threads.create(alice, empty_old)
        await manager.threads.create(alice, empty_new)
        await run_turns(graph, alice, short, 2)
        before = await states(graph, alice, short)
        from test_retention import make_idle

        await make_idle(manager, empty_old, 3)
        report = await manager.retention.run()
        again = await manager.retention.run()
        after = await states(graph, alice, short)
        statuses = {t.thread_id: t.status for t in (await manager.threads.list(alice)).threads}
        exported = await manager.users.export(alice)

    assert report.failed == {} and again.failed == {}
    assert report.pruned_checkpoints == 0 and after == before
    assert statuses == {empty_old: "archived", empty_new: "active", short: "active"}
    assert {t["thread_id"] for t in exported["working"]["threads"]} == {empty_old, empty_new, short}


@pytest.mark.parametrize("checkpointer_config", ["redis"], indirect=True)
async def test_forget_leaves_no_write_on_redis_beyond_its_delete_batches(checkpointer_config):
    from langgraph.checkpoint.base import empty_checkpoint

    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        await manager.threads.create(alice, thread)
        saver = manager.checkpointer.inner
        config = await saver.aput(thread_config(thread), empty_checkpoint(), {}, {})
        # AsyncRedisSaver's adelete_thread removes 10,000 writes per call.
        await saver.aput_writes(config, [("log", i) for i in range(20_050)], "task-1")
        await manager.users.forget(alice)
        left = [key async for key in saver._redis.scan_iter(match=f"*{thread}*", count=1000)]

    assert left == []


class SharedState(TypedDict, total=False):
    const: str
    turns: Annotated[int, operator.add]
    log: Annotated[list[str], operator.add]


async def test_prune_and_fork_keep_blobs_shared_with_kept_checkpoints_and_branches_apart(checkpointer_config):
    alice, thread = unique("alice"), unique("t")

    def step(state: SharedState) -> dict[str, Any]:
        update: dict[str, Any] = {"turns": 1, "log": [f"s{state.get('turns', 0)}"]}
        if not state.get("const"):
            update["const"] = "set once " * 20  # a blob no later checkpoint rewrites
        return update

    builder = StateGraph(SharedState)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    async with MemoryManager(with_retention(checkpointer_config, keep_last=1)) as manager:
        graph = builder.compile(checkpointer=manager.checkpointer)
        for _ in range(4):
            await graph.ainvoke({"turns": 0}, turn_config(alice, thread))
        before = await states(graph, alice, thread)
        old = sorted(before)[len(before) // 2]
        fork = await manager.threads.fork(alice, thread, checkpoint_id=old)
        await manager.retention.run()
        kept = await states(graph, alice, thread)
        for t in (fork.thread_id, thread, fork.thread_id):
            await graph.ainvoke({"turns": 0}, turn_config(alice, t))
        source = (await graph.aget_state(turn_config(alice, thread))).values
        forked = (await graph.aget_state(turn_config(alice, fork.thread_id))).values

    assert kept == {cid: before[cid] for cid in kept} and len(kept) < len(before)
    assert source["const"] == forked["const"] == before[max(before)][0]["const"]
    assert source["turns"] == 5 and source["log"] == ["s0", "s1", "s2", "s3", "s4"]
    assert forked["log"][: len(before[old][0]["log"])] == before[old][0]["log"]
    assert forked["turns"] == before[old][0]["turns"] + 2


async def test_export_shows_messages_kept_in_a_delta_channel(checkpointer_config):
    alice, thread = unique("alice"), unique("t")
    async with MemoryManager(checkpointer_config) as manager:
        graph = delta_reply_graph(manager, "Noted.")
        for text in ("first", "second", "third", "fourth"):
            await graph.ainvoke({"messages": [("user", text)]}, turn_config(alice, thread))
        exported = await manager.users.export(alice)

    [exported_thread] = [t for t in exported["working"]["threads"] if t["thread_id"] == thread]
    latest = max(exported_thread["checkpoints"], key=lambda c: c["id"])
    said = [m["data"]["content"] for m in latest["channel_values"]["messages"] if m["type"] == "human"]
    assert said == ["first", "second", "third", "fourth"]  # rebuilt, not the stored sentinel
