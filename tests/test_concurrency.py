"""Several workers on one database: killed mid-save, contending on SQLite, sharing a thread,
and serving the same users at once. Worker processes use ``spawn`` and every join is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from faults import (
    config_for,
    fact_values,
    fault_graph,
    half_rows,
    join,
    observed_turns,
    read_acks,
    run_turn,
    spawn_context,
    thread_history,
    torn_turns,
    turn_facts,
    turn_pairs,
    turns_worker,
    user_name,
    wait_for_acks,
)
from langchain_core.messages import AIMessage
from sqlalchemy import text

from memory_tiers import MemoryManager, MemoryState, MemoryTiersError
from memory_tiers.errors import ThreadConflictError

KILL_ROUNDS = 4
TURNS_PER_ROUND = 300  # far more than a worker runs before it is killed


def _backend_config(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Working and long-term tiers on SQLite files, or on a fresh database of the shared
    PostgreSQL; sessions on the embedded fakeredis (each process its own)."""
    config: dict[str, Any] = {"data_dir": str(tmp_path / "data")}
    if backend == "postgres":
        url = request.getfixturevalue("fresh_postgres_url")
        config |= {"working": {"backend": "postgres", "url": url}, "long_term": {"url": url}}
    return config


async def _integrity(manager: MemoryManager, backend: str, data_dir: Path) -> list[str]:
    """What is wrong with the database files or constraints ([] when intact)."""
    problems = []
    if backend == "sqlite":
        for name in ("working.db", "long_term.db"):
            with sqlite3.connect(data_dir / name) as conn:
                result = conn.execute("PRAGMA integrity_check").fetchall()
            if result != [("ok",)]:
                problems.append(f"{name}: {result}")
    else:
        async with manager.long_term.engine.connect() as conn:
            invalid = await conn.scalar(text("SELECT count(*) FROM pg_index WHERE NOT indisvalid"))
            unvalidated = await conn.scalar(text("SELECT count(*) FROM pg_constraint WHERE NOT convalidated"))
        if invalid or unvalidated:
            problems.append(f"{invalid} invalid indexes, {unvalidated} unvalidated constraints")
    return problems


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_a_worker_killed_mid_save_leaves_whole_turns_and_a_resumable_thread(backend, request, tmp_path):
    config = _backend_config(backend, request, tmp_path)
    user, thread = "alice", "t-killed"
    acks = tmp_path / "acks"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    context = spawn_context()
    tags: list[str] = []
    for round_ in range(KILL_ROUNDS):
        turns = [(user, thread, f"r{round_}-n{n}") for n in range(TURNS_PER_ROUND)]
        tags += [tag for _, _, tag in turns]
        before = len(read_acks(acks))
        worker = context.Process(target=turns_worker, args=(config, turns, str(acks)))
        worker.start()
        try:
            wait_for_acks(acks, before + 1, worker)
            time.sleep(rng.uniform(0.0, 0.3))
            worker.kill()
        finally:
            join(worker)
    acked = read_acks(acks)
    assert not [line for line in acked if line.startswith("!error")], acked

    async with MemoryManager(config) as manager:
        problems = await _integrity(manager, backend, Path(config["data_dir"]))
        out = await run_turn(fault_graph(manager), user, thread, "resumed")
        torn = await half_rows(manager)
        groups = await observed_turns(manager)
        values = await fact_values(manager, user)

    history = turn_pairs(out["messages"])
    assert problems == []
    assert history[-1] == "resumed"
    assert [tag for tag in acked if history.count(tag) != 1] == []  # seed {seed}
    assert [tag for tag in acked if not turn_facts(tag) <= values] == []
    assert torn_turns(groups, [*tags, "resumed"]) == []
    assert torn == {"facts_without_observation": 0, "observations_without_fact": 0} | {
        "threads_without_checkpoint": 0
    }
    print(f"\n{backend}: seed {seed}, {len(acked)} turns acknowledged over {KILL_ROUNDS} kills")


SQLITE_WORKERS = 4
SQLITE_TURNS = 8


async def test_four_processes_share_one_sqlite_data_dir_without_database_is_locked(tmp_path):
    config = {"data_dir": str(tmp_path / "data")}
    context = spawn_context()
    start = context.Barrier(SQLITE_WORKERS)  # the turns begin once every worker is open
    workers = []
    for w in range(SQLITE_WORKERS):
        turns = [(f"u{w}", f"t{w}", f"w{w}-n{n}") for n in range(SQLITE_TURNS)]
        ack = tmp_path / f"acks-{w}"
        workers.append((context.Process(target=turns_worker, args=(config, turns, str(ack), start)), ack))
    try:
        for worker, _ in workers:
            worker.start()
    finally:
        for worker, _ in workers:
            join(worker)
    acked = {w: read_acks(ack) for w, (_, ack) in enumerate(workers)}
    assert [worker.exitcode for worker, _ in workers] == [0] * SQLITE_WORKERS
    assert [line for lines in acked.values() for line in lines if line.startswith("!error")] == []

    async with MemoryManager(config) as manager:
        histories = {w: turn_pairs(await thread_history(manager, f"u{w}", f"t{w}")) for w in acked}
        facts = {w: await fact_values(manager, f"u{w}") for w in acked}
    for w in acked:
        expected = [f"w{w}-n{n}" for n in range(SQLITE_TURNS)]
        assert histories[w] == expected
        assert facts[w] == set().union(*(turn_facts(tag) for tag in expected))


def _servers_config(url: str, redis_url: str, prefix: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "postgres", "url": url},
        "session": {"url": redis_url, "key_prefix": prefix},
        "long_term": {"url": url},
    }


SAME_THREAD_ROUNDS = 5


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_workers_on_one_thread_neither_lose_nor_fork_history(
    fresh_postgres_url, redis_url, redis_prefix, tmp_path
):
    config = _servers_config(fresh_postgres_url, redis_url, redis_prefix, tmp_path)
    user, thread = "alice", "t-shared"
    both_in_agent = asyncio.Barrier(2)

    async def overlapping_agent(state: MemoryState) -> dict[str, Any]:
        # Holds each run inside its turn until the other one is there too (or 1 s passed, as
        # it would with a lock making the second run wait), so the two turns really overlap.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both_in_agent.wait(), 1.0)
        return {"messages": [AIMessage(f"ack {state['messages'][-1].content}")]}

    acked: list[str] = []
    conflicts: list[BaseException] = []
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        graphs = [fault_graph(first, overlapping_agent), fault_graph(second, overlapping_agent)]

        async def turn(graph: Any, tag: str) -> None:
            try:
                await run_turn(graph, user, thread, tag)
            except MemoryTiersError as error:  # a detected conflict is an acceptable answer
                conflicts.append(error)
            else:
                acked.append(tag)

        for round_ in range(SAME_THREAD_ROUNDS):
            await asyncio.wait_for(
                asyncio.gather(turn(graphs[0], f"a{round_}"), turn(graphs[1], f"b{round_}")), 60
            )
        history = turn_pairs(await thread_history(first, user, thread))

    assert sorted(history) == sorted(acked)  # each acknowledged turn exactly once, nothing else
    assert len(acked) + len(conflicts) == 2 * SAME_THREAD_ROUNDS
    # The loser of each round is told, with the typed, retriable error naming the thread.
    assert [type(error) for error in conflicts] == [ThreadConflictError] * len(conflicts)
    assert {error.thread_id for error in conflicts} <= {thread}
    print(f"\nsame thread, no lock: {len(acked)} acknowledged, {len(conflicts)} refused as conflicts")


@pytest.mark.postgres
@pytest.mark.redis
async def test_two_workers_locking_the_thread_run_every_turn_in_a_serial_order(
    fresh_postgres_url, redis_url, redis_prefix, tmp_path
):
    config = _servers_config(fresh_postgres_url, redis_url, redis_prefix, tmp_path)
    user, thread = "alice", "t-locked"
    inside = 0
    overlapped = False

    async def exclusive_agent(state: MemoryState) -> dict[str, Any]:
        nonlocal inside, overlapped
        inside += 1
        overlapped |= inside > 1
        await asyncio.sleep(0.05)  # room for the other worker's run, were it not waiting
        inside -= 1
        return {"messages": [AIMessage(f"ack {state['messages'][-1].content}")]}

    acked: list[str] = []
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        workers = [
            (first, fault_graph(first, exclusive_agent)),
            (second, fault_graph(second, exclusive_agent)),
        ]

        async def turn(worker: int, tag: str) -> None:
            manager, graph = workers[worker]
            async with manager.threads.lock(user, thread):
                await run_turn(graph, user, thread, tag)
                acked.append(tag)

        for round_ in range(SAME_THREAD_ROUNDS):
            await asyncio.wait_for(asyncio.gather(turn(0, f"a{round_}"), turn(1, f"b{round_}")), 60)
        history = turn_pairs(await thread_history(first, user, thread))

    assert len(acked) == 2 * SAME_THREAD_ROUNDS  # nothing refused, nothing failed
    assert history == acked  # every turn once, in the order the lock let them run
    assert not overlapped


SHARED_WORKERS = 3
SHARED_USERS = ["u0", "u1", "u2"]
SHARED_TURNS = 3  # per thread; each worker has one thread per user


def _shared_turns(worker: int) -> list[tuple[str, str, str]]:
    """Worker ``worker``'s turns: one thread per user, the users' turns interleaved."""
    return [
        (user, f"w{worker}-{user}", f"w{worker}-{user}-k{k}")
        for k in range(SHARED_TURNS)
        for user in SHARED_USERS
    ]


def _session_of(thread_id: str) -> str:
    return str(config_for("-", thread_id)["configurable"]["session_id"])


async def _end_state(manager: MemoryManager) -> dict[str, Any]:
    """Facts, profiles, registry and per-thread histories, without ids and timestamps."""
    state: dict[str, Any] = {}
    for user in SHARED_USERS:
        facts = await manager.long_term.list_facts(user)
        threads = await manager.long_term.list_threads(user)
        state[user] = {
            "facts": sorted((f.attribute, f.value, f.superseded_by is None) for f in facts),
            "profile": (await manager.long_term.get_profile(user)).document,
            "registry": sorted((t.thread_id, t.status) for t in threads),
            "histories": {
                t.thread_id: turn_pairs(await thread_history(manager, user, t.thread_id)) for t in threads
            },
            "sessions": {
                t.thread_id: (await manager.sessions.get(user, _session_of(t.thread_id))).data
                for t in threads
            },
        }
    return state


@pytest.mark.postgres
@pytest.mark.redis
async def test_worker_processes_serving_the_same_users_end_where_a_serial_run_does(
    fresh_postgres_url, postgres_server_url, redis_url, redis_prefix, tmp_path
):
    from services import temporary_database

    parallel = _servers_config(fresh_postgres_url, redis_url, redis_prefix, tmp_path / "parallel")
    context = spawn_context()
    start = context.Barrier(SHARED_WORKERS)
    workers = []
    for w in range(SHARED_WORKERS):
        ack = tmp_path / f"acks-{w}"
        args = (parallel, _shared_turns(w), str(ack), start, True)
        workers.append((context.Process(target=turns_worker, args=args), ack))
    try:
        for worker, _ in workers:
            worker.start()
    finally:
        for worker, _ in workers:
            join(worker)
    errors = [line for _, ack in workers for line in read_acks(ack) if line.startswith("!error")]
    assert errors == []
    assert [worker.exitcode for worker, _ in workers] == [0] * SHARED_WORKERS
    async with MemoryManager(parallel) as manager:
        parallel_state = await _end_state(manager)

    with temporary_database(postgres_server_url) as serial_url:
        serial = _servers_config(serial_url, redis_url, f"{redis_prefix}-serial", tmp_path / "serial")
        async with MemoryManager(serial) as manager:
            graph = fault_graph(manager)
            for w in range(SHARED_WORKERS):
                for user, thread, tag in _shared_turns(w):
                    await run_turn(graph, user, thread, tag, named=True)
            serial_state = await _end_state(manager)

    assert parallel_state == serial_state
    assert all(state["profile"] == {"name": user_name(user)} for user, state in serial_state.items())
