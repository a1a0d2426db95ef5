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
_REDIS_MAX_WRITES = 10_000  # writes of one checkpoint fetched per query (one task writes a few)


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
    # The plan's own checkpoints, not the saver's ``aprune(keep_last=N)``: that counts the
    # newest N when it runs, so a turn written since the plan would push out a checkpoint the
    # plan keeps (the start of a delta channel's chain). Keys as ``aprune`` builds them; channel
    # values are inline in the checkpoint documents.
    from langgraph.checkpoint.redis.util import from_storage_safe_str, to_storage_safe_id
    from redisvl.query import FilterQuery
    from redisvl.query.filter import Tag

    keys: list[str] = []
    for ns, ids in plan.delete.items():
        for cid in sorted(ids):
            keys.append(saver._make_redis_checkpoint_key(thread_id, ns, cid))
            writes = await saver.checkpoint_writes_index.search(
                FilterQuery(
                    filter_expression=(Tag("thread_id") == to_storage_safe_id(thread_id))
                    & (Tag("checkpoint_id") == to_storage_safe_id(cid)),
                    return_fields=["checkpoint_ns", "task_id", "idx"],
                    num_results=_REDIS_MAX_WRITES,
                )
            )
            keys += [
                saver._make_redis_checkpoint_writes_key(
                    thread_id, from_storage_safe_str(doc.checkpoint_ns), cid, doc.task_id, int(doc.idx)
                )
                for doc in writes.docs
            ]
            if saver._key_registry:
                keys.append(saver._key_registry.make_write_keys_zset_key(thread_id, ns, cid))
    if saver.cluster_mode:
        for key in keys:
            await saver._redis.delete(key)
    else:
        pipeline = saver._redis.pipeline()
        for key in keys:
            pipeline.delete(key)
        await pipeline.execute()
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
