"""Removing chosen checkpoints from each LangGraph checkpointer: the only backend-specific part
of retention. What to remove is decided once, in `memory_tiers.working.chain.plan_prune`;
each pruner here only deletes.

LangGraph's savers offer no "delete these checkpoints" call (their ``prune`` keeps the latest
one only, and refuses or breaks threads that use delta channels), so the pruners write to the
savers' own tables and dictionaries, the layout of the package versions this project pins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from memory_tiers.errors import UsageError
from memory_tiers.working.chain import PrunePlan

Pruner = Callable[[BaseCheckpointSaver[Any], str, PrunePlan], Awaitable[int]]


async def _prune_memory(saver: InMemorySaver, thread_id: str, plan: PrunePlan) -> int:
    for ns, ids in plan.delete.items():
        stored = saver.storage.get(thread_id, {}).get(ns, {})
        for cid in ids:
            stored.pop(cid, None)
            saver.writes.pop((thread_id, ns, cid), None)
        for channel, version in plan.freed_blobs.get(ns, ()):
            for key in [k for k in saver.blobs if k[:3] == (thread_id, ns, channel) and str(k[3]) == version]:
                del saver.blobs[key]
    return plan.checkpoints


async def _prune_sqlite(saver: Any, thread_id: str, plan: PrunePlan) -> int:
    rows = [(thread_id, ns, cid) for ns, ids in plan.delete.items() for cid in sorted(ids)]
    where = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
    async with saver.lock:
        # One transaction: a crash leaves the thread as it was or pruned, never half.
        await saver.conn.executemany(f"DELETE FROM writes WHERE {where}", rows)
        await saver.conn.executemany(f"DELETE FROM checkpoints WHERE {where}", rows)
        await saver.conn.commit()
    return plan.checkpoints


async def _prune_postgres(saver: Any, thread_id: str, plan: PrunePlan) -> int:
    from psycopg import AsyncConnection

    async def run(conn: Any) -> None:
        async with conn.transaction(), conn.cursor() as cur:
            for ns, ids in plan.delete.items():
                doomed = sorted(ids)
                for table in ("checkpoint_writes", "checkpoints"):
                    await cur.execute(
                        f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_ns = %s "
                        "AND checkpoint_id = ANY(%s)",
                        (thread_id, ns, doomed),
                    )
                freed = sorted(plan.freed_blobs.get(ns, ()))
                if freed:
                    await cur.execute(
                        "DELETE FROM checkpoint_blobs WHERE thread_id = %s AND checkpoint_ns = %s "
                        "AND (channel, version) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                        (thread_id, ns, [c for c, _ in freed], [v for _, v in freed]),
                    )

    if isinstance(saver.conn, AsyncConnection):
        async with saver.lock:
            await run(saver.conn)
    else:
        async with saver.conn.connection() as conn:
            await run(conn)
    return plan.checkpoints


async def _prune_redis(saver: Any, thread_id: str, plan: PrunePlan) -> int:
    # The Redis saver's own prune keeps the newest N of each namespace; N is the plan's window,
    # which covers every checkpoint the plan keeps (and maybe a few more on forked threads).
    await saver.aprune([thread_id], keep_last=plan.window, max_results=1_000_000)
    return plan.checkpoints


def pruner_for(saver: BaseCheckpointSaver[Any]) -> Pruner:
    """The pruner of ``saver``'s backend.

    Raises:
        UsageError: the checkpointer is not one memory_tiers can prune.
    """
    name = type(saver).__name__
    if isinstance(saver, InMemorySaver):
        return _prune_memory  # type: ignore[return-value]
    pruners: dict[str, Pruner] = {
        "AsyncSqliteSaver": _prune_sqlite,
        "AsyncPostgresSaver": _prune_postgres,
        "AsyncRedisSaver": _prune_redis,
    }
    for cls in type(saver).__mro__:
        if cls.__name__ in pruners:
            return pruners[cls.__name__]
    raise UsageError(
        f"working.retention.keep_last cannot prune a {name}: supported are InMemorySaver, "
        "AsyncSqliteSaver, AsyncPostgresSaver and AsyncRedisSaver"
    )
