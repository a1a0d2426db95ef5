"""PostgreSQL restarted and crashed under a stream of turns (a private server of the test's own).

The working and long-term tiers are on the private server, sessions on the embedded fakeredis.
A caller that gets an error retries the turn, as a production caller would; afterwards every turn
whose ``ainvoke`` returned must have its checkpoint and its facts, nothing may be torn, and the
manager must serve turns again without being reopened.
"""

from __future__ import annotations

import asyncio

import pytest
from faults import fact_values, fault_graph, half_rows, run_turn, thread_history, turn_facts, turn_pairs
from services import private_postgres

from memory_tiers import MemoryManager
from memory_tiers.errors import BackendUnavailableError

pytestmark = pytest.mark.postgres

THREADS = 3
TURNS = 36  # round-robin over the threads
RESTARTS = {8: "fast", 20: "immediate"}  # after that many acknowledged turns, restart in that mode
ATTEMPTS = 40  # per turn; 0.1 s apart, so a turn keeps trying for a few seconds
TURN_TIMEOUT = 30.0


async def test_postgres_restart_and_crash_mid_run_lose_nothing_acknowledged(tmp_path):
    user = "alice"
    threads = [f"t{n}" for n in range(THREADS)]
    acked: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    restarted: list[str] = []
    with private_postgres() as server:
        url = server.create_database()
        config = {
            "data_dir": str(tmp_path / "data"),
            "working": {"backend": "postgres", "url": url, "connect_timeout": "2s"},
            "long_term": {"url": url, "connect_timeout": "2s", "pool_timeout": "2s"},
        }
        async with MemoryManager(config) as manager:
            graph = fault_graph(manager)

            async def stream() -> None:
                for n in range(TURNS):
                    thread, tag = threads[n % THREADS], f"n{n}"
                    for _ in range(ATTEMPTS):
                        try:
                            await asyncio.wait_for(run_turn(graph, user, thread, tag), TURN_TIMEOUT)
                        except Exception as exc:
                            errors.append(exc)
                            await asyncio.sleep(0.1)
                        else:
                            acked.append((thread, tag))
                            break
                    else:
                        raise AssertionError(f"turn {tag} failed {ATTEMPTS} times: {errors[-1]!r}")

            async def faults() -> None:
                for after, mode in RESTARTS.items():
                    while len(acked) < after and not task.done():
                        await asyncio.sleep(0.005)
                    await asyncio.to_thread(server.restart, mode)
                    restarted.append(mode)

            task = asyncio.create_task(stream())
            await asyncio.wait_for(asyncio.gather(task, faults()), 300)

            # Recovered by itself: the same manager serves new turns at the first attempt.
            for n in range(THREADS):
                await run_turn(graph, user, threads[n], f"after{n}")
                acked.append((threads[n], f"after{n}"))

            histories = {t: turn_pairs(await thread_history(manager, user, t)) for t in threads}
            values = await fact_values(manager, user)
            torn = await half_rows(manager)

    assert restarted == list(RESTARTS.values())
    lost_checkpoints = [(t, tag) for t, tag in acked if tag not in histories[t]]
    lost_facts = [(t, tag) for t, tag in acked if not turn_facts(tag) <= values]
    assert lost_checkpoints == []
    assert lost_facts == []
    assert torn == {"facts_without_observation": 0, "observations_without_fact": 0} | {
        "threads_without_checkpoint": 0
    }
    unexpected = [e for e in errors if not _retriable(e)]
    assert unexpected == []
    print(f"\n{len(acked)} turns acknowledged, {len(errors)} failed attempts: {_kinds(errors)}")


def _retriable(error: BaseException) -> bool:
    return isinstance(error, BackendUnavailableError)


def _kinds(errors: list[BaseException]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for error in errors:
        name = f"{type(error).__module__}.{type(error).__name__}"
        kinds[name] = kinds.get(name, 0) + 1
    return kinds
