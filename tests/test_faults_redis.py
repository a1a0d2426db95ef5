"""Fault tests: a private redis-server killed and restarted under a stream of turns, and the
long-term database cut off behind a proxy. The shared servers are never touched.

Every loop is bounded by a count and a deadline; every private server stops in a finally.
Figures in docs/reliability.md come from these tests (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import turn_config, unique
from langchain_core.messages import AIMessage
from services import TcpProxy, private_redis

from memory_tiers import BackendUnavailableError, MemoryManager, MemoryState, NotFoundError

SESSIONS = 8
TTL_SECONDS = 600
TIMEOUT_SECONDS = 1.0
RETRIES = 2
# A call may try (retries + 1) times, each bounded by the connect or the socket timeout.
CALL_BOUND = (RETRIES + 1) * 2 * TIMEOUT_SECONDS + 2.0
OUTAGE_SECONDS = 10.0
MAX_TURNS = 2000


def counting_agent(state: MemoryState) -> dict[str, Any]:
    """Counts turns in the session, with a 2 kB body and its digest so a torn read shows."""
    count = (state.get("session") or {}).get("count", 0) + 1
    body = f"{count}:" + "x" * 2000
    session = {"count": count, "body": body, "digest": hashlib.sha256(body.encode()).hexdigest()}
    return {"messages": [AIMessage(f"turn {count}")], "session": session}


def intact(data: dict[str, Any]) -> bool:
    body = data.get("body", "")
    return hashlib.sha256(body.encode()).hexdigest() == data.get("digest") and body.startswith(
        f"{data.get('count')}:"
    )


def config(redis_url: str, tmp_path: Path, on_unavailable: str = "degrade") -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "working": {"backend": "memory"},
        "session": {
            "url": redis_url,
            "ttl": f"{TTL_SECONDS}s",
            "connect_timeout": f"{TIMEOUT_SECONDS}s",
            "socket_timeout": f"{TIMEOUT_SECONDS}s",
            "retries": RETRIES,
            "on_unavailable": on_unavailable,
            "sweep_interval": None,
        },
    }


def graph_of(manager: MemoryManager) -> Any:
    return manager.nodes.around(counting_agent).compile(checkpointer=manager.checkpointer)


async def turn(graph: Any, ids: tuple[str, str, str]) -> dict[str, Any]:
    return await graph.ainvoke({"messages": [("user", "hello")]}, turn_config(*ids))


@pytest.mark.parametrize(
    ("sig", "aof"),
    [(signal.SIGTERM, True), (signal.SIGKILL, True), (signal.SIGTERM, False), (signal.SIGKILL, False)],
    ids=["sigterm-aof", "kill9-aof", "sigterm-rdb", "kill9-rdb"],
)
async def test_redis_restarted_mid_run_loses_nothing_acknowledged_and_tears_nothing(tmp_path, sig, aof):
    survives = aof or sig == signal.SIGTERM  # a clean shutdown writes the RDB snapshot
    with private_redis(aof=aof) as server:
        async with MemoryManager(config(server.url, tmp_path)) as manager:
            graph = graph_of(manager)
            users = [(unique("u"), unique("t"), unique("s")) for _ in range(SESSIONS)]
            acked: dict[str, int] = {}
            for _ in range(3):
                for ids in users:
                    out = await turn(graph, ids)
                    assert not out.get("memory_degraded")
                    acked[ids[2]] = out["session"]["count"]

            stop = asyncio.Event()
            outcomes = {"acked": 0, "degraded": 0}

            async def stream() -> None:
                deadline = time.monotonic() + 30
                for index in range(MAX_TURNS):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    ids = users[index % SESSIONS]
                    out = await turn(graph, ids)  # degrade mode: never raises
                    if out.get("memory_degraded"):
                        outcomes["degraded"] += 1
                    else:
                        outcomes["acked"] += 1
                        acked[ids[2]] = out["session"]["count"]

            running = asyncio.create_task(stream())
            await asyncio.sleep(0.3)
            server.stop(sig)  # while turns are in flight
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.wait_for(running, timeout=30)
            server.start()

            lost = 0
            for user, _, session_id in users:
                record = await manager.session_store.load(user, session_id)
                if record is None:
                    lost += 1
                    with pytest.raises(NotFoundError, match="does not exist"):
                        await manager.sessions.get(user, session_id)
                    continue
                assert intact(record.data), "a session was read half-written"
                # Acknowledged writes survive; an unacknowledged one in flight may have landed.
                assert acked[session_id] <= record.data["count"] <= acked[session_id] + 1
                remaining = await manager.session_store.ttl(user, session_id)
                assert remaining is not None and 0 < remaining <= TTL_SECONDS
            assert lost == (0 if survives else SESSIONS)

            # The manager recovered by itself: the next turn uses the session again.
            for ids in users:
                before = await manager.session_store.load(ids[0], ids[2])
                out = await turn(graph, ids)
                assert not out.get("memory_degraded")
                assert out["session"]["count"] == (before.data["count"] if before else 0) + 1
            counters = manager.metrics.snapshot()
        print(
            f"\n[{'aof' if aof else 'rdb'} {sig.name}] stream: {outcomes['acked']} acknowledged, "
            f"{outcomes['degraded']} degraded; {SESSIONS - lost}/{SESSIONS} sessions survived; "
            f"retries={counters['retries']} degradations={counters['degradations']}"
        )
    assert outcomes["degraded"] > 0 and counters["degradations"] >= outcomes["degraded"]
    assert counters["retries"] > 0


@pytest.mark.parametrize("on_unavailable", ["degrade", "fail"])
async def test_redis_down_for_ten_seconds_degrades_each_call_and_service_resumes(tmp_path, on_unavailable):
    with private_redis(aof=True) as server:
        async with MemoryManager(config(server.url, tmp_path, on_unavailable)) as manager:
            graph = graph_of(manager)
            users = [(unique("u"), unique("t"), unique("s")) for _ in range(3)]
            counts = {ids[2]: (await turn(graph, ids))["session"]["count"] for ids in users}

            server.stop(signal.SIGTERM)
            down_since, slowest, calls = time.monotonic(), 0.0, 0
            for index in range(MAX_TURNS):
                if time.monotonic() - down_since > OUTAGE_SECONDS:
                    break
                started = time.monotonic()
                try:
                    out = await turn(graph, users[index % 3])
                except BackendUnavailableError as exc:
                    assert on_unavailable == "fail" and exc.tier == "session"
                else:
                    assert on_unavailable == "degrade" and out["memory_degraded"] == ["session"]
                slowest = max(slowest, time.monotonic() - started)
                calls += 1
                await asyncio.sleep(0.02)
            server.start()

            # Bounded wait for the first turn served with the session again.
            resumed_after = None
            for attempt in range(1, 201):
                ids = users[attempt % 3]
                try:
                    out = await turn(graph, ids)
                except BackendUnavailableError:
                    out = {"memory_degraded": ["session"]}
                if not out.get("memory_degraded"):
                    resumed_after = attempt
                    # The outage wrote nothing over the session: it continues where it was.
                    assert out["session"]["count"] == counts[ids[2]] + 1
                    break
                await asyncio.sleep(0.05)
            counters = manager.metrics.snapshot()
    print(
        f"\n[{on_unavailable}] {calls} calls in a {OUTAGE_SECONDS:.0f} s outage, slowest "
        f"{slowest:.3f} s; resumed on turn {resumed_after} after restart; "
        f"retries={counters['retries']} degradations={counters['degradations']}"
    )
    assert calls > 0 and slowest < CALL_BOUND
    assert resumed_after is not None, "no turn used the session within 200 tries after the restart"
    if on_unavailable == "degrade":
        assert counters["degradations"] >= calls


@pytest.mark.parametrize("on_unavailable", ["degrade", "fail"])
async def test_long_term_down_degrades_recall_and_fails_the_save_with_nothing_written(
    fresh_postgres_url, tmp_path, on_unavailable
):
    parts = urlsplit(fresh_postgres_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    await proxy.restore()
    try:
        url = fresh_postgres_url.replace(f"@{parts.hostname}:{parts.port}/", f"@127.0.0.1:{proxy.port}/")
        assert url != fresh_postgres_url
        cfg = {
            "data_dir": str(tmp_path / "data"),
            "working": {"backend": "memory"},
            "long_term": {
                "url": url,
                "connect_timeout": "2s",
                "retries": 1,
                "on_unavailable": on_unavailable,
            },
        }
        user, thread = unique("alice"), unique("t")
        ids = turn_config(user, thread, unique("s"))
        async with MemoryManager(cfg) as manager:
            graph = manager.nodes.around(counting_agent).compile(checkpointer=manager.checkpointer)
            await graph.ainvoke({"messages": [("user", "I like tea.")]}, ids)
            before = await manager.long_term.list_facts(user)
            assert len(before) == 1

            await proxy.cut()
            state = {"messages": [("user", "What do I like?")]}
            if on_unavailable == "degrade":
                loaded = await manager.nodes.load.ainvoke(state, ids)
                assert loaded["memory_degraded"] == ["long_term"]
                assert loaded["facts"] == [] and loaded["profile"] == {}
            else:
                with pytest.raises(BackendUnavailableError):
                    await manager.nodes.load.ainvoke(state, ids)
            with pytest.raises(BackendUnavailableError) as failed:  # typed, retriable
                await graph.ainvoke({"messages": [("user", "I like coffee.")]}, ids)
            assert failed.value.tier == "long_term"
            counters = manager.metrics.snapshot()
            assert counters["retries"] >= 1

            await proxy.restore()
            assert await manager.long_term.list_facts(user) == before  # nothing half-written
            out = await graph.ainvoke({"messages": [("user", "I like coffee.")]}, ids)  # the retry
            assert not out.get("memory_degraded")
            values = sorted(fact.value for fact in await manager.long_term.list_facts(user))
            assert values == ["coffee", "tea"]
    finally:
        await proxy.cut()
    if on_unavailable == "degrade":
        assert counters["degradations"] == 2  # the load node's, and the failed turn's recall
